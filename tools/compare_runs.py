"""Overlay training runs for a report: losses, beta, teacher forcing, PSNR.

    python tools/compare_runs.py RUN_DIR [RUN_DIR ...] --out FIG_DIR [--labels A B ...]

Reads each run's metrics.csv, args.json and val_psnr_epoch<N>.csv (what
Trainer.py leaves in --save_root) and writes loss.png, teacher_forcing.png,
val_psnr.png, psnr_per_frame.png (each run's best epoch) and summary.md.
"""
import math
from pathlib import Path

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

from utils.cli import tool_parser  # noqa: E402
from utils.errors import UserError, exit_on_user_error  # noqa: E402
from utils.plots import load_run, plot_runs  # noqa: E402

# Settings worth naming in a legend when runs differ in them, in this order.
LABEL_KEYS = ["kl_anneal_type", "kl_anneal_cycle", "kl_anneal_ratio", "tfr", "tfr_sde",
              "tfr_d_step", "tf_mode", "optim", "lr", "lr_scheduler", "kl_reduction",
              "output_activation", "batch_size", "train_vi_len", "F_dim", "D_out_dim", "amp"]


def distinguishing_labels(runs):
    """Legend labels from the args in which the runs differ, e.g. 'Cyclical' or
    'Monotonic, tfr 0.0'; the folder name when the args do not tell them apart."""
    differing = [k for k in LABEL_KEYS
                 if len({str(r["args"].get(k)) for r in runs}) > 1]
    labels = []
    for run in runs:
        parts = [str(run["args"][k]) if k == "kl_anneal_type" else f"{k} {run['args'].get(k)}"
                 for k in differing]
        labels.append(", ".join(parts) or run["dir"].name)
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({run['dir'].name})" for label, run in zip(labels, runs)]
    return labels


def summary_table(runs):
    lines = ["| run | label | epochs | final train loss | final val PSNR (dB) | "
             "best val PSNR (dB) | best epoch |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for run in runs:
        last, best = run["latest"], run["best"]
        fmt = lambda v: "n/a" if v is None or not math.isfinite(v) else f"{v:.4g}"  # noqa: E731
        lines.append(f"| {run['dir'].name} | {run['label']} | {len(run['rows'])} | "
                     f"{fmt(last['train_loss'])} | {fmt(last['val_psnr'])} | "
                     f"{fmt(best['val_psnr'] if best else None)} | "
                     f"{best['epoch'] if best else 'n/a'} |")
    return "\n".join(lines) + "\n"


def compare(run_dirs, out, labels=None):
    runs = [load_run(d) for d in run_dirs]
    missing = [str(r["dir"]) for r in runs if not r["rows"]]
    if missing:
        raise UserError("no metrics.csv (or an empty one) in: " + ", ".join(missing)
                        + ". Pass folders that Trainer.py wrote (its --save_root).")
    for run, label in zip(runs, labels or distinguishing_labels(runs)):
        run["label"] = label
    out = Path(out)
    figures = plot_runs(runs, out)
    (out / "summary.md").write_text(summary_table(runs))
    return figures + [out / "summary.md"]


@exit_on_user_error
def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("runs", nargs="+", help="run folders (Trainer.py --save_root)")
    parser.add_argument("--out", required=True, help="folder for the figures and summary.md")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="legend labels, one per run (default: from each run's args)")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels: {len(args.labels)} labels for {len(args.runs)} runs")
    for path in compare(args.runs, args.out, args.labels):
        print(path)
    print((Path(args.out) / "summary.md").read_text())


if __name__ == "__main__":
    main()
