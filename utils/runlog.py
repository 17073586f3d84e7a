"""What a run leaves on disk: args.json, metrics.csv and per-frame PSNR CSVs.

metrics.csv has one row per epoch and a column per value the run logs:
``epoch, lr, tfr, tf_on_frac, beta, train_loss``, one ``train_<term>`` per
named loss term (e.g. ``train_mse``, ``train_kl``) and ``train_grad_norm``,
then ``val_loss, val_psnr, best_val_psnr, epoch_seconds``. A column first
logged by a resumed run is added, earlier rows left blank there.

Every file is replaced whole through atomic_write: a full disk or a crash
mid-write leaves the previous version, never a truncated one.
"""
import csv
import json
from pathlib import Path

from utils.fileio import atomic_write

def write_args(save_root, args_dict):
    text = json.dumps(args_dict, indent=2, sort_keys=True) + "\n"
    atomic_write(Path(save_root) / "args.json", lambda f: f.write(text), text=True)


def write_csv(path, rows, fieldnames):
    """Rows of dicts under a header, replacing ``path`` atomically."""
    def write(f):
        writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    return atomic_write(path, write, text=True)


def read_table(path):
    """A CSV's header and rows (dicts of the strings written), or ([], []) when
    there is no file."""
    if not Path(path).exists():
        return [], []
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def read_rows(path):
    """A CSV's rows as dicts of the strings written, or [] when there is no file."""
    return read_table(path)[1]


def append_metrics(save_root, row):
    """Add one epoch's row to metrics.csv: the file is rewritten whole with it,
    its header extended by any column the row brings."""
    path = Path(save_root) / "metrics.csv"
    header, rows = read_table(path)
    write_csv(path, [*rows, row], [*header, *(k for k in row if k not in header)])


def truncate_metrics(save_root, keep_through_epoch):
    """Drop rows after ``keep_through_epoch`` (a resume redoes those epochs)."""
    path = Path(save_root) / "metrics.csv"
    header, rows = read_table(path)
    kept = [r for r in rows if int(float(r["epoch"])) <= keep_through_epoch]
    if len(kept) < len(rows):
        write_csv(path, kept, header)


def read_metrics(run_dir):
    """metrics.csv -> list of dicts with numbers (epoch as int)."""
    rows = []
    for raw in read_rows(Path(run_dir) / "metrics.csv"):
        row = {k: float(v) if v not in ("", None) else float("nan") for k, v in raw.items()}
        row["epoch"] = int(row["epoch"])
        rows.append(row)
    return rows


def write_frame_psnr(save_root, epoch, psnr_values):
    rows = [{"frame": frame, "psnr": f"{value:.4f}"}
            for frame, value in enumerate(psnr_values, start=1)]
    write_csv(Path(save_root) / f"val_psnr_epoch{epoch}.csv", rows, ["frame", "psnr"])


def read_frame_psnr(run_dir, epoch):
    """val_psnr_epoch<epoch>.csv -> (frame numbers, PSNR values), or None."""
    path = Path(run_dir) / f"val_psnr_epoch{epoch}.csv"
    if not path.exists():
        return None
    rows = read_rows(path)
    return [int(r["frame"]) for r in rows], [float(r["psnr"]) for r in rows]
