"""Validate a submission.csv and score it with the Kaggle grader's metric.

    python tools/score_submission.py SUBMISSION.csv --gt DIR_or_CSV

Per row: MSE on the 0..255 scale and PSNR with data range 255; rows whose
frame index (id % 630) is 0 or 601 and above are skipped; the score is the
mean. Public = sequences 0-2, private = 3-4. A perfect frame (MSE 0) is
capped at 100 dB.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import tool_parser  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402
from utils.metrics import grader_scores  # noqa: E402
from utils.submission import load_ground_truth, match_rows, read_submission  # noqa: E402


def score(submission, gt):
    """Scores of a submission file against ground truth (folder or CSV)."""
    pred_ids, pred_rows = read_submission(submission)
    true_ids, true_rows = load_ground_truth(gt)
    ids, pred_rows, true_rows = match_rows(pred_ids, pred_rows, true_ids, true_rows)
    return grader_scores(pred_rows, true_rows, ids)


def format_scores(result):
    lines = [f"score (grader's metric, mean PSNR over scored frames): {result['score']:.4f} dB",
             f"  public  (sequences 0-2): {result['public']:.4f} dB",
             f"  private (sequences 3-4): {result['private']:.4f} dB"]
    lines += [f"  sequence {s}: {v:.4f} dB" for s, v in result["per_sequence"].items()]
    return "\n".join(lines)


@exit_on_user_error
def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("submission", help="the submission.csv to check and score")
    parser.add_argument("--gt", required=True,
                        help="ground truth: a folder of <i>/frame<N>.png or a CSV")
    parser.add_argument("--json", default=None, help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    result = score(args.submission, args.gt)
    print(format_scores(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
