"""The ablation table: each recipe choice as one measured row on unseen test sequences.

    python benchmarks/benchmark_quality.py [--data data/synthetic] [--out runs/quality]
        [--rows default template ...] [--seeds 3] [--epochs 12] [--jobs 2]
        [--ckpt best] [Trainer flags]

Every row of tools/recipes.py ABLATIONS changes one thing against the default
recipe, at the quickstart's dims and budget, on any dataset in the Lab 4 layout
whose test split has its true frames in <data>/test_gt/<i>/ (the synthetic
world writes them; a real set needs them copied there). Rows that change
training run a real `Trainer.py` once per seed; rows that change only the test
reuse the default's checkpoint of the same seed. `Tester.py` rolls out the test
sequences and each submission is scored with the grader's metric; the table
gives each row's mean over seeds and its spread. The copy-first-frame baseline
is scored in every run.

Two rollout figures per row: the worst 100-frame window's PSNR lost against
predicting each frame from the true previous one (benchmarks/rollout_diagnosis.py:
the error a rollout adds), and frames 501-600 against 1-100 (how hard the late
frames are). Finished runs are kept, so an interrupted table is completed by
running the same command again. The table goes to <out>/quality.md and
<out>/quality.json.
"""
import json
import os
import re
import statistics
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

from dataloader import DanceTestSequences  # noqa: E402
from tools.recipes import ABLATIONS, CPU_EPOCHS, cpu_recipe  # noqa: E402
from tools.synthetic_dance import PARAMS_FILE, PARTIAL_FILE  # noqa: E402
from utils.cli import run_script, tool_parser  # noqa: E402
from utils.metrics import FRAMES_PER_SEQUENCE, SCORED_FRAMES, row_psnr  # noqa: E402
from utils.runlog import read_metrics  # noqa: E402
from utils.scoring import aligned_with_truth, score  # noqa: E402
from utils.submission import read_submission, write_submission  # noqa: E402

EARLY, LATE = SCORED_FRAMES[:100], SCORED_FRAMES[-100:]   # frames 1-100 and 501-600, for drift


def slug(name):
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def run_dir(out, name, seed):
    return out / slug(name) / f"seed{seed}"


def train(name, seed, data, out, epochs, extra, threads):
    """One Trainer.py run for a row and seed, unless a complete one is already there."""
    folder = run_dir(out, name, seed)
    if len(read_metrics(folder)) >= epochs and (folder / "last.ckpt").is_file():
        print(f"== {name}, seed {seed}: complete in {folder}, kept", flush=True)
        return
    flags = ABLATIONS[name][1](epochs)
    # An incomplete run there starts again; --overwrite keeps it in previous-<N>/.
    run_script(["Trainer.py", "--DR", data, "--save_root", folder, "--device", "cpu",
                "--overwrite", *cpu_recipe(epochs), *flags, *extra, "--seed", seed],
               log=out / f"{slug(name)}.seed{seed}.log", threads=threads)


def drift(submission, gt):
    """Per test sequence: mean grader PSNR over frames 501..600 minus 1..100."""
    ids, pred, true, _ = aligned_with_truth(*read_submission(submission), gt)
    psnr = row_psnr(pred, true)
    frame, sequence = ids % FRAMES_PER_SEQUENCE, ids // FRAMES_PER_SEQUENCE
    window = lambda s, frames: psnr[(sequence == s) & np.isin(frame, frames)].mean()  # noqa: E731
    return {int(s): float(window(s, LATE) - window(s, EARLY)) for s in np.unique(sequence)}


def rollout_gap(report):
    """The most PSNR (dB) any window of any sequence loses rolled out against one
    step from the true previous frame, from a benchmarks/rollout_diagnosis.py report."""
    return max(step - roll for rows in report["sequences"].values()
               for _, _, roll, step in rows)


def test(name, seed, data, out, ckpt="best", threads=None):
    """Roll out the test sequences with a row's checkpoint and test flags; scores.
    A result is kept beside its submission and reused while its checkpoint is
    older, so an interrupted table loses no finished row."""
    train_flags, test_flags = ABLATIONS[name][1], ABLATIONS[name][2]
    trained = run_dir(out, name if train_flags else "default", seed)
    checkpoint = trained / f"{ckpt}.ckpt"
    test_dir = out / "test" / slug(name) / f"seed{seed}"
    kept = test_dir / "result.json"
    if kept.is_file() and kept.stat().st_mtime > checkpoint.stat().st_mtime:
        return json.loads(kept.read_text())
    log = out / f"{slug(name)}.seed{seed}.test.log"
    run_script(["Tester.py", "--DR", data, "--save_root", test_dir, "--device", "cpu",
                "--ckpt_path", checkpoint, *test_flags], log=log, threads=threads)
    run_script(["benchmarks/rollout_diagnosis.py", "--DR", data, "--ckpt_path", checkpoint,
                "--device", "cpu", "--train_frames", "0", "--json", test_dir / "rollout.json",
                *test_flags], log=log.with_suffix(".rollout.log"), threads=threads)
    submission = test_dir / "submission.csv"
    metrics = read_metrics(trained)
    result = {"val_psnr": max(r["val_psnr"] for r in metrics),
              **({"train_minutes": sum(r["epoch_seconds"] for r in metrics) / 60}
                 if train_flags else {}),
              **score(submission, data / "test_gt"),
              "drift": drift(submission, data / "test_gt"),
              "rollout_gap": rollout_gap(json.loads((test_dir / "rollout.json").read_text()))}
    kept.write_text(json.dumps(result, indent=2))
    return json.loads(kept.read_text())   # the same keys whether fresh or kept


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
    return {"what": "every frame = the given first frame", "seeds": [None],
            "scores": [score(path, data / "test_gt")["score"]],
            "drift": drift(path, data / "test_gt")}


def summarise(name, per_seed):
    """One row from its per-seed results: means, the spread of the test score and
    the worst rollout figures over seeds; a row whose every seed failed keeps the
    error."""
    done = {seed: r for seed, r in per_seed.items() if "failed" not in r}
    row = {"what": ABLATIONS[name][0], "seeds": list(per_seed)}
    failed = [f"seed {seed}: {r['failed']}" for seed, r in per_seed.items() if "failed" in r]
    if failed:
        row["failed"] = "; ".join(failed)
    if not done:
        return row
    results = list(done.values())
    mean = lambda key: statistics.fmean(r[key] for r in results if key in r)  # noqa: E731
    row.update(scores=[r["score"] for r in results], val_psnr=mean("val_psnr"),
               drift={s: min(r["drift"][s] for r in results) for s in results[0]["drift"]},
               rollout_gap=max(r["rollout_gap"] for r in results))
    if "train_minutes" in results[0]:
        row["train_minutes"] = mean("train_minutes")
    return row


def table(rows, header):
    """Markdown: per row the mean test score over seeds with its spread (min-max),
    against the default and against copying the first frame."""
    mean = lambda r: statistics.fmean(r["scores"])  # noqa: E731
    default = mean(rows["default"]) if rows.get("default", {}).get("scores") else None
    copy = mean(rows["copy first frame"]) if "copy first frame" in rows else None
    lines = [header, "", "| row | what changes | seeds | val PSNR | test score | spread | "
             "vs default | vs copy-first | rollout vs one step, worst window | "
             "frames 501-600 vs 1-100, worst | training (min) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        if not r.get("scores"):
            lines.append(f"| {name} | {r['what']} | {len(r['seeds'])} | | {r['failed']} "
                         "| | | | | | |")
            continue
        score_ = mean(r)
        cells = [name, r["what"] + (f" ({r['failed']})" if "failed" in r else ""),
                 str(len(r["scores"])) if r["seeds"] != [None] else "",
                 f"{r['val_psnr']:.2f}" if "val_psnr" in r else "", f"{score_:.2f}",
                 f"{min(r['scores']):.2f}-{max(r['scores']):.2f}" if len(r["scores"]) > 1 else "",
                 f"{score_ - default:+.2f}" if default is not None else "",
                 f"{score_ - copy:+.2f}" if copy is not None else "",
                 f"{-r['rollout_gap']:+.2f} dB" if "rollout_gap" in r else "",
                 f"{min(r['drift'].values()):+.2f} dB",
                 f"{r['train_minutes']:.1f}" if "train_minutes" in r else ""]
        lines.append("| " + " | ".join(cells) + " |")
    if rows.get("default", {}).get("scores") and len(rows["default"]["scores"]) > 1:
        s = rows["default"]["scores"]
        lines += ["", f"Spread of the default over {len(s)} seeds: {max(s) - min(s):.2f} dB "
                  f"(standard deviation {statistics.stdev(s):.2f}); a difference of means "
                  "smaller than that is no difference."]
    return "\n".join(lines) + "\n"


def ensure_dataset(data):
    """The synthetic world is generated where data is missing or is one of its own
    folders; any other folder is taken as it is (real data, for one)."""
    if not data.exists() or (data / PARAMS_FILE).is_file() or (data / PARTIAL_FILE).is_file():
        run_script(["tools/synthetic_dance.py", "--out", data])
    if not (data / "test_gt").is_dir():
        raise SystemExit(f"'{data / 'test_gt'}' is missing: the table scores test sequences "
                         "against their true frames (<data>/test_gt/<i>/frame<N>.png).")


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--data", "--DR", dest="data", default="data/synthetic",
                        help="dataset in the Lab 4 layout with test_gt/ (the synthetic world "
                        "is generated there if missing)")
    parser.add_argument("--out", default="runs/quality", help="folder for runs and the table")
    parser.add_argument("--rows", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS),
                        metavar="ROW", help="rows of tools/recipes.py ABLATIONS to measure")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every row with seeds 0..N-1; the table gives the mean")
    parser.add_argument("--epochs", type=int, default=CPU_EPOCHS, help="training budget")
    parser.add_argument("--ckpt", choices=["best", "last"], default="best",
                        help="checkpoint to test; take last where the val video is also a "
                        "test sequence, so that no choice is made on the test")
    parser.add_argument("--jobs", type=int, default=1,
                        help="training runs at a time, each with (CPU cores / jobs) threads")
    args, extra = parser.parse_known_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        parser.error(f"--seeds and --jobs must be >= 1, got {args.seeds} and {args.jobs}")
    data, out = Path(args.data).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ensure_dataset(data)

    trained = [n for n in args.rows if ABLATIONS[n][1] is not None]
    if any(ABLATIONS[n][1] is None for n in args.rows) and "default" not in trained:
        trained.insert(0, "default")   # test-time rows need the default's checkpoints
    seeds = range(args.seeds)
    cores = os.cpu_count() or 1

    def train_and_test(name, seed, threads):
        try:
            train(name, seed, data, out, args.epochs, extra, threads)
        except subprocess.CalledProcessError:
            # A recipe that diverges is a result too; the table goes on without it.
            return {"failed": failure(out / f"{slug(name)}.seed{seed}.log")}
        return test(name, seed, data, out, args.ckpt, threads) if name in args.rows else None

    jobs = [(n, s) for n in trained for s in seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = dict(zip(jobs, pool.map(
            lambda job: train_and_test(*job, max(1, cores // args.jobs)), jobs)))
    default_failed = [r["failed"] for (n, _), r in done.items() if n == "default" and r
                      and "failed" in r]
    if default_failed and any(ABLATIONS[n][1] is None for n in args.rows):
        raise SystemExit("the default recipe failed to train, and the test-only rows need it: "
                         + "; ".join(default_failed))
    rows = {name: summarise(name, {s: done.get((name, s)) or test(name, s, data, out, args.ckpt)
                                   for s in seeds}) for name in args.rows}
    rows["copy first frame"] = copy_first_frame(data, out)

    header = (f"{data.name}: quickstart dims and budget "
              f"({' '.join(cpu_recipe(args.epochs) + extra)}), seeds 0-{args.seeds - 1}, "
              f"{args.ckpt}.ckpt tested, {args.jobs} run(s) at a time.")
    (out / "quality.md").write_text(table(rows, header))
    (out / "quality.json").write_text(json.dumps(rows, indent=2))
    print("\n" + table(rows, header))
    return rows


if __name__ == "__main__":
    main()
