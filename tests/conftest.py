import collections
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The tests' tensors are tiny: a second thread only adds synchronisation, and on a
# loaded 2-core machine its spin-waits slow everything down. One thread here and
# in every process the tests start.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def user_cache_folder(tmp_path_factory):
    """The user's cache folder (where a read-only --DR's decoded cache goes) inside the
    session's temporary folder: no test writes into ~/.cache."""
    folder = tmp_path_factory.mktemp("xdg_cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


# Tiny model dims: every CLI test trains in seconds on 2 CPU cores.
TINY = ["--F_dim", "16", "--L_dim", "16", "--N_dim", "4", "--D_out_dim", "24"]


def synthetic(tmp_path_factory, name, **counts):
    from tools.synthetic_dance import generate_dataset

    out = tmp_path_factory.mktemp("data") / name
    return generate_dataset(out, train_frames=192, val_frames=40, frame_size=(32, 64), workers=2,
                            log=lambda *_: None, **counts)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small synthetic dance set with the real layout and Kaggle's test split
    (5 test sequences of 630 frames): for the tests of that format."""
    return synthetic(tmp_path_factory, "kaggle", test_sequences=5, test_frames=630)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """The same training and val videos with one short test sequence: for tests that
    train or break the data, where a 3150-frame test split only costs time."""
    return synthetic(tmp_path_factory, "short", test_sequences=1, test_frames=8)


def train_flags(data, save_root, *extra):
    """Trainer flags for a tiny CPU run (the memory cache starts no loader processes)."""
    return ["--DR", str(data), "--save_root", str(save_root), "--val_vi_len", "12",
            "--device", "cpu", *TINY, *extra]


# The shared run: teacher forcing drawn at random each step, so that it depends on
# every seed it uses, and a GIF of each validation.
TRAINED_FLAGS = ["--num_epoch", "2", "--tfr", "0.5", "--tfr_sde", "0", "--store_visualization"]
TrainedRun = collections.namedtuple("TrainedRun", "folder output")


@contextlib.contextmanager
def signal_handlers_kept():
    """Trainer.main installs SIGINT/SIGTERM handlers; give pytest its own back."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


@pytest.fixture
def restore_signals():
    with signal_handlers_kept():
        yield


def train_in_process(data, save_root, *extra):
    import Trainer

    with signal_handlers_kept():
        Trainer.main(Trainer.parse_args(train_flags(data, save_root, *extra)))
    return Path(save_root)


@pytest.fixture(scope="session")
def trained_run(small_dataset, tmp_path_factory):
    """Trainer.py run as a user types it, once per session: test_trainer checks what
    it leaves, other tests read its checkpoints (and write nothing into it)."""
    folder = tmp_path_factory.mktemp("trained") / "run"
    proc = run_cli("Trainer.py", *train_flags(small_dataset, folder, *TRAINED_FLAGS))
    return TrainedRun(folder, proc.stdout + proc.stderr)


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
