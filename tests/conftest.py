import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def assert_close_grads(grads, expected):
    """Two lists of gradients, parameter by parameter, equal to fp32 accuracy.

    Measured against fp64, the naive loop's own fp32 gradients are off by up to
    ~3e-5 (norm-wise, all parameters together) and ~4e-4 for a few tiny gradients
    that are sums with heavy cancellation (NCHW convolution backward); a wrong
    gradient would be off by O(1). Gradients that are zero in exact arithmetic
    (the bias of a convolution followed by a per-frame norm) are rounding noise on
    both sides and only count in the total."""
    flat = lambda tensors: torch.cat([t.flatten() for t in tensors])  # noqa: E731
    got, want = flat(grads), flat(expected)
    assert ((got - want).norm() / want.norm()).item() < 1e-4
    for i, (g, w) in enumerate(zip(grads, expected)):
        if w.norm() < 1e-6 * want.norm():
            continue
        error = ((g - w).norm() / w.norm()).item()
        assert error < 2e-3, f"parameter {i}: relative gradient error {error:.2e}"


# Dims that are neither the defaults nor TINY: read off the weights or not at all.
TEMPLATE_DIMS = ["--F_dim", "24", "--L_dim", "8", "--N_dim", "4", "--D_out_dim", "16"]


def write_template_checkpoint(path, model, lr=1e-3, tfr=1.0, last_epoch=0):
    """Save ``model`` as the course template's Trainer does: its keys only, the
    state_dict stored under 'optimizer' too, no flags."""
    torch.save({"state_dict": model.state_dict(), "optimizer": model.state_dict(), "lr": lr,
                "tfr": tfr, "last_epoch": last_epoch}, path)
    return path
