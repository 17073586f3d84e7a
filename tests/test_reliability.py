"""Interrupted runs lose at most one epoch; bad input gets a clear error; checkpoints run no code."""
import csv
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

import Trainer
from conftest import ROOT, TINY, run_cli
from utils.checkpoint import atomic_save, load_checkpoint
from utils.errors import UserError
from utils.fileio import atomic_write
from utils.submission import write_submission


def train_flags(data, save_root, *extra):
    return ["--DR", data, "--save_root", save_root, "--val_vi_len", "12", "--num_workers", "0",
            "--device", "cpu", *TINY, *extra]


def epochs_in(run):
    path = run / "metrics.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_last_checkpoint_and_resume_appends(tiny_dataset, tmp_path, signum):
    run = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "Trainer.py",
                                 *map(str, train_flags(tiny_dataset, run, "--num_epoch", "40"))],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 240
    while not epochs_in(run) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)                              # now inside a later epoch
    proc.send_signal(signum)
    proc.wait(timeout=120)
    err = log.read_text()
    assert proc.returncode != 0
    assert "resume with: python Trainer.py" in err and "Traceback" not in err
    done = epochs_in(run)
    ckpt = load_checkpoint(run / "last.ckpt")
    assert ckpt["last_epoch"] == len(done) - 1   # the interrupted epoch is redone
    run_cli("Trainer.py", "--DR", tiny_dataset, "--save_root", run, "--ckpt_path", run / "last.ckpt",
            "--num_epoch", len(done) + 1)
    assert epochs_in(run) == list(range(len(done) + 1))   # appended, not overwritten


def test_kill_9_never_leaves_a_truncated_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic_save({"state_dict": {"w": torch.zeros(3)}, "version": -1}, target)
    writer = ("import sys, torch\nsys.path.insert(0, sys.argv[2])\n"
              "from utils.checkpoint import atomic_save\ni = 0\n"
              "while True:\n    atomic_save({'state_dict': {'w': torch.randn(400_000)}, 'version': i}, sys.argv[1])\n"
              "    i += 1\n")
    for delay in (0.8, 1.3, 1.7, 2.2):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(target), str(ROOT)])
        time.sleep(delay)
        proc.kill()
        proc.wait()
        ckpt = load_checkpoint(target)           # always a complete file
        assert ckpt["state_dict"]["w"].numel() in (3, 400_000)


def test_disk_full_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "best.ckpt"
    atomic_save({"state_dict": {"w": torch.ones(2)}}, target)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match="No space left on device.*previous file is intact"):
        atomic_save({"state_dict": {"w": torch.zeros(2)}}, target)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(target)["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]    # no temp file left


def test_written_files_respect_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "a.ckpt")
        write_submission(tmp_path / "submission.csv", [torch.rand(2, 3, 32, 64)])
    finally:
        os.umask(previous)
    for name in ("a.ckpt", "submission.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "submission.csv"
    target.write_text("old")

    def fails_halfway(f):
        f.write("id,0,1\n")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        atomic_write(target, fails_halfway, text=True)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [target.name]


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    with evil.open("wb") as f:
        pickle.dump({"state_dict": {}, "payload": RunsCode(marker)}, f, protocol=2)
    with pytest.raises(UserError, match="refusing to load"):
        load_checkpoint(evil)
    proc = run_cli("Tester.py", "--DR", tmp_path, "--save_root", tmp_path / "out",
                   "--ckpt_path", evil, check=False)
    assert proc.returncode != 0 and "refusing to load" in proc.stderr
    assert not marker.exists()


def test_same_seed_gives_identical_runs(tiny_dataset, tmp_path):
    for name in ("a", "b"):
        run_cli("Trainer.py", *train_flags(tiny_dataset, tmp_path / name, "--num_epoch", "1",
                                          "--tfr", "0.5", "--tfr_sde", "0"))
    rows = [list(csv.DictReader(open(tmp_path / n / "metrics.csv"))) for n in ("a", "b")]
    for row in rows:
        row[0].pop("epoch_seconds")
    assert rows[0] == rows[1]
    a, b = (load_checkpoint(tmp_path / n / "last.ckpt")["state_dict"] for n in ("a", "b"))
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_logvar_is_clamped():
    model = Trainer.VAE_Model(Trainer.parse_args(["--DR", "x", "--save_root", "y", *TINY]))
    with torch.no_grad():
        model.Gaussian_Predictor[6].bias.fill_(1e4)
    z, mu, logvar = model.posterior(torch.rand(1, 16, 8, 8), torch.rand(1, 16, 8, 8))
    assert logvar.max() <= Trainer.LOGVAR_LIMIT and torch.isfinite(z).all()


# --------------------------------------------------------------------------- bad input, via the CLIs
@pytest.fixture(scope="module")
def small_ckpt(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("ckpt")
    run_cli("Trainer.py", *train_flags(tiny_dataset, run, "--num_epoch", "1"))
    return run / "last.ckpt"


def broken_copy(tiny_dataset, tmp_path, damage):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    damage(root)
    return root


def expect_error(script, *args, contains):
    proc = run_cli(script, *args, check=False)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    for text in contains:
        assert text in proc.stderr, (text, proc.stderr)
    return proc.stderr


def test_bad_dataset_input(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    expect_error("Trainer.py", *train_flags(tmp_path / "missing", out), contains=["--DR", "missing"])
    (tmp_path / "empty").mkdir()
    expect_error("Trainer.py", *train_flags(tmp_path / "empty", out),
                 contains=["'val' split folder not found", "expected layout"])
    unlabelled = broken_copy(tiny_dataset, tmp_path / "1",
                             lambda r: (r / "train" / "train_label" / "frame7.png").unlink())
    expect_error("Trainer.py", *train_flags(unlabelled, out),
                 contains=["train_img", "frame7.png", "has no label"])
    truncated = broken_copy(tiny_dataset, tmp_path / "2", lambda r: (
        r / "val" / "val_img" / "frame3.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00"))
    expect_error("Trainer.py", *train_flags(truncated, out), contains=["cannot read image", "frame3.png"])


def test_bad_test_split(tiny_dataset, small_ckpt, tmp_path):
    def first_missing(root):
        (root / "test" / "test_img" / "2" / "frame0.png").unlink()

    def short(root):
        (root / "test" / "test_label" / "4" / "frame629.png").unlink()

    for damage, message in ((first_missing, "sequence '2' has no first frame"),
                            (short, "sequence '4': 629 labels, expected 630")):
        root = broken_copy(tiny_dataset, tmp_path / damage.__name__, damage)
        expect_error("Tester.py", "--DR", root, "--save_root", tmp_path / "o", "--ckpt_path", small_ckpt,
                     contains=[message])


def test_bad_checkpoints(tiny_dataset, small_ckpt, tmp_path):
    common = ["--DR", tiny_dataset, "--save_root", tmp_path / "o"]
    expect_error("Tester.py", *common, "--ckpt_path", tmp_path / "nope.ckpt",
                 contains=["checkpoint not found", "nope.ckpt"])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(1000))
    expect_error("Tester.py", *common, "--ckpt_path", junk, contains=["junk.ckpt", "not a readable checkpoint"])


def test_save_root_not_writable(tiny_dataset, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    expect_error("Trainer.py", *train_flags(tiny_dataset, blocker / "run"),
                 contains=["--save_root", "not writable"])


def test_images_of_other_sizes_and_modes_train(tiny_dataset, tmp_path):
    def convert(root):
        for path in (root / "train" / "train_img").glob("frame1*.png"):
            Image.open(path).convert("RGBA").resize((100, 37)).save(path)
        for path in (root / "train" / "train_label").glob("frame2*.png"):
            Image.open(path).convert("L").save(path)

    root = broken_copy(tiny_dataset, tmp_path, convert)
    run_cli("Trainer.py", *train_flags(root, tmp_path / "run", "--num_epoch", "1"))
    assert epochs_in(tmp_path / "run") == [0]


def test_nothing_is_written_outside_save_root(tiny_dataset, small_ckpt, tmp_path):
    before = {p for p in ROOT.rglob("*") if "__pycache__" not in p.parts and ".pytest_cache" not in p.parts}
    data_before = sorted(p.relative_to(tiny_dataset) for p in tiny_dataset.rglob("*"))
    run_cli("Trainer.py", *train_flags(tiny_dataset, tmp_path / "t", "--num_epoch", "1",
                                       "--store_visualization"))
    run_cli("Tester.py", "--DR", tiny_dataset, "--save_root", tmp_path / "s", "--ckpt_path", small_ckpt)
    after = {p for p in ROOT.rglob("*") if "__pycache__" not in p.parts and ".pytest_cache" not in p.parts}
    assert after == before
    assert sorted(p.relative_to(tiny_dataset) for p in tiny_dataset.rglob("*")) == data_before
    assert {p.name for p in tmp_path.iterdir()} == {"t", "s"}
