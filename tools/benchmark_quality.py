"""The ablation table: each recipe choice as one measured row on unseen test motions.

    python tools/benchmark_quality.py [--DR data/synthetic] [--out runs/quality]
        [--rows default template ...] [--epochs 8] [--jobs 2] [Trainer flags]

Every row of tools/recipes.py ABLATIONS changes one thing against the default
recipe, at the quickstart's dims and budget. Rows that change training run a
real `Trainer.py`; rows that change only the test reuse the default's
checkpoint. `Tester.py` then rolls out the synthetic test sequences (motions
never seen in training) and each submission is scored with the grader's metric.
The copy-first-frame baseline is scored too, and "seed 1" against "default"
gives the noise of a measurement. Finished runs are kept, so an interrupted
table is completed by running the same command again. The table goes to
<out>/quality.md and <out>/quality.json.
"""
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataloader import DanceTestSequences  # noqa: E402
from tools.recipes import ABLATIONS, CPU_EPOCHS, cpu_recipe  # noqa: E402
from utils.cli import tool_parser  # noqa: E402
from utils.metrics import FRAMES_PER_SEQUENCE, row_psnr  # noqa: E402
from utils.runlog import read_metrics  # noqa: E402
from utils.scoring import score  # noqa: E402
from utils.submission import (load_ground_truth, match_rows, read_submission,  # noqa: E402
                              write_submission)

EARLY, LATE = range(1, 101), range(501, 601)   # frames compared for drift


def slug(name):
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def run(command, log=None, threads=None):
    print("$ " + " ".join(map(str, command)), flush=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with open(log, "w") if log else open(os.devnull, "w") as sink:
        subprocess.run([sys.executable, *map(str, command)], cwd=ROOT, env=env, check=True,
                       stdout=sink if log else None, stderr=subprocess.STDOUT if log else None)


def train(name, data, out, epochs, extra, threads):
    """One Trainer.py run for a row, unless a complete one is already there."""
    run_dir = out / slug(name)
    if len(read_metrics(run_dir)) >= epochs and (run_dir / "best.ckpt").is_file():
        print(f"== {name}: complete in {run_dir}, kept", flush=True)
        return
    flags = ABLATIONS[name][1](epochs)
    # An incomplete run there starts again; --overwrite keeps it in previous-<N>/.
    run(["Trainer.py", "--DR", data, "--save_root", run_dir, "--device", "cpu", "--overwrite",
         *cpu_recipe(epochs), *flags, *extra], log=out / f"{slug(name)}.log", threads=threads)


def drift(submission, gt):
    """Per test sequence: mean grader PSNR over frames 501..600 minus 1..100."""
    pred_ids, pred = read_submission(submission)
    true_ids, true, _ = load_ground_truth(gt)
    ids, pred_at, true_at = match_rows(pred_ids, true_ids)
    psnr = row_psnr(pred[pred_at], true[true_at])
    frame, sequence = ids % FRAMES_PER_SEQUENCE, ids // FRAMES_PER_SEQUENCE
    window = lambda s, frames: psnr[(sequence == s) & np.isin(frame, frames)].mean()  # noqa: E731
    return {int(s): float(window(s, LATE) - window(s, EARLY)) for s in np.unique(sequence)}


def test(name, data, out, threads=None):
    """Roll out the test sequences with a row's checkpoint and test flags; scores.
    A row's result is kept beside its submission and reused while its checkpoint
    is older, so an interrupted table loses no finished row."""
    train_flags, test_flags = ABLATIONS[name][1], ABLATIONS[name][2]
    run_dir = out / slug(name if train_flags else "default")
    test_dir = out / "test" / slug(name)
    kept = test_dir / "result.json"
    if kept.is_file() and kept.stat().st_mtime > (run_dir / "best.ckpt").stat().st_mtime:
        return json.loads(kept.read_text())
    run(["Tester.py", "--DR", data, "--save_root", test_dir, "--device", "cpu",
         "--ckpt_path", run_dir / "best.ckpt", *test_flags], log=out / f"{slug(name)}.test.log",
        threads=threads)
    submission = test_dir / "submission.csv"
    metrics = read_metrics(run_dir)
    result = {"what": ABLATIONS[name][0], "val_psnr": max(r["val_psnr"] for r in metrics),
              **({"train_minutes": sum(r["epoch_seconds"] for r in metrics) / 60}
                 if train_flags else {}),
              **score(submission, data / "test_gt"),
              "drift": drift(submission, data / "test_gt")}
    kept.write_text(json.dumps(result, indent=2))
    return result


def failure(log):
    """The last error line of a failed run's log, e.g. its non-finite loss."""
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if "error" in line.lower()] if log.is_file() else []
    last = lines[-1].split("\r")[-1].split(" (")[0].strip() if lines else ""
    return last or f"failed, see {log}"


def copy_first_frame(data, out):
    dataset = DanceTestSequences(data)
    sequences = [first.expand(labels.shape[0], -1, -1, -1)
                 for first, labels in (dataset[i] for i in range(len(dataset)))]
    path = write_submission(out / "copy_first_frame.csv", sequences)
    return {"what": "every frame = the given first frame", **score(path, data / "test_gt"),
            "drift": drift(path, data / "test_gt")}


def table(results, header):
    default = results.get("default", {}).get("score")
    lines = [header, "", "| row | what changes | val PSNR | test score | vs default | "
             "worst drift, frames 501-600 vs 1-100 | training (min) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        if "failed" in r:
            lines.append(f"| {name} | {r['what']} | | {r['failed']} | | | |")
            continue
        versus = f"{r['score'] - default:+.2f}" if default is not None else ""
        val = f"{r['val_psnr']:.2f}" if "val_psnr" in r else ""
        minutes = f"{r['train_minutes']:.1f}" if "train_minutes" in r else ""
        lines.append(f"| {name} | {r['what']} | {val} | {r['score']:.2f} | {versus} | "
                     f"{min(r['drift'].values()):+.2f} dB | {minutes} |")
    if "seed 1" in results and default is not None:
        noise = abs(results["seed 1"]["score"] - default)
        lines += ["", f"Noise of a measurement (|default - seed 1|): {noise:.2f} dB; a "
                  "difference smaller than that is no difference. It is a lower bound: a "
                  "thread count alone can move a run by more (README, Quality)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--DR", default="data/synthetic",
                        help="synthetic dataset (generated there if missing)")
    parser.add_argument("--out", default="runs/quality", help="folder for runs and the table")
    parser.add_argument("--rows", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS),
                        metavar="ROW", help="rows of tools/recipes.py ABLATIONS to measure")
    parser.add_argument("--epochs", type=int, default=CPU_EPOCHS, help="training budget")
    parser.add_argument("--jobs", type=int, default=1,
                        help="training runs at a time, each with (CPU cores / jobs) threads")
    args, extra = parser.parse_known_args(argv)
    data, out = Path(args.DR).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run(["tools/synthetic_dance.py", "--out", data])

    trained = [n for n in args.rows if ABLATIONS[n][1] is not None]
    if any(ABLATIONS[n][1] is None for n in args.rows) and "default" not in trained:
        trained.insert(0, "default")   # test-time rows need the default's checkpoint
    cores = os.cpu_count() or 1

    def train_and_test(name, threads):
        try:
            train(name, data, out, args.epochs, extra, threads)
        except subprocess.CalledProcessError:
            # A recipe that diverges is a result too; the table goes on without it.
            log = out / f"{slug(name)}.log"
            return {"what": ABLATIONS[name][0], "failed": failure(log)}
        return test(name, data, out, threads) if name in args.rows else None

    # The default first, on every core: the test-only rows use its checkpoint.
    done = {n: train_and_test(n, cores) for n in trained if n == "default"}
    if "failed" in (done.get("default") or {}):
        raise SystemExit(f"the default recipe failed to train: {done['default']['failed']}")
    others = [n for n in trained if n != "default"]
    with ThreadPoolExecutor(args.jobs) as pool:
        done.update(zip(others, pool.map(lambda n: train_and_test(n, max(1, cores // args.jobs)),
                                         others)))
    results = {name: done.get(name) or test(name, data, out) for name in args.rows}
    results["copy first frame"] = copy_first_frame(data, out)

    header = (f"Quickstart dims and budget ({' '.join(cpu_recipe(args.epochs) + extra)}), "
              f"{args.jobs} run(s) at a time.")
    (out / "quality.md").write_text(table(results, header))
    (out / "quality.json").write_text(json.dumps(results, indent=2))
    print("\n" + table(results, header))
    return results


if __name__ == "__main__":
    main()
