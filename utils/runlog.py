"""What a run leaves on disk: args.json, metrics.csv and per-frame PSNR CSVs."""
import csv
import json
from pathlib import Path

METRIC_COLUMNS = ["epoch", "lr", "tfr", "tf_on_frac", "beta", "train_loss", "train_mse",
                  "train_kl", "val_loss", "val_psnr", "best_val_psnr", "epoch_seconds"]


def write_args(save_root, args_dict):
    path = Path(save_root) / "args.json"
    path.write_text(json.dumps(args_dict, indent=2, sort_keys=True) + "\n")


def append_metrics(save_root, row):
    """Append one epoch's row to metrics.csv, writing the header for a new file."""
    path = Path(save_root) / "metrics.csv"
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def truncate_metrics(save_root, keep_through_epoch):
    """Drop rows after ``keep_through_epoch`` (a resume redoes those epochs)."""
    rows = read_metrics(save_root)
    kept = [r for r in rows if r["epoch"] <= keep_through_epoch]
    if len(kept) == len(rows):
        return
    path = Path(save_root) / "metrics.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)


def read_metrics(run_dir):
    """metrics.csv -> list of dicts with numbers (epoch as int)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row = {k: float(v) if v not in ("", None) else float("nan") for k, v in raw.items()}
            row["epoch"] = int(row["epoch"])
            rows.append(row)
    return rows


def write_frame_psnr(save_root, epoch, psnr_values):
    path = Path(save_root) / f"val_psnr_epoch{epoch}.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "psnr"])
        for frame, value in enumerate(psnr_values, start=1):
            writer.writerow([frame, f"{value:.4f}"])


def read_frame_psnr(run_dir, epoch):
    """val_psnr_epoch<epoch>.csv -> (frame numbers, PSNR values), or None."""
    path = Path(run_dir) / f"val_psnr_epoch{epoch}.csv"
    if not path.exists():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [int(r["frame"]) for r in rows], [float(r["psnr"]) for r in rows]
