"""Interrupted runs lose at most one epoch; bad input gets a clear error; checkpoints run no code."""
import csv
import errno
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import torch
from PIL import Image

import Tester
import Trainer
from conftest import ROOT, TRAINED_FLAGS, TINY, train_flags, train_in_process
from utils.flags import default_args
from utils.checkpoint import atomic_save, load_checkpoint
from utils.errors import UserError
from utils.fileio import atomic_write
from utils.framecache import BESIDE_DATA
from utils.submission import write_submission


def epochs_in(run):
    path = run / "metrics.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_saves_last_checkpoint_and_resume_appends(
        small_dataset, tmp_path, capsys, monkeypatch, restore_signals, signum):
    """The process signals itself, as kill would, inside the 2nd optimizer step of
    epoch 1 (of 6): the run stops after that step, keeps the partial epoch's weights
    as last.ckpt with last_epoch 0, and the resume redoes epoch 1."""
    run = tmp_path / "run"
    epochs_of_steps = []
    one_step = Trainer.VAE_Model.training_one_step

    def step_then_signal(model, *args, **kwargs):
        epochs_of_steps.append(model.trainer.current_epoch)
        if epochs_of_steps.count(1) == 2:
            os.kill(os.getpid(), signum)
        return one_step(model, *args, **kwargs)

    monkeypatch.setattr(Trainer.VAE_Model, "training_one_step", step_then_signal)
    with pytest.raises(SystemExit) as stop:
        Trainer.main(Trainer.parse_args(train_flags(small_dataset, run, "--num_epoch", "2")))
    assert stop.value.code == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    err = capsys.readouterr().err
    assert f"stopped by {signal.Signals(signum).name} in epoch 1" in err
    assert "resume with: python Trainer.py" in err
    steps_per_epoch = epochs_of_steps.count(0)
    assert epochs_of_steps.count(1) == 2 < steps_per_epoch    # stopped inside epoch 1
    ckpt = load_checkpoint(run / "last.ckpt")
    assert ckpt["last_epoch"] == 0 and ckpt["global_step"] == steps_per_epoch + 2
    assert epochs_in(run) == [0]

    monkeypatch.undo()
    Trainer.main(Trainer.parse_args(["--DR", str(small_dataset), "--save_root", str(run),
                                     "--ckpt_path", str(run / "last.ckpt")]))
    assert epochs_in(run) == [0, 1]                          # appended, not overwritten
    assert load_checkpoint(run / "last.ckpt")["last_epoch"] == 1


# The child writes the first half of a checkpoint's bytes through atomic_save, then
# pauses inside the write: the parent's kill -9 lands there, never before or after.
SLOW_WRITER = """
import io, sys, time, torch
sys.path.insert(0, sys.argv[2])
from utils.checkpoint import atomic_save

def save_slowly(obj, f):
    buffer = io.BytesIO()
    real_save(obj, buffer)
    data = buffer.getvalue()
    f.write(data[:len(data) // 2])
    f.flush()
    time.sleep(120)
    f.write(data[len(data) // 2:])

real_save, torch.save = torch.save, save_slowly
atomic_save({"state_dict": {"w": torch.ones(100_000)}, "version": 1}, sys.argv[1])
"""


def test_kill_9_during_a_write_keeps_the_previous_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic_save({"state_dict": {"w": torch.zeros(3)}, "version": 0}, target)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target), str(ROOT)],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not any(p.stat().st_size for p in tmp_path.glob(".last.ckpt.*.tmp")):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    (partial,) = tmp_path.glob(".last.ckpt.*.tmp")   # the write was interrupted here
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(partial)                     # what a plain torch.save would leave
    ckpt = load_checkpoint(target)
    assert ckpt["version"] == 0 and torch.equal(ckpt["state_dict"]["w"], torch.zeros(3))
    # The leftover does not get in the way of the next save.
    atomic_save({"state_dict": {"w": torch.ones(2)}, "version": 2}, target)
    assert load_checkpoint(target)["version"] == 2


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


def test_a_checkpoint_that_runs_code_is_refused(tmp_path, expect_error):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    with evil.open("wb") as f:
        pickle.dump({"state_dict": {}, "payload": RunsCode(marker)}, f, protocol=2)
    with pytest.raises(UserError, match="refusing to load"):
        load_checkpoint(evil)
    expect_error(Tester, "--DR", tmp_path, "--save_root", tmp_path / "out", "--ckpt_path", evil,
                 contains=["refusing to load"])
    assert not marker.exists()


def test_same_seed_gives_identical_runs(small_dataset, trained_run, tmp_path):
    """The session's Trainer.py run, repeated here in another process: the same
    metrics (but the time) and the same weights."""
    again = train_in_process(small_dataset, tmp_path / "again", *TRAINED_FLAGS)
    rows = [list(csv.DictReader(open(run / "metrics.csv"))) for run in (trained_run.folder, again)]
    for run_rows in rows:
        for row in run_rows:
            row.pop("epoch_seconds")
    assert rows[0] == rows[1]
    a, b = (load_checkpoint(run / "last.ckpt")["state_dict"] for run in (trained_run.folder, again))
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_logvar_is_clamped():
    model = Trainer.VAE_Model(default_args(*TINY))
    with torch.no_grad():
        model.Gaussian_Predictor[6].bias.fill_(1e4)
    z, mu, logvar = model.posterior(torch.rand(1, 16, 8, 8), torch.rand(1, 16, 8, 8))
    assert logvar.max() <= Trainer.LOGVAR_LIMIT and torch.isfinite(z).all()


# --------------------------------------------------------------------------- bad input, via the CLIs' main
@pytest.fixture
def expect_error(capsys, restore_signals):
    """Run Trainer.py's or Tester.py's main on these arguments as its script does: it
    must exit with code 2 (a UserError or an argparse error; any other exception
    fails the test) and a message holding each of ``contains``."""
    def run(cli, *args, contains):
        parser = Tester.get_tester_parser() if cli is Tester else None
        with pytest.raises(SystemExit) as stop:
            cli.main(Trainer.parse_args(list(map(str, args)), parser))
        err = capsys.readouterr().err
        assert stop.value.code == 2, err
        for text in contains:
            assert text in err, (text, err)
    return run


@pytest.fixture
def small_ckpt(trained_run):
    return trained_run.folder / "last.ckpt"


def broken_copy(source, root, damage, splits=("train", "val")):
    """A copy of the splits a command reads, then damaged."""
    for split in splits:
        shutil.copytree(source / split, root / split)
    damage(root)
    return root


def test_bad_dataset_input(small_dataset, tmp_path, expect_error):
    out = tmp_path / "out"
    expect_error(Trainer, *train_flags(tmp_path / "missing", out), contains=["--DR", "missing"])
    (tmp_path / "empty").mkdir()
    expect_error(Trainer, *train_flags(tmp_path / "empty", out),
                 contains=["'val' split folder not found", "expected layout"])
    unlabelled = broken_copy(small_dataset, tmp_path / "1",
                             lambda r: (r / "train" / "train_label" / "frame7.png").unlink())
    expect_error(Trainer, *train_flags(unlabelled, out),
                 contains=["train_img", "frame7.png", "has no label"])
    truncated = broken_copy(small_dataset, tmp_path / "2", lambda r: (
        r / "val" / "val_img" / "frame3.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00"))
    expect_error(Trainer, *train_flags(truncated, out), contains=["cannot read image", "frame3.png"])


def test_bad_test_split(tiny_dataset, small_ckpt, tmp_path, expect_error):
    def first_missing(root):
        (root / "test" / "test_img" / "2" / "frame0.png").unlink()

    def short(root):
        (root / "test" / "test_label" / "4" / "frame629.png").unlink()

    for damage, message in ((first_missing, "sequence '2' has no first frame"),
                            (short, "sequence '4': 629 labels, expected 630")):
        root = broken_copy(tiny_dataset, tmp_path / damage.__name__, damage, splits=["test"])
        expect_error(Tester, "--DR", root, "--save_root", tmp_path / "o", "--ckpt_path", small_ckpt,
                     contains=[message])


def test_bad_checkpoints(small_dataset, tmp_path, expect_error):
    common = ["--DR", small_dataset, "--save_root", tmp_path / "o"]
    expect_error(Tester, *common, "--ckpt_path", tmp_path / "nope.ckpt",
                 contains=["checkpoint not found", "nope.ckpt"])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(1000))
    expect_error(Tester, *common, "--ckpt_path", junk, contains=["junk.ckpt", "not a readable checkpoint"])


def test_save_root_not_writable(small_dataset, tmp_path, expect_error):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    expect_error(Trainer, *train_flags(small_dataset, blocker / "run"),
                 contains=["--save_root", "not writable"])


def test_images_of_other_sizes_and_modes_train(small_dataset, tmp_path):
    def convert(root):
        for path in (root / "train" / "train_img").glob("frame1*.png"):
            Image.open(path).convert("RGBA").resize((100, 37)).save(path)
        for path in (root / "train" / "train_label").glob("frame2*.png"):
            Image.open(path).convert("L").save(path)

    root = broken_copy(small_dataset, tmp_path / "data", convert)
    train_in_process(root, tmp_path / "run", "--num_epoch", "1")
    assert epochs_in(tmp_path / "run") == [0]


def test_nothing_is_written_outside_save_root_but_the_data_cache(small_dataset, small_ckpt, tmp_path):
    def files(root):
        return {p for p in root.rglob("*")
                if "__pycache__" not in p.parts and ".pytest_cache" not in p.parts}

    before, data_before = files(ROOT), files(small_dataset)
    train_in_process(small_dataset, tmp_path / "t", "--num_epoch", "1", "--store_visualization")
    # --no_sanity: the short test sequence is not Kaggle's 630 frames.
    Tester.main(Trainer.parse_args(["--DR", str(small_dataset), "--save_root", str(tmp_path / "s"),
                                    "--ckpt_path", str(small_ckpt), "--no_sanity"],
                                   Tester.get_tester_parser()))
    # Into the dataset goes only its decoded cache (utils/framecache.py), in its own folder.
    outside_cache = lambda paths: {p for p in paths if BESIDE_DATA not in p.parts}  # noqa: E731
    assert files(ROOT) == before
    assert outside_cache(files(small_dataset)) == outside_cache(data_before)
    assert {p.name for p in tmp_path.iterdir()} == {"t", "s"}


def test_any_random_bytes_give_a_clear_error_not_a_traceback(tmp_path):
    """Random bytes can parse as pickle opcodes (a memo lookup, a short struct) that
    fail with errors other than UnpicklingError; every one must read as unreadable."""
    junk = tmp_path / "junk.ckpt"
    for seed in range(300):
        junk.write_bytes(random.Random(seed).randbytes(1000))
        with pytest.raises(UserError, match="junk.ckpt"):
            load_checkpoint(junk)


# --------------------------------------------------------------------------- a full disk, an unwritable file
def fill_disk_for(monkeypatch, name):
    """From now on, writing a file called ``name`` fails with ENOSPC halfway through
    its first write, as on a full disk; other files write normally."""
    doomed, mkstemp, fdopen = set(), tempfile.mkstemp, os.fdopen

    def tracking_mkstemp(*args, prefix=None, **kwargs):
        fd, tmp = mkstemp(*args, prefix=prefix, **kwargs)
        if prefix == f".{name}.":
            doomed.add(fd)
        return fd, tmp

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, attr):
            return getattr(self.f, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def failing_fdopen(fd, *args, **kwargs):
        f = fdopen(fd, *args, **kwargs)
        if fd in doomed:
            doomed.remove(fd)   # the number is free again once the file is closed
            return FullDisk(f)
        return f

    monkeypatch.setattr(tempfile, "mkstemp", tracking_mkstemp)
    monkeypatch.setattr(os, "fdopen", failing_fdopen)


@pytest.fixture(scope="module")
def one_epoch_run(small_dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("one_epoch") / "run"
    return train_in_process(small_dataset, folder, "--num_epoch", "1", "--store_visualization")


def file_bytes(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("file, fault", [
    ("args.json", "full"), ("val_psnr_epoch1.csv", "full"), ("metrics.csv", "full"),
    ("plots/loss.png", "full"), ("visualization/val_epoch1.gif", "full"),
    ("plots/loss.png", "a folder")])
def test_a_failed_write_names_the_file_and_keeps_every_earlier_one(
        one_epoch_run, small_dataset, tmp_path, monkeypatch, expect_error, file, fault):
    """A resumed run cannot write ``file`` (in epoch 1, or args.json at the start):
    it stops with a message naming the file, which is as it was, and no earlier
    file is cut short."""
    run = shutil.copytree(one_epoch_run, tmp_path / "run")
    target = run / file
    if fault == "full":
        fill_disk_for(monkeypatch, target.name)
        cause = "No space left on device"
    else:
        target.unlink()
        target.mkdir()
        cause = "Is a directory"
    before = file_bytes(run)
    expect_error(Trainer, "--DR", small_dataset, "--save_root", run, "--ckpt_path",
                 run / "last.ckpt", "--num_epoch", "2", "--store_visualization",
                 contains=[f"'{target}'", cause])
    monkeypatch.undo()
    after = file_bytes(run)
    assert not [p for p in after if p.name.endswith(".tmp")]
    assert after.get(target.relative_to(run)) == before.get(target.relative_to(run))
    # Epoch 1 rewrites metrics.csv and the checkpoints whole or not at all; the rest of
    # epoch 0's files it leaves alone.
    assert all(after[p] == before[p] for p in before
               if p.name in ("val_psnr_epoch0.csv", "epoch=0.ckpt", "val_epoch0.gif"))
    assert epochs_in(run) in ([0], [0, 1])
    assert load_checkpoint(run / "last.ckpt")["last_epoch"] in (0, 1)
    load_checkpoint(run / "best.ckpt")


def test_a_full_disk_while_writing_the_submission_keeps_the_old_one(
        small_dataset, small_ckpt, tmp_path, monkeypatch, expect_error):
    out = tmp_path / "out"
    out.mkdir()
    (out / "submission.csv").write_text("the earlier submission")
    fill_disk_for(monkeypatch, "submission.csv")
    expect_error(Tester, "--DR", small_dataset, "--save_root", out, "--ckpt_path", small_ckpt,
                 "--no_sanity", contains=[f"'{out / 'submission.csv'}'", "No space left on device",
                                          "previous file is intact"])
    # no temporary file is left; the rollouts' GIFs were written before the CSV
    assert sorted(p.name for p in out.iterdir()) == ["pred_seq0.gif", "submission.csv"]
    assert (out / "submission.csv").read_text() == "the earlier submission"
