"""The one-command pipeline and the report tools work as a user runs them."""
import csv
import json
import os
import re
import subprocess
import sys

from conftest import ROOT, TINY, run_cli
from tools import run_experiments
from tools.compare_runs import compare, distinguishing_labels
from utils.plots import load_run
from utils.runlog import write_args, write_frame_psnr

# metrics.csv as runs wrote it before loss terms were named: it still reads and plots.
OLD_COLUMNS = ["epoch", "lr", "tfr", "tf_on_frac", "beta", "train_loss", "train_mse", "train_kl",
               "val_loss", "val_psnr", "best_val_psnr", "epoch_seconds"]


def fake_run(folder, kl_type, psnr_offset):
    folder.mkdir(parents=True)
    write_args(folder, {"kl_anneal_type": kl_type, "tfr": 1.0, "lr": 0.001})
    with (folder / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=OLD_COLUMNS)
        writer.writeheader()
        for epoch in range(4):
            writer.writerow(dict(epoch=epoch, lr=1e-3, tfr=1.0, tf_on_frac=1.0, beta=epoch / 3,
                                 train_loss=0.1 / (epoch + 1), train_mse=0.05 / (epoch + 1),
                                 train_kl=10.0, val_loss=0.01, val_psnr=20 + epoch + psnr_offset,
                                 best_val_psnr=20 + epoch + psnr_offset, epoch_seconds=1.0))
            write_frame_psnr(folder, epoch, [30 - 0.01 * k for k in range(629)])
    return folder


def test_compare_runs_draws_every_figure_with_labels_from_args(tmp_path):
    runs = [fake_run(tmp_path / n, kl, i) for i, (n, kl) in
            enumerate([("a", "Cyclical"), ("b", "Monotonic"), ("c", "None")])]
    assert distinguishing_labels([load_run(r) for r in runs]) == ["Cyclical", "Monotonic", "None"]
    written = compare(runs, tmp_path / "figures")
    names = {p.name for p in written}
    assert names == {"loss.png", "teacher_forcing.png", "val_psnr.png", "psnr_per_frame.png",
                     "summary.md"}
    assert all(p.stat().st_size > 10_000 for p in written if p.suffix == ".png")
    summary = (tmp_path / "figures" / "summary.md").read_text()
    assert "| c | None | 4 |" in summary and "25" in summary       # best val PSNR of run c


def test_compare_runs_cli_rejects_folders_without_metrics(tmp_path):
    proc = run_cli("tools/compare_runs.py", tmp_path, "--out", tmp_path / "f", check=False)
    assert proc.returncode != 0 and "no metrics.csv" in proc.stderr


def test_run_experiments_trains_three_kl_strategies(small_dataset, tmp_path):
    out = tmp_path / "exp"
    run_experiments.main(["--DR", str(small_dataset), "--out", str(out), "--budget", "2",
                          "--val_vi_len", "8", "--num_workers", "0", "--device", "cpu",
                          "--partial", "0.5", *TINY])
    for name in ("kl_cyclical", "kl_monotonic", "kl_none"):
        assert (out / name / "metrics.csv").is_file()
    summary = (out / "figures" / "summary.md").read_text()
    assert all(label in summary for label in ("Cyclical", "Monotonic", "None"))
    assert (out / "figures" / "loss.png").is_file()


def test_quickstart_smoke(tiny_dataset, tmp_path):
    """The smoke data are tiny_dataset's (same generator arguments), so the
    quickstart finds them complete and goes straight to training."""
    proc = run_cli("tools/quickstart.py", "--smoke", "--out", tmp_path / "q",
                   "--data", tiny_dataset, "--device", "cpu", timeout=600)
    assert "complete dataset with these parameters exists" in proc.stdout
    assert "test score" in proc.stdout and "submission" in proc.stdout
    assert (tmp_path / "q" / "test" / "submission.csv").is_file()
    assert (tmp_path / "q" / "train" / "plots" / "loss.png").is_file()


def test_gpu_check_stops_with_a_clear_message_where_there_is_no_cuda(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", OUT=str(tmp_path))
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 2
    assert "torch sees no CUDA device" in done.stderr and not list(tmp_path.iterdir())
    env["PYTHON"] = str(tmp_path / "no-such-python")
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 2 and "cannot import: anything" in done.stderr


def test_the_gpu_check_rehearsal_passes_within_its_limits(tmp_path):
    """Every step of benchmarks/gpu_check.sh on the CPU with tiny settings: the script a
    lent GPU runs is proven here, its files and its limits included."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out), TMPDIR=str(tmp_path))
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--rehearse"], cwd=ROOT, env=env,
                          text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name for p in out.iterdir()} == {"summary.txt", "results.json", "logs.tar.gz",
                                               "nvidia-smi.txt"}
    limits = int(re.search(r"step limits added up to (\d+) s", done.stdout).group(1))
    assert limits <= 540
    rows = {row["step"]: row for row in json.loads((out / "results.json").read_text())}
    assert list(rows) == ["train_auto", "train_fp16", "train_fp32", "test_rollout",
                          "synthetic_defaults", "synthetic_defaults_test", "synthetic_l1_mse",
                          "synthetic_l1_mse_test", "compile_default", "compile_cudagraphs"]
    assert all(row["exit"] == 0 for row in rows.values())
    assert "score" in (out / "summary.txt").read_text()
    assert not list(tmp_path.glob("gpu_check.*"))   # the scratch folder is gone

