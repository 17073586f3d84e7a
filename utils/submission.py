"""submission.csv: writing, reading, validating, and ground truth for scoring.

Format (the Kaggle competition's): header ``id,0,1,...,6143``; one row per
frame, sequence-major (row 630*i is the given first frame of sequence i);
each row is a (3, 32, 64) frame flattened in (C, H, W) order as integers
round(pixel * 255) in 0..255.
"""
from pathlib import Path

import numpy as np
import torch

from dataloader import list_images, read_images
from utils.errors import UserError
from utils.metrics import FRAMES_PER_SEQUENCE

FRAME_SHAPE = (3, 32, 64)
PIXELS = int(np.prod(FRAME_SHAPE))
MAX_LISTED = 5  # problems of one kind listed before "and N more"


def to_rows(frames):
    """(T, 3, H, W) floats in [0, 1] -> (T, 3*H*W) uint8, rounded and clipped."""
    return frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).flatten(1).cpu().numpy()


def write_submission(path, sequences):
    """Write a list of (T, 3, H, W) frame tensors (one per sequence) as the CSV."""
    rows = np.concatenate([to_rows(s) for s in sequences])
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        f.write("id," + ",".join(map(str, range(rows.shape[1]))) + "\n")
        for i, row in enumerate(rows):
            f.write(f"{i}," + ",".join(map(str, row.tolist())) + "\n")
    tmp.replace(path)
    return path


def _listed(kind, items):
    shown = ", ".join(map(str, items[:MAX_LISTED]))
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{kind}: {shown}{more}"


def read_submission(path, expected_rows=None):
    """Read and validate a submission CSV -> (ids (N,), rows (N, 6144) int).

    Every problem found (header, column counts, non-integers, values outside
    0..255, ids, row count) is listed in one UserError.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"submission not found: '{path}'.")
    problems, ids, rows = [], [], []
    bad_columns, bad_values, out_of_range = [], [], []
    with path.open() as f:
        header = f.readline().rstrip("\r\n").split(",")
        if header != ["id"] + [str(i) for i in range(PIXELS)]:
            problems.append(f"header must be 'id,0,1,...,{PIXELS - 1}' "
                            f"({len(header)} columns found, starting {header[:3]})")
        for line_no, line in enumerate(f, start=2):
            parts = line.rstrip("\r\n").split(",")
            if len(parts) != PIXELS + 1:
                bad_columns.append(f"line {line_no} ({len(parts)})")
                continue
            try:
                values = np.array(parts, dtype=np.float64)
            except ValueError:
                bad_values.append(f"line {line_no}")
                continue
            if not np.all(values == np.round(values)):
                bad_values.append(f"line {line_no}")
                continue
            if values[1:].min() < 0 or values[1:].max() > 255:
                out_of_range.append(f"line {line_no}")
            ids.append(int(values[0]))
            rows.append(values[1:].astype(np.int64))
    if bad_columns:
        problems.append(_listed(f"rows without {PIXELS + 1} columns", bad_columns))
    if bad_values:
        problems.append(_listed("rows with non-integer values", bad_values))
    if out_of_range:
        problems.append(_listed("rows with values outside 0..255", out_of_range))
    if ids and ids != list(range(len(ids))):
        wrong = [f"line {i + 2} (id {v})" for i, v in enumerate(ids) if v != i]
        problems.append(_listed("ids must run 0, 1, 2, ... in order; wrong at", wrong))
    if expected_rows is not None and len(ids) + len(bad_columns) + len(bad_values) != expected_rows:
        problems.append(f"{expected_rows} rows expected, "
                        f"{len(ids) + len(bad_columns) + len(bad_values)} found")
    if problems:
        raise UserError(f"'{path}' is not a valid submission:\n  - " + "\n  - ".join(problems))
    return np.array(ids), np.stack(rows) if rows else np.zeros((0, PIXELS), np.int64)


def load_ground_truth(source, frame_size=FRAME_SHAPE[1:]):
    """Ground truth as CSV rows -> (ids, rows): a CSV in the submission's format,
    or a folder of sequences ``<i>/frame<N>.png`` (resized like the loader)."""
    source = Path(source)
    if source.is_file():
        return read_submission(source)
    if not source.is_dir():
        raise UserError(f"ground truth not found: '{source}' (--gt): give a folder of "
                        "<i>/frame<N>.png sequences or a CSV.")
    folders = sorted((p for p in source.iterdir() if p.is_dir() and p.name.isdigit()),
                     key=lambda p: int(p.name))
    if not folders:
        raise UserError(f"'{source}' holds no sequence folders named 0, 1, ... (--gt).")
    ids, rows = [], []
    for folder in folders:
        frames = read_images(list_images(folder), tuple(frame_size))
        rows.append(frames.flatten(1).numpy().astype(np.int64))
        ids.append(int(folder.name) * FRAMES_PER_SEQUENCE + np.arange(len(frames)))
    return np.concatenate(ids), np.concatenate(rows)


def match_rows(pred_ids, pred_rows, true_ids, true_rows):
    """Rows of both, aligned on id (ids present in only one are dropped)."""
    common, pred_at, true_at = np.intersect1d(pred_ids, true_ids, return_indices=True)
    if common.size == 0:
        raise UserError("the submission and the ground truth share no ids.")
    return common, pred_rows[pred_at], true_rows[true_at]
