"""PSNR per unit of compute: recipes side by side on unseen test motions.

    python tools/benchmark_quality.py [--DR data/synthetic] [--out runs/quality]
        [--recipes ours template] [--epochs N] [--partial P] [Trainer flags]

Each recipe trains with the quickstart's dims on the same data for the same
number of epochs (a real `Trainer.py` run), then `Tester.py` rolls out the
synthetic test sequences (motions never seen in training) and
`tools/score_submission.py` scores them with the grader's metric. The
copy-first-frame baseline (every frame = the given first frame) is scored too.
The result is a markdown table in <out>/quality.md.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataloader import DanceTestSequences  # noqa: E402
from tools.quickstart import CPU_RECIPE  # noqa: E402
from tools.score_submission import score  # noqa: E402
from utils.cli import tool_parser  # noqa: E402
from utils.runlog import read_metrics  # noqa: E402
from utils.submission import write_submission  # noqa: E402

# The course template's recipe, expressed in this project's flags.
TEMPLATE = ["--optim", "Adam", "--lr", "0.001", "--lr_scheduler", "multistep",
            "--tfr", "1.0", "--tfr_sde", "10", "--tfr_d_step", "0.1", "--tf_mode", "batch",
            "--kl_anneal_type", "Cyclical", "--kl_anneal_cycle", "10", "--kl_anneal_ratio", "1",
            "--kl_reduction", "sum", "--output_activation", "none", "--warmup_steps", "0",
            "--amp", "off", "--no-channels_last"]
# "ours" = Trainer.py's defaults; "fp32" = the same without reduced precision, to show
# what the bf16 autocast default costs in quality at an equal budget.
RECIPES = {"ours": [], "fp32": ["--amp", "off", "--no-channels_last"], "template": TEMPLATE}


def run(command):
    print("$ " + " ".join(map(str, command)), flush=True)
    subprocess.run([sys.executable, *map(str, command)], cwd=ROOT, check=True)


def train_all(commands, parallel):
    """Train every recipe; with --parallel, all at once with one thread each
    (small models scale poorly over threads, so this halves the wall time)."""
    if not parallel:
        for command in commands:
            run(command)
        return
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = []
    for command in commands:
        print("$ " + " ".join(map(str, command)), flush=True)
        procs.append(subprocess.Popen([sys.executable, *map(str, command)], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    failed = [c for c, p in zip(commands, procs) if p.wait() != 0]
    if failed:
        raise SystemExit(f"training failed: {failed}")


def copy_first_frame_score(data, out):
    dataset = DanceTestSequences(data)
    sequences = []
    for first, labels in (dataset[i] for i in range(len(dataset))):
        sequences.append(first.expand(labels.shape[0], -1, -1, -1))
    path = write_submission(out / "copy_first_frame.csv", sequences)
    return score(path, data / "test_gt")


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--DR", default="data/synthetic", help="synthetic dataset (generated if missing)")
    parser.add_argument("--out", default="runs/quality", help="folder for runs and quality.md")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--parallel", action="store_true",
                        help="train the recipes at the same time, one CPU thread each")
    args, extra = parser.parse_known_args(argv)
    data, out = Path(args.DR).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run(["tools/synthetic_dance.py", "--out", data])

    train_all([["Trainer.py", "--DR", data, "--save_root", out / name, "--device", "cpu",
                *CPU_RECIPE, *RECIPES[name], *extra] for name in args.recipes], args.parallel)
    rows = []
    for name in args.recipes:
        run_dir = out / name
        run(["Tester.py", "--DR", data, "--save_root", run_dir / "test", "--device", "cpu",
             "--ckpt_path", run_dir / "best.ckpt"])
        result = score(run_dir / "test" / "submission.csv", data / "test_gt")
        metrics = read_metrics(run_dir)
        best_val = max(r["val_psnr"] for r in metrics)
        train_minutes = sum(r["epoch_seconds"] for r in metrics) / 60
        rows.append((name, best_val, result, train_minutes))
    baseline = copy_first_frame_score(data, out)

    threads = "1 CPU thread per run, runs in parallel" if args.parallel else \
        f"{torch.get_num_threads()} CPU threads"
    lines = [f"Quickstart dims and budget ({' '.join(CPU_RECIPE + extra)}), {threads}.", "",
             "| recipe | best val PSNR (dB) | test score (dB) | public | private | training time (min) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, val, result, minutes in rows:
        lines.append(f"| {name} | {val:.2f} | {result['score']:.2f} | {result['public']:.2f} | "
                     f"{result['private']:.2f} | {minutes:.1f} |")
    lines.append(f"| copy first frame | | {baseline['score']:.2f} | {baseline['public']:.2f} | "
                 f"{baseline['private']:.2f} | 0 |")
    table = "\n".join(lines) + "\n"
    (out / "quality.md").write_text(table)
    (out / "quality.json").write_text(json.dumps(
        {name: {"val_psnr": val, **result, "train_minutes": m} for name, val, result, m in rows}
        | {"copy_first_frame": baseline}, indent=2))
    print("\n" + table)


if __name__ == "__main__":
    main()
