"""Report figures, drawn from a run's files (metrics.csv, val_psnr_epoch<N>.csv).

One code path for a single run (Trainer, every epoch) and for comparisons
(tools/compare_runs.py): each figure takes a list of runs.
"""
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from utils.fileio import atomic_write, make_parent  # noqa: E402
from utils.runlog import read_frame_psnr, read_metrics  # noqa: E402

plt.rcParams.update({"font.size": 11, "axes.grid": True, "grid.alpha": 0.3,
                     "figure.dpi": 110, "savefig.bbox": "tight"})


def run_label(run_dir, args):
    """A legend label: the run's KL annealing type (e.g. 'Cyclical'), or its folder's
    name where args.json does not say (tools/compare_runs.py labels runs by the
    settings in which they differ)."""
    if not args:
        return Path(run_dir).name
    return str(args.get("kl_anneal_type", Path(run_dir).name))


def load_run(run_dir, label=None):
    run_dir = Path(run_dir)
    args_path = run_dir / "args.json"
    args = json.loads(args_path.read_text()) if args_path.exists() else {}
    rows = read_metrics(run_dir)
    run = {"dir": run_dir, "args": args, "rows": rows,
           "label": label or run_label(run_dir, args)}
    finite = [r for r in rows if math.isfinite(r["val_psnr"])]
    run["best"] = max(finite, key=lambda r: r["val_psnr"]) if finite else None
    run["latest"] = rows[-1] if rows else None
    return run


def column(run, name):
    """(epochs, values) of a logged column; NaN where a row lacks it (an older run)."""
    return ([r["epoch"] for r in run["rows"]],
            [r.get(name, math.nan) for r in run["rows"]])


def _legend(ax, fontsize=None):
    """Inside the axes where the labels are short; below them where long labels
    would cover the curves."""
    labels = ax.get_legend_handles_labels()[1]
    if max(map(len, labels), default=0) <= 30:
        return ax.legend(fontsize=fontsize)
    return ax.legend(fontsize=fontsize, loc="upper center", bbox_to_anchor=(0.5, -0.16))


def _save(fig, path):
    """Write the figure atomically (a failed write keeps the previous one), then free it."""
    path = Path(path)
    try:
        make_parent(path)
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix[1:], bbox_inches="tight"),
                     durable=False)
    finally:
        plt.close(fig)
    return path


# Titles of the logged columns the loss figure knows; any other train_<term>
# column gets a panel titled by its name.
PANEL_TITLES = {"train_loss": "Total loss (reconstruction + beta x KL)",
                "train_mse": "Reconstruction MSE (per pixel)",
                "train_l1": "Reconstruction L1 (per pixel)",
                "train_kl": "KL divergence (per frame)",
                "train_grad_norm": "Gradient norm (before clipping)",
                "beta": "KL weight beta"}


def loss_columns(runs):
    """train_loss, every train_<term> any run logged (in the order logged), beta."""
    terms = {}
    for run in runs:
        for row in run["rows"][:1]:
            terms.update(dict.fromkeys(k for k in row if k.startswith("train_")))
    return ["train_loss", *(t for t in terms if t != "train_loss"), "beta"]


def plot_losses(runs, path):
    columns = loss_columns(runs)
    ncols = math.ceil(len(columns) / 2)
    fig, axes = plt.subplots(2, ncols, figsize=(5.5 * ncols, 7.5), sharex=True, squeeze=False)
    for ax, name in zip(axes.flat, columns):
        for run in runs:
            x, y = column(run, name)
            ax.plot(x, y, marker="o", ms=3, label=run["label"])
        ax.set_title(PANEL_TITLES.get(name, name.removeprefix("train_")))
        values = [v for run in runs for v in column(run, name)[1] if math.isfinite(v)]
        if name != "beta" and values and all(v > 0 for v in values):
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(columns):]:
        ax.set_visible(False)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    _legend(axes[0, 0])
    fig.suptitle("Training loss per epoch")
    return _save(fig, path)


def plot_teacher_forcing(runs, path):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        line, = left.plot(*column(run, "tfr"), label=run["label"])
        left.plot(*column(run, "tf_on_frac"), "x", color=line.get_color(), ms=6)
        right.plot(*column(run, "train_loss"), marker="o", ms=3, label=run["label"])
    left.plot([], [], "x", color="black", label="x: share of predicted frames forced")
    left.set(title="Teacher-forcing ratio (line: schedule)", xlabel="epoch", ylabel="ratio",
             ylim=(-0.05, 1.05))
    right.set(title="Training loss", xlabel="epoch", ylabel="loss")
    if all(v > 0 for run in runs for v in column(run, "train_loss")[1]):
        right.set_yscale("log")
    _legend(left, fontsize=9)
    _legend(right, fontsize=9)
    return _save(fig, path)


def plot_val_psnr(runs, path):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run in runs:
        ax.plot(*column(run, "val_psnr"), marker="o", ms=3, label=run["label"])
    ax.set(title="Validation PSNR (mean over predicted frames)", xlabel="epoch",
           ylabel="PSNR (dB)")
    _legend(ax)
    return _save(fig, path)


def plot_frame_psnr(runs, path, which=("best",)):
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for run in runs:
        drawn = set()
        for key in which:
            row = run[key]
            if row and row["epoch"] in drawn:   # the latest epoch is also the best
                continue
            curve = row and read_frame_psnr(run["dir"], row["epoch"])
            if not curve:
                continue
            drawn.add(row["epoch"])
            frames, psnr = curve
            mean = sum(psnr) / len(psnr)
            names = " = ".join(k for k in which if run[k] and run[k]["epoch"] == row["epoch"])
            ax.plot(frames, psnr, lw=1,
                    label=f"{run['label']}, {names} epoch {row['epoch']}: mean {mean:.2f} dB")
    title = "Per-frame PSNR of the validation rollout"
    if len(runs) == 1 and runs[0]["best"]:
        title += f" (best epoch mean {runs[0]['best']['val_psnr']:.2f} dB)"
    ax.set(title=title, xlabel="predicted frame index", ylabel="PSNR (dB)")
    _legend(ax, fontsize=9)
    return _save(fig, path)


def plot_runs(runs, out_dir, frame_curves=("best",)):
    """Every report figure for a list of loaded runs; returns the written paths."""
    runs = [r for r in runs if r["rows"]]
    if not runs:
        return []
    out_dir = Path(out_dir)
    return [plot_losses(runs, out_dir / "loss.png"),
            plot_teacher_forcing(runs, out_dir / "teacher_forcing.png"),
            plot_val_psnr(runs, out_dir / "val_psnr.png"),
            plot_frame_psnr(runs, out_dir / "psnr_per_frame.png", frame_curves)]


def plot_run(run_dir):
    """The figures of one run, into <run_dir>/plots/."""
    return plot_runs([load_run(run_dir)], Path(run_dir) / "plots", ("latest", "best"))
