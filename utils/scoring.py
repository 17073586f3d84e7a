"""Score a submission.csv against ground truth with the Kaggle grader's metric."""
import numpy as np

from utils.errors import UserError
from utils.metrics import PUBLIC_SEQUENCES, grader_scores
from utils.submission import listed, load_ground_truth, match_rows, read_submission

SEQUENCES = 5  # in the competition's test split


def aligned_with_truth(pred_ids, pred_rows, gt):
    """A submission's rows beside the ground truth's, matched by id: (ids, predicted
    rows, true rows, usage or None), in id order, only ids present in both. gt: a
    folder, a CSV, or Kaggle's solution file with its Usage column."""
    true_ids, true_rows, usage = load_ground_truth(gt)
    ids, pred_at, true_at = match_rows(pred_ids, true_ids)
    return ids, pred_rows[pred_at], true_rows[true_at], None if usage is None else usage[true_at]


def score(submission, gt):
    """Scores of a submission file against ground truth (a folder, a CSV, or
    Kaggle's solution file with its Usage column); see grader_scores.

    Values outside 0..255 stay an error, since a submission must not hold them,
    but the message gives the score the grader would have given the raw values.
    """
    pred_ids, pred_rows = read_submission(submission, check_range=False)
    ids, pred, true, usage = aligned_with_truth(pred_ids, pred_rows, gt)
    parts = [pred, true, ids, usage]
    result = grader_scores(*parts)
    result["split"] = "sequences" if usage is None else "usage"
    outside = np.flatnonzero((pred_rows < 0).any(1) | (pred_rows > 255).any(1))
    if outside.size:
        clipped = grader_scores(np.clip(parts[0], 0, 255), *parts[1:])
        rows = listed("rows with values outside 0..255", [f"line {i + 2}" for i in outside])
        raise UserError(
            f"'{submission}' is not a valid submission: {rows}. "
            f"The grader would still score the raw values: {_db(result['score'])} (clipped to "
            f"0..255: {_db(clipped['score'])}). Clip every value to 0..255 before uploading; "
            "Tester.py writes clipped values.")
    return result


def _db(value):
    return "no scored frame" if value is None else f"{value:.4f} dB"


def format_scores(result):
    """The scores as printed by the scorer and the Tester. Parts or sequences
    missing from the ground truth are named, never shown as nan."""
    present = result["sequences"]
    if result.get("split") == "usage":
        public, private = "rows marked Public", "rows marked Private"
    else:
        public = _part("sequences 0-2", [s for s in present if s in PUBLIC_SEQUENCES], 3)
        private = _part("sequences 3-4", [s for s in present if s not in PUBLIC_SEQUENCES], 2)
    lines = [f"score (grader's metric, mean PSNR over scored frames): {_db(result['score'])}",
             f"  public  ({public}): {_db(result['public'])}",
             f"  private ({private}): {_db(result['private'])}"]
    lines += [f"  sequence {s}: {_db(v)}" for s, v in result["per_sequence"].items()]
    if len(present) < SEQUENCES:
        lines.append(f"note: the ground truth holds {len(present)} of the {SEQUENCES} test "
                     f"sequences ({', '.join(map(str, present))}); every figure is over those "
                     "only.")
    return "\n".join(lines)


def _part(name, present, full):
    if len(present) == full:
        return name
    return f"{name}; here " + (", ".join(map(str, present)) if present else "none present")
