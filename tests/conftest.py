import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tiny model dims: every CLI test trains in seconds on 2 CPU cores.
TINY = ["--F_dim", "16", "--L_dim", "16", "--N_dim", "4", "--D_out_dim", "24"]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small synthetic dance set with the real layout (5 test sequences of 630)."""
    from tools.synthetic_dance import generate_dataset

    out = tmp_path_factory.mktemp("data") / "synthetic"
    return generate_dataset(out, train_frames=192, val_frames=40, test_sequences=5,
                            test_frames=630, size=(64, 32), workers=2, log=lambda *_: None)


def run_cli(*args, check=True, timeout=300):
    """Run one of the project's scripts like a user would; returns the process."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


# Dims that are neither the defaults nor TINY: read off the weights or not at all.
TEMPLATE_DIMS = ["--F_dim", "24", "--L_dim", "8", "--N_dim", "4", "--D_out_dim", "16"]


def write_template_checkpoint(path, model, lr=1e-3, tfr=1.0, last_epoch=0):
    """Save ``model`` as the course template's Trainer does: its keys only, the
    state_dict stored under 'optimizer' too, no flags."""
    import torch
    torch.save({"state_dict": model.state_dict(), "optimizer": model.state_dict(), "lr": lr,
                "tfr": tfr, "last_epoch": last_epoch}, path)
    return path
