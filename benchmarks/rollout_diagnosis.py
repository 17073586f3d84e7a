"""Where a rollout loses PSNR: error carried along the rollout, or frames that are harder.

    python benchmarks/rollout_diagnosis.py --DR <dataset> --ckpt_path <ckpt> [Tester.py flags]

Each sequence with true frames is predicted twice with the same weights and
z = 0: rolled out from frame 0, as Tester.py submits it, and frame by frame
from the true previous frame ("one step"). Per window of frames it prints
both PSNRs: where they agree, the loss is in the frames themselves, not
accumulated along the rollout. Then the one-step PSNR by where the dancer
stands (the pose's horizontal centre, in fifths of the width), on those
sequences and on training frames the model learned from: where both fall the
same way, the frames there are harder to render, not unseen. Last, where the
rolled-out error is: its share in the dancer, the top rows (the studio's
ceiling lights) and the border, and the PSNR with a perfect background or a
perfect dancer, which says which of the two the next gain must come from.

The sequences are the test split's when <DR>/test_gt/<i>/frame<N>.png holds
their true frames (the synthetic dataset writes them; Kaggle's data has
none), else the val video. PSNR is on the loader's float frames, as
validation computes it. Other flags are Tester.py's (e.g. --bn_rollout).
"""
import json
from pathlib import Path

import torch
import torch.nn.functional as F

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

from dataloader import DanceTestSequences, paired_files, to_unit_float  # noqa: E402
from Tester import get_tester_parser, load_test_model  # noqa: E402
from utils.flags import parse_args  # noqa: E402
from utils.cli import tool_parser  # noqa: E402
from utils.errors import UserError, exit_on_user_error  # noqa: E402
from utils.images import list_images, read_images  # noqa: E402
from utils.metrics import psnr_per_frame  # noqa: E402
from utils.pose import pose_centre  # noqa: E402

POSITION_BINS = 5
TOP_ROWS = 8          # the top quarter of a 32-row frame: the studio's ceiling lights
BORDER = 2            # pixels at each edge, where the convolutions see their zero padding
DANCER_GROWTH = 2     # pixels the dancer's mask grows by, for the edges of the limbs


def by_position(psnr, centre, bins=POSITION_BINS):
    """Mean PSNR and frame count per horizontal bin of the pose centre (frames
    without a pose left out): [(low, high, mean or None, count)]."""
    index = (centre * bins).floor().clamp(max=bins - 1)   # NaN matches no bin
    rows = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        rows.append((b / bins, (b + 1) / bins, float(psnr[inside].mean()) if count else None,
                     count))
    return rows


def dancer_mask(frames):
    """The dancer, as tools/dataset_stats.py finds it (pixels darker than 0.6 of the
    frame's median brightness), grown by DANCER_GROWTH: (N, 3, H, W) -> (N, H, W)."""
    lum = frames.float().mean(dim=1)
    dark = lum < 0.6 * lum.flatten(1).median(dim=1).values[:, None, None]
    size = 2 * DANCER_GROWTH + 1
    return F.max_pool2d(dark.float()[:, None], size, stride=1, padding=DANCER_GROWTH)[:, 0] > 0


def by_region(predicted, truth):
    """Where the squared error of predicted frames (N, 3, H, W) is: per region its
    share of the error and of the pixels (regions overlap), and the mean PSNR with
    a perfect background (the dancer as predicted) or a perfect dancer."""
    error = (predicted.float() - truth.float()).pow(2).mean(dim=1)          # (N, H, W)
    dancer = dancer_mask(truth)
    top = torch.zeros_like(dancer)
    top[:, :TOP_ROWS] = True
    border = torch.ones_like(dancer)
    border[:, BORDER:-BORDER, BORDER:-BORDER] = False
    regions = {"dancer": dancer, "top rows": top, "border": border}
    composite = lambda keep: torch.where(keep[:, None], predicted, truth)  # noqa: E731
    return {"shares": {name: (float(error[mask].sum() / error.sum()), float(mask.float().mean()))
                       for name, mask in regions.items()},
            "psnr": float(psnr_per_frame(predicted, truth).mean()),
            "perfect_background": float(psnr_per_frame(composite(dancer), truth).mean()),
            "perfect_dancer": float(psnr_per_frame(composite(~dancer), truth).mean())}


def windows(rollout, one_step, size):
    """Per window of predicted frames 1.., both PSNRs: [(first, last, rollout, one_step)]."""
    return [(start + 1, min(start + size, len(rollout)),
             float(rollout[start:start + size].mean()), float(one_step[start:start + size].mean()))
            for start in range(0, len(rollout), size)]


def read_split(root, split, frame_size, limit=None):
    """The first ``limit`` (all by default) frames and labels of the train or val
    split: two (T, 3, H, W) tensors in [0, 1]."""
    split_dir = Path(root) / split
    files = paired_files(split_dir / f"{split}_img", split_dir / f"{split}_label")
    return tuple(to_unit_float(read_images(f[:limit], frame_size)) for f in files)


def load_sequences(root, frame_size):
    """[(name, frames (T, 3, H, W), labels (T, 3, H, W))] with true frames in [0, 1]."""
    root = Path(root)
    gt_root = root / "test_gt"
    if gt_root.is_dir():
        test = DanceTestSequences(root, frame_size)
        sequences = []
        for name, (_, labels) in zip(test.names, (test[i] for i in range(len(test)))):
            truth = list_images(gt_root / name)
            if len(truth) != len(labels):
                raise UserError(f"'{gt_root / name}' holds {len(truth)} frames for "
                                f"{len(labels)} labels; the true frames must match the labels "
                                "one to one.")
            sequences.append((f"test {name}", to_unit_float(read_images(truth, frame_size)),
                              labels))
        return sequences
    return [("val", *read_split(root, "val", frame_size))]


def one_step_psnr(model, frames, labels):
    """One-step PSNR and pose centre of frames 1.. of one sequence (T, 3, H, W)."""
    frames, labels = frames[None].to(model.device), labels[None].to(model.device)
    stepped = model.predict_from_truth(frames, labels)
    return (psnr_per_frame(stepped[0, 1:], frames[0, 1:]).cpu(),
            pose_centre(labels[0, 1:].cpu())[:, 0])


def diagnose(model, sequences, train, window=100):
    """The report as a dict: per sequence, PSNR per window rolled out and one step;
    one-step PSNR by pose position on the sequences and on ``train`` (frames,
    labels) or None."""
    report = {"sequences": {}, "by_position": {}}
    psnr_all, centre_all, rolled_all = [], [], []
    for name, frames, labels in sequences:
        rolled = model.rollout(frames[None, 0].to(model.device), labels[None].to(model.device),
                               z_scale=0)
        rolled_all.append(rolled[0, 1:].cpu())
        psnr_roll = psnr_per_frame(rolled[0, 1:].cpu(), frames[1:])
        psnr_step, centre = one_step_psnr(model, frames, labels)
        report["sequences"][name] = windows(psnr_roll, psnr_step, window)
        psnr_all.append(psnr_step)
        centre_all.append(centre)
    report["by_position"]["sequences"] = by_position(torch.cat(psnr_all), torch.cat(centre_all))
    if train is not None:
        report["by_position"]["train"] = by_position(*one_step_psnr(model, *train))
    report["by_region"] = by_region(torch.cat(rolled_all),
                                    torch.cat([frames[1:] for _, frames, _ in sequences]))
    return report


def format_report(report):
    lines = []
    for name, rows in report["sequences"].items():
        lines.append(f"{name}: PSNR (dB) rolled out | one step from the true previous frame")
        lines += [f"  frames {first:>4}-{last:<4} {roll:6.2f} | {step:6.2f}   "
                  f"rollout {roll - step:+.2f}" for first, last, roll, step in rows]
    lines.append("one-step PSNR (dB) by the pose's horizontal centre (frames):")
    for split, rows in report["by_position"].items():
        cells = [f"{low:.1f}-{high:.1f}: " + ("  n/a" if mean is None else f"{mean:5.2f}")
                 + f" ({count})" for low, high, mean, count in rows]
        lines.append(f"  {split:<9} " + "   ".join(cells))
    region = report["by_region"]
    lines.append("where the rolled-out error is (share of the squared error | of the pixels):")
    lines.append("  " + "   ".join(f"{name} {error:.0%} | {area:.0%}" for name, (error, area)
                                    in region["shares"].items()))
    lines.append(f"  PSNR {region['psnr']:.2f} dB; with a perfect background "
                 f"{region['perfect_background']:.2f}, with a perfect dancer "
                 f"{region['perfect_dancer']:.2f}")
    return "\n".join(lines)


@exit_on_user_error
def main(argv=None):
    parser = tool_parser(__doc__, epilog="--DR and --ckpt_path are required; every other "
                         "flag is Tester.py's (python Tester.py --help).")
    parser.add_argument("--train_frames", type=int, default=3150,
                        help="how many training frames (the first ones) to predict one step; "
                        "0 skips them")
    parser.add_argument("--window", type=int, default=100, help="frames per window")
    parser.add_argument("--json", default=None, help="also write the report to this JSON file")
    own, rest = parser.parse_known_args(argv)
    if own.window < 1 or own.train_frames < 0:
        raise UserError(f"--window must be >= 1 and --train_frames >= 0, got {own.window} and "
                        f"{own.train_frames}.")
    args = parse_args(rest, parser=get_tester_parser(paths_required=False))
    model = load_test_model(args)
    frame_size = (args.frame_H, args.frame_W)
    sequences = load_sequences(args.DR, frame_size)
    train = None
    if own.train_frames > 1:
        train = read_split(args.DR, "train", frame_size, own.train_frames)
    report = diagnose(model, sequences, train, own.window)
    print(format_report(report))
    if own.json:
        Path(own.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
