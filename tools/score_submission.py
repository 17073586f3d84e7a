"""Validate a submission.csv and score it with the Kaggle grader's metric.

    python tools/score_submission.py SUBMISSION.csv --gt DIR_or_CSV

Per row: MSE on the 0..255 scale and PSNR with data range 255; rows whose
frame index (id % 630) is 0 or 601 and above are skipped; the score is the
mean. Public = sequences 0-2, private = 3-4, or the rows that the Usage
column of Kaggle's solution file marks Public and Private. A perfect frame
(MSE 0) is capped at 100 dB. With fewer than 5 sequences in the ground truth,
every figure is over those present. Values outside 0..255 are an error whose
message gives the score the grader would have given them.
"""
import json
from pathlib import Path

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

from utils.cli import tool_parser  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402
from utils.scoring import format_scores, score  # noqa: E402


@exit_on_user_error
def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("submission", help="the submission.csv to check and score")
    parser.add_argument("--gt", required=True,
                        help="ground truth: a folder of <i>/frame<N>.png, a CSV, or Kaggle's "
                        "solution file (with its Usage column)")
    parser.add_argument("--json", default=None, help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    result = score(args.submission, args.gt)
    print(format_scores(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
