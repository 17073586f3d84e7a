"""submission.csv: writing, reading, validating, and ground truth for scoring.

Format (the Kaggle competition's): header ``id,0,1,...,6143``; one row per
frame, sequence-major (row 630*i is the given first frame of sequence i);
each row is a (3, 32, 64) frame flattened in (C, H, W) order as integers
round(pixel * 255) in 0..255.
"""
from pathlib import Path

import numpy as np

from utils.errors import UserError
from utils.fileio import atomic_write
from utils.images import list_images, read_images, to_uint8
from utils.metrics import FRAMES_PER_SEQUENCE

FRAME_SHAPE = (3, 32, 64)
FRAME_SIZE = FRAME_SHAPE[1:]     # (H, W): the size every frame is loaded and scored at
PIXELS = int(np.prod(FRAME_SHAPE))
MAX_LISTED = 5  # problems of one kind listed before "and N more"


def to_rows(frames):
    """(T, 3, H, W) floats in [0, 1] -> (T, 3*H*W) uint8, rounded and clipped."""
    return to_uint8(frames).flatten(1).numpy()


# "0" .. "255", indexed by a row of uint8 values: 6x faster than str() per value.
_DECIMAL = np.array([str(v) for v in range(256)], dtype=object)


def write_submission(path, sequences):
    """Write a list of (T, 3, H, W) frame tensors (one per sequence) as the CSV."""
    rows = np.concatenate([to_rows(s) for s in sequences])

    def write(f):
        f.write("id," + ",".join(map(str, range(rows.shape[1]))) + "\n")
        for i, row in enumerate(rows):
            f.write(f"{i}," + ",".join(_DECIMAL[row]) + "\n")

    return atomic_write(path, write, text=True)


def listed(kind, items):
    shown = ", ".join(map(str, items[:MAX_LISTED]))
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{kind}: {shown}{more}"


def read_submission(path, expected_rows=None, check_range=True):
    """Read and validate a submission CSV -> (ids (N,), rows (N, 6144) int).

    Every problem found (header, column counts, non-integers, values outside
    0..255, ids, row count) is listed in one UserError. With ``check_range``
    False, values outside 0..255 alone are no error (the caller reports them).
    """
    ids, rows, _ = _read_table(path, expected_rows, check_range, what="submission")
    return ids, rows


def read_solution(path):
    """A ground-truth CSV -> (ids, rows, usage): the submission's format, or Kaggle's
    solution file, which has an extra ``Usage`` column (Public or Private per row);
    usage is None without it."""
    return _read_table(path, None, True, what="ground truth", usage_allowed=True)


def _parse_well_formed(path, expected_rows, check_range):
    """(ids, rows) of a file in the submission's exact format, parsed by numpy's C
    reader (8x faster than line by line); None if anything is off, so that the
    line-by-line reader can say what."""
    with open(path) as f:
        if f.readline().rstrip("\r\n") != "id," + ",".join(map(str, range(PIXELS))):
            return None
        try:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
        except ValueError:   # a non-integer, or rows of unequal length
            return None
    if table.shape[1:] != (PIXELS + 1,) or len(table) == 0:
        return None
    ids, rows = table[:, 0], table[:, 1:]
    if (not np.array_equal(ids, np.arange(len(table)))
            or (check_range and (rows.min() < 0 or rows.max() > 255))
            or (expected_rows is not None and len(table) != expected_rows)):
        return None
    return ids, rows


def _read_table(path, expected_rows, check_range, what, usage_allowed=False):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: '{path}'.")
    fast = _parse_well_formed(path, expected_rows, check_range)
    if fast is not None:
        return (*fast, None)
    problems, ids, rows, usage = [], [], [], []
    bad_columns, bad_values, out_of_range = [], [], []
    with path.open() as f:
        header = f.readline().rstrip("\r\n").split(",")
        usage_at = header.index("Usage") if usage_allowed and "Usage" in header else None
        if usage_at is not None:
            header.pop(usage_at)
        if header != ["id"] + [str(i) for i in range(PIXELS)]:
            problems.append(f"header must be 'id,0,1,...,{PIXELS - 1}' "
                            f"({len(header)} columns found, starting {header[:3]})")
        for line_no, line in enumerate(f, start=2):
            parts = line.rstrip("\r\n").split(",")
            if len(parts) != PIXELS + 1 + (usage_at is not None):
                bad_columns.append(f"line {line_no} ({len(parts)})")
                continue
            if usage_at is not None:
                usage.append(parts.pop(usage_at))
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
        columns = PIXELS + 1 + (usage_at is not None)
        problems.append(listed(f"rows without {columns} columns", bad_columns))
    if bad_values:
        problems.append(listed("rows with non-integer values", bad_values))
    if out_of_range and (check_range or problems):
        problems.append(listed("rows with values outside 0..255", out_of_range))
    if ids and ids != list(range(len(ids))):
        wrong = [f"line {i + 2} (id {v})" for i, v in enumerate(ids) if v != i]
        problems.append(listed("ids must run 0, 1, 2, ... in order; wrong at", wrong))
    if expected_rows is not None and len(ids) + len(bad_columns) + len(bad_values) != expected_rows:
        problems.append(f"{expected_rows} rows expected, "
                        f"{len(ids) + len(bad_columns) + len(bad_values)} found")
    if problems:
        raise UserError(f"'{path}' is not a valid {what}:\n  - " + "\n  - ".join(problems))
    rows = np.stack(rows) if rows else np.zeros((0, PIXELS), np.int64)
    return np.array(ids), rows, np.array(usage) if usage_at is not None else None


def load_ground_truth(source, frame_size=FRAME_SIZE):
    """Ground truth as CSV rows -> (ids, rows, usage): a CSV (a submission or Kaggle's
    solution file, see read_solution), or a folder of sequences ``<i>/frame<N>.png``
    (resized like the loader; usage None)."""
    source = Path(source)
    if source.is_file():
        return read_solution(source)
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
    return np.concatenate(ids), np.concatenate(rows), None


def match_rows(pred_ids, true_ids):
    """Ids present in both, and where each sits in the submission and in the truth."""
    common, pred_at, true_at = np.intersect1d(pred_ids, true_ids, return_indices=True)
    if common.size == 0:
        raise UserError("the submission and the ground truth share no ids.")
    return common, pred_at, true_at
