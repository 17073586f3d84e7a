"""A --save_root that holds a run is never overwritten silently, and only one process
writes into it at a time."""
import hashlib
import os
import signal
import subprocess
import sys

import pytest

import Tester
import Trainer
from conftest import ROOT, signal_handlers_kept, train_flags
from utils.checkpoint import load_checkpoint
from utils.saveroot import RUN_MARKERS


def fingerprint(folder):
    """Every file under ``folder`` but the lock -> its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def run_trainer(capsys, *flags):
    """Trainer.main as Trainer.py runs it -> (exit code, what it printed to stderr)."""
    with signal_handlers_kept():
        try:
            Trainer.main(Trainer.parse_args(list(map(str, flags))))
            code = 0
        except SystemExit as stop:
            code = stop.code
    return code, capsys.readouterr().err


def test_a_second_run_is_refused_a_resume_continues_and_overwrite_moves_aside(
        small_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")          # an unrelated file does not make a run
    assert run_trainer(capsys, *train_flags(small_dataset, run, "--num_epoch", "1"))[0] == 0
    first = fingerprint(run)

    code, err = run_trainer(capsys, *train_flags(small_dataset, run, "--num_epoch", "1"))
    assert code == 2
    assert "already holds a training run" in err and f"--ckpt_path {run / 'last.ckpt'}" in err
    assert "--overwrite" in err
    assert fingerprint(run) == first

    code, err = run_trainer(capsys, "--DR", small_dataset, "--save_root", run,
                            "--ckpt_path", run / "last.ckpt", "--num_epoch", "2")
    assert code == 0, err
    assert load_checkpoint(run / "last.ckpt")["last_epoch"] == 1
    resumed = fingerprint(run)

    code, err = run_trainer(capsys, *train_flags(small_dataset, run, "--num_epoch", "1",
                                                 "--overwrite"))
    assert code == 0, err
    assert f"moved into '{run / 'previous-1'}'" in err
    kept = {name[len("previous-1/"):]: digest for name, digest in fingerprint(run).items()
            if name.startswith("previous-1/")}
    assert kept == {k: v for k, v in resumed.items() if k != "notes.txt"}
    assert load_checkpoint(run / "last.ckpt")["last_epoch"] == 0
    assert (run / "notes.txt").read_text() == "mine"

    run_trainer(capsys, *train_flags(small_dataset, run, "--num_epoch", "1", "--overwrite"))
    assert (run / "previous-2" / "last.ckpt").is_file()
    assert (run / "previous-1" / "metrics.csv").is_file()


@pytest.mark.parametrize("marker", [m.replace("*", "4") for m in RUN_MARKERS])
def test_any_file_of_a_run_marks_the_folder_as_taken(tmp_path, capsys, marker):
    """Refused before any data is read (--DR does not exist)."""
    (tmp_path / marker).write_bytes(b"")
    code, err = run_trainer(capsys, *train_flags(tmp_path / "no_data", tmp_path))
    assert code == 2 and "already holds a training run" in err and marker in err
    assert not (tmp_path / "previous-1").exists()


# Holds the lock of the folder in argv[1] until killed.
LOCK_HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from utils.saveroot import exclusive
with exclusive(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_process_is_refused_with_the_pid_and_a_killed_one_leaves_no_lock(
        small_dataset, trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run), str(ROOT)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        code, err = run_trainer(capsys, *train_flags(small_dataset, run, "--num_epoch", "1"))
        assert code == 2 and f"another process (pid {holder.pid})" in err
        assert fingerprint(run) == {}
        # --test only reads: it runs beside a training run.
        code, err = run_trainer(capsys, "--DR", small_dataset, "--save_root", run,
                                "--ckpt_path", trained_run.folder / "last.ckpt", "--test")
        assert code == 0, err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code, err = run_trainer(capsys, *train_flags(small_dataset, run, "--num_epoch", "1"))
    assert code == 0, err
    assert (run / "last.ckpt").is_file()


def test_test_mode_and_the_tester_work_in_a_folder_that_holds_a_run(
        small_dataset, trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("last.ckpt", "best.ckpt", "metrics.csv"):
        (run / name).write_bytes((trained_run.folder / name).read_bytes())
    before = fingerprint(run)
    code, err = run_trainer(capsys, "--DR", small_dataset, "--save_root", run,
                            "--ckpt_path", trained_run.folder / "best.ckpt", "--test")
    assert code == 0, err
    with signal_handlers_kept():
        Tester.main(Trainer.parse_args(["--DR", str(small_dataset), "--save_root", str(run),
                                        "--ckpt_path", str(run / "best.ckpt"), "--no_sanity"],
                                       Tester.get_tester_parser()))
    assert (run / "submission.csv").is_file()
    after = fingerprint(run)
    assert {k: after[k] for k in before} == before
    assert not os.path.exists(run / "previous-1")
