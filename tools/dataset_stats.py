"""Measure a dance dataset the way the real one was measured, to compare the two.

    python tools/dataset_stats.py DIR [--train_takes N] [--json FILE]

DIR has the Lab 4 layout (real or synthetic). Every figure is computed at 32x64,
after the loader's own resize (dataloader.read_images), per sequence: the val
video, each test sequence whose true frames are in DIR/test_gt/<i>/ (labels only
otherwise) and the training split cut into 630-frame takes. The table gives each
figure's range over the sequences beside the real data's.

The dancer is found as the largest connected set of pixels darker than 0.6 of the
frame's median brightness (dark clothes in a light studio); label ink is any pixel
whose darkest channel is below 250.
"""
import json
import sys
from pathlib import Path

import numpy as np

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

from dataloader import list_images, read_images, require_dir  # noqa: E402
from utils.cli import tool_parser  # noqa: E402
from utils.errors import UserError, exit_on_user_error  # noqa: E402
from utils.metrics import FRAMES_PER_SEQUENCE, SCORED_FRAMES, psnr_from_mse  # noqa: E402
from utils.submission import FRAME_SIZE  # noqa: E402

INK = 250

# figure -> (label, unit, real range, decimals). Studio mean, ink and PSNR ranges were
# measured on six public real sequences; dancer size and the top light on the real
# reference frames; the dancer's x only as "from 1 to 61 in some sequences".
FIGURES = {
    "mean_r": ("studio mean R", "", (157, 164), 0),
    "mean_g": ("studio mean G", "", (156, 163), 0),
    "mean_b": ("studio mean B", "", (155, 161), 0),
    "top_light": ("top light above mean", "", (62, 72), 0),
    "dancer_height": ("dancer height", "px", (22, 27), 1),
    "dancer_width": ("dancer width", "px", (7, 13), 1),
    "dancer_pixels": ("dancer pixels", "%", (4.7, 6.0), 2),
    "x_min": ("dancer x, lowest", "px", (1, 32), 0),
    "x_max": ("dancer x, highest", "px", (32, 61), 0),
    "ink": ("label ink", "%", (4.6, 5.5), 2),
    "ink_mean": ("mean darkest channel of ink", "", (223, 226), 1),
    "ink_darkest": ("darkest label pixel", "", (127, 137), 0),
    "psnr_step": ("consecutive-frame PSNR", "dB", (36.2, 43.5), 1),
    "psnr_copy": ("copy-first PSNR, frames 1..600", "dB", (15.4, 35.5), 1),
}


def psnr(a, b):
    """PSNR per frame (dB, data range 255, capped like every PSNR of the project) of
    uint8 arrays (..., 3, H, W)."""
    mse = ((a.astype(np.float32) - b.astype(np.float32)) ** 2).mean(axis=(-3, -2, -1))
    return psnr_from_mse(mse, 255.0)


def box_mean(images, size):
    """Mean over a size x size window of each (N, H, W) image, edges repeated: the
    window of pixel i spans i - size // 2 .. i + (size - 1) // 2 on each axis."""
    before, after = size // 2, (size - 1) // 2
    padded = np.pad(images.astype(np.float64), ((0, 0), (before, after), (before, after)),
                    mode="edge")
    sums = np.pad(padded.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    H, W = images.shape[1:]
    return (sums[:, size:size + H, size:size + W] - sums[:, :H, size:size + W]
            - sums[:, size:size + H, :W] + sums[:, :H, :W]) / size ** 2


def largest_component(masks):
    """The largest 8-connected set of True pixels of each (N, H, W) mask (all False
    where a mask is empty); ties go to the set that starts first in raster order."""
    N, H, W = masks.shape
    none = H * W
    ids = np.where(masks, np.arange(none).reshape(1, H, W), none)
    while True:   # each pixel takes the lowest id among its neighbours until none changes
        padded = np.pad(ids, ((0, 0), (1, 1), (1, 1)), constant_values=none)
        lowest = np.min([padded[:, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
                         for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        lowest = np.where(masks, lowest, none)
        if np.array_equal(lowest, ids):
            break
        ids = lowest
    flat = ids.reshape(N, -1)
    counts = np.stack([np.bincount(row, minlength=none + 1)[:none] for row in flat])
    return (flat == counts.argmax(1)[:, None]).reshape(N, H, W) & masks


def frame_figures(frames):
    """Studio, dancer and motion figures of one sequence's frames (N, 3, H, W) uint8."""
    rgb = frames.reshape(len(frames), 3, -1).mean(axis=(0, 2))
    lum = frames.astype(np.float32).mean(axis=1)
    blocks = box_mean(lum[:, : FRAME_SIZE[0] // 4], 8)
    figures = dict(mean_r=rgb[0], mean_g=rgb[1], mean_b=rgb[2],
                   top_light=float((blocks.max(axis=(1, 2)) - lum.mean(axis=(1, 2))).mean()))
    heights, widths, sizes, centres = [], [], [], []
    masks = lum < 0.6 * np.median(lum, axis=(1, 2), keepdims=True)
    for mask, biggest in zip(masks, largest_component(masks)):
        if not mask.any():
            continue
        rows, cols = np.nonzero(biggest)
        heights.append(rows.max() - rows.min() + 1)
        widths.append(cols.max() - cols.min() + 1)
        sizes.append(100 * mask.mean())
        centres.append(cols.mean())
    if centres:
        figures.update(dancer_height=np.median(heights), dancer_width=np.median(widths),
                       dancer_pixels=np.mean(sizes), x_min=min(centres), x_max=max(centres))
    if len(frames) > 1:
        figures["psnr_step"] = psnr(frames[1:], frames[:-1]).mean()
        scored = frames[SCORED_FRAMES.start:SCORED_FRAMES.stop]   # 1..600, or as many as there are
        figures["psnr_copy"] = psnr(scored, frames[:1]).mean()
    return figures


def label_figures(labels):
    """Ink figures of one sequence's labels (N, 3, H, W) uint8."""
    darkest = labels.min(axis=1)
    ink = darkest < INK
    return dict(ink=100 * ink.mean(), ink_mean=darkest[ink].mean() if ink.any() else 255.0,
                ink_darkest=float(darkest.min()))


def sequences(root, train_takes=None):
    """(name, frame files or None, label files) of every sequence found under root."""
    root = require_dir(root, "dataset folder")
    found = []
    val_img = root / "val" / "val_img"
    if val_img.is_dir():
        frames = list_images(val_img)
        found.append(("val", frames, [root / "val" / "val_label" / f.name for f in frames]))
    label_root = root / "test" / "test_label"
    if label_root.is_dir():
        for folder in sorted((p for p in label_root.iterdir() if p.is_dir()),
                             key=lambda p: (len(p.name), p.name)):
            truth = root / "test_gt" / folder.name
            found.append((f"test/{folder.name}", list_images(truth) if truth.is_dir() else None,
                          list_images(folder)))
    train_img = root / "train" / "train_img"
    if train_img.is_dir():
        frames = list_images(train_img)
        starts = range(0, len(frames) - 1, FRAMES_PER_SEQUENCE)
        for k in list(starts)[:train_takes]:
            take = frames[k:k + FRAMES_PER_SEQUENCE]
            found.append((f"train {k}-{k + len(take) - 1}", take,
                          [root / "train" / "train_label" / f.name for f in take]))
    if not found:
        raise UserError(f"no val, test or train sequences found under '{root}'; expected the "
                        "Lab 4 layout (see dataloader.py)")
    return found


def measure(root, train_takes=None, workers=4):
    """Figures of every sequence: {name: {figure: value}}."""
    results = {}
    for name, frames, labels in sequences(root, train_takes):
        figures = label_figures(read_images(labels, FRAME_SIZE, workers).numpy())
        if frames:
            figures.update(frame_figures(read_images(frames, FRAME_SIZE, workers).numpy()))
        results[name] = {k: float(v) for k, v in figures.items()}
    return results


def table(results):
    """One line per figure: its range over the sequences beside the real range."""
    at = f"figure at {FRAME_SIZE[0]}x{FRAME_SIZE[1]}"
    lines = [f"{at:34s} {'this dataset':>17s}   {'real':>13s}"]
    for key, (label, unit, (lo, hi), digits) in FIGURES.items():
        values = [r[key] for r in results.values() if key in r]
        if not values:
            continue
        mine = f"{min(values):.{digits}f}-{max(values):.{digits}f}"
        real = f"{lo:.{digits}f}-{hi:.{digits}f}"
        lines.append(f"{label + (f' ({unit})' if unit else ''):34s} {mine:>17s}   {real:>13s}")
    return "\n".join(lines)


def per_sequence(results):
    keys = ("psnr_step", "psnr_copy", "x_min", "x_max", "ink", "dancer_pixels")
    lines = [f"{'sequence':18s}" + "".join(f"{k:>14s}" for k in keys)]
    for name, figures in results.items():
        lines.append(f"{name:18s}" + "".join(
            f"{figures[k]:14.2f}" if k in figures else f"{'-':>14s}" for k in keys))
    return "\n".join(lines)


@exit_on_user_error
def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("dataset", type=Path, help="dataset folder in the Lab 4 layout")
    parser.add_argument("--train_takes", type=int, default=None,
                        help=f"measure only the first N {FRAMES_PER_SEQUENCE}-frame takes of "
                             "the training split (all when omitted)")
    parser.add_argument("--workers", type=int, default=4, help="image decoding threads")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write every sequence's figures to this JSON file")
    args = parser.parse_args(argv)
    results = measure(args.dataset, args.train_takes, args.workers)
    print(per_sequence(results))
    # The real ranges were measured over whole videos like val and test; training
    # takes are cut from one long split, so they get a table of their own.
    groups = {"val and test sequences": {k: v for k, v in results.items() if k[:5] != "train"},
              "training takes": {k: v for k, v in results.items() if k[:5] == "train"}}
    for title, group in groups.items():
        if group:
            print(f"\nover the {len(group)} {title}:")
            print(table(group))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
