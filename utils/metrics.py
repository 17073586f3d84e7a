"""PSNR for validation and the Kaggle grader's metric."""
import numpy as np
import torch

FRAMES_PER_SEQUENCE = 630
REAL_TRAIN_FRAMES = 23_410     # frames (and labels) of the course's real training split
SCORED_FRAMES = range(1, 601)  # the grader skips frame 0 and frames 601..629
PUBLIC_SEQUENCES = (0, 1, 2)
# MSE = 0 would give an infinite PSNR; the floor caps a perfect frame at 100 dB.
PSNR_CAP_DB = 100.0


def psnr_from_mse(mse, data_range=1.0):
    """The one PSNR formula: 10 log10(data_range^2 / MSE) in dB, capped at PSNR_CAP_DB.

    mse: a tensor or a numpy array (or scalar) of mean squared errors; the result
    is of the same kind and precision.
    """
    floor = data_range ** 2 * 10 ** (-PSNR_CAP_DB / 10)
    if isinstance(mse, torch.Tensor):
        return 10 * torch.log10(data_range ** 2 / mse.clamp_min(floor))
    return 10 * np.log10(data_range ** 2 / np.maximum(mse, floor))


def psnr_per_frame(pred, target, data_range=1.0):
    """PSNR of each frame: (..., C, H, W) -> (...), computed before any averaging.

    The template averaged the MSE over the batch before the log, which is wrong
    for batch size > 1; here every frame gets its own MSE.
    """
    return psnr_from_mse((pred.float() - target.float()).pow(2).flatten(-3).mean(-1), data_range)


def row_psnr(pred_rows, true_rows):
    """The grader's PSNR of each CSV row (values 0..255, data range 255)."""
    diff = np.asarray(pred_rows, dtype=np.float64) - np.asarray(true_rows, dtype=np.float64)
    return psnr_from_mse((diff ** 2).mean(axis=1), 255.0)


def grader_scores(pred_rows, true_rows, ids, usage=None):
    """The Kaggle metric on CSV rows (values 0..255).

    Per row MSE on the 0..255 scale and PSNR with data range 255; rows whose
    frame index (id % 630) is 0 or above 600 are skipped. Returns a dict with
    'score' (mean over scored rows), 'public' and 'private' (sequences 0-2 and
    the others, or the rows ``usage`` marks Public and Private as in Kaggle's
    solution file), 'per_sequence', and 'sequences' (those present). A part
    with no scored row is None.
    """
    ids = np.asarray(ids)
    frame = ids % FRAMES_PER_SEQUENCE
    scored = (frame >= SCORED_FRAMES.start) & (frame < SCORED_FRAMES.stop)
    psnr = row_psnr(np.asarray(pred_rows)[scored], np.asarray(true_rows)[scored])
    sequence = ids[scored] // FRAMES_PER_SEQUENCE
    if usage is None:
        public = np.isin(sequence, PUBLIC_SEQUENCES)
        private = ~public
    else:
        part = np.char.lower(np.asarray(usage, dtype=str)[scored])
        public, private = part == "public", part == "private"
    mean = lambda values: float(values.mean()) if values.size else None  # noqa: E731
    return {"score": mean(psnr), "public": mean(psnr[public]), "private": mean(psnr[private]),
            "per_sequence": {int(s): mean(psnr[sequence == s]) for s in np.unique(sequence)},
            "sequences": sorted(int(s) for s in np.unique(ids // FRAMES_PER_SEQUENCE))}
