"""One line and one JSON row for a finished step of benchmarks/gpu_check.sh.

    python benchmarks/gpu_check_summary.py train STEP RUN_DIR RESULTS_JSON EXIT SECONDS
    python benchmarks/gpu_check_summary.py test STEP SCORE_JSON RESULTS_JSON EXIT SECONDS
    python benchmarks/gpu_check_summary.py table RESULTS_JSON

train: a Trainer.py run's metrics.csv -> steps per second (epochs after the first,
which pays for warm-up), the training loss of its first and last epoch, the last
val PSNR, and the precision it printed. test: a Tester.py + score_submission.py
step -> the score and the wall time of the rollout. Each row is appended to
RESULTS_JSON (a list) the moment its step ends, so a run cut off later keeps it.
"""
import json
import re
import sys
from pathlib import Path

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

from utils.runlog import read_metrics  # noqa: E402


def train_row(run_dir):
    rows = read_metrics(run_dir) if (Path(run_dir) / "metrics.csv").is_file() else []
    if not rows:
        return {}
    args = json.loads((Path(run_dir) / "args.json").read_text())
    steps_per_epoch = None
    log = Path(run_dir) / "step.log"
    if log.is_file():
        found = re.search(r"(\d+) drawn each epoch|: (\d+) clips of", log.read_text())
        if found:
            clips = int(found.group(1) or found.group(2))
            steps_per_epoch = clips // args["batch_size"]
    timed = rows[1:] or rows
    seconds = sum(r["epoch_seconds"] for r in timed) / len(timed)
    row = {"epochs": len(rows), "epoch_seconds": round(seconds, 2),
           "first_train_loss": rows[0]["train_loss"], "last_train_loss": rows[-1]["train_loss"],
           "loss_fell": rows[-1]["train_loss"] < rows[0]["train_loss"],
           "last_val_psnr": rows[-1]["val_psnr"]}
    if steps_per_epoch:
        row["steps_per_second"] = round(steps_per_epoch / seconds, 2)
    if log.is_file():
        precision = re.search(r"^precision: .*$", log.read_text(), re.MULTILINE)
        row["precision"] = precision.group(0) if precision else None
    if "skipped_steps" in rows[-1]:
        row["skipped_steps"] = sum(int(r["skipped_steps"]) for r in rows)
    return row


def append(results, row):
    path = Path(results)
    table = json.loads(path.read_text()) if path.is_file() else []
    table.append(row)
    path.write_text(json.dumps(table, indent=1))


def line(row):
    shown = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("step", "exit", "seconds"))
    return f"=== {row['step']}: exit {row['exit']} after {row['seconds']} s | {shown}"


def main(argv):
    kind = argv[0]
    if kind == "table":
        for row in json.loads(Path(argv[1]).read_text()) if Path(argv[1]).is_file() else []:
            print(line(row))
        return
    step, source, results, code, seconds = argv[1:6]
    row = {"step": step, "exit": int(code), "seconds": int(seconds)}
    if kind == "train":
        row.update(train_row(source))
    elif Path(source).is_file():
        row.update(json.loads(Path(source).read_text()))
    append(results, row)
    print(line(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
