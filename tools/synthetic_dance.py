"""Synthetic stand-in for the Lab 4 dance dataset: one dancer in a grey studio, detected poses.

Writes the real dataset's layout so every test, demo and benchmark can run offline:

    DIR/train/train_img/frame<N>.png      DIR/train/train_label/frame<N>.png
    DIR/val/val_img/frame<N>.png          DIR/val/val_label/frame<N>.png
    DIR/test/test_img/<i>/frame0.png      DIR/test/test_label/<i>/frame<N>.png
    DIR/test_gt/<i>/frame<N>.png          (true test frames, for local scoring)

Frames are --size; labels at least 256 pixels wide (tools/dance/render.py says why).

The synthetic world is a stand-in for the real videos, calibrated on their
figures (tools/dataset_stats.py measures them): a man in a dark-blue shirt
who turns, walks across the stage and towards the camera, filmed in a light-grey
cyclorama with flickering exposure and sensor noise; his labels are OpenPose
keypoints as a detector finds them, drawn faintly as Everybody Dance Now draws
them. The training split is a chain of 630-frame takes; val barely moves; the
test takes use other gestures and tempi than training. tools/dance/ holds the
world; this file lays it out on disk. The world, its calibration and its limits
are documented in docs/synthetic.md.

Sizes: in the code a size is always `frame_size = (H, W)`, as the loader and
torch give it (utils.submission.FRAME_SIZE is the loader's (32, 64)). Only what
a user types or reads gives it as image files do, width first: the --size flag
("128x64") and the "size" of synthetic_dance.json ([128, 64]).
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

from dataloader import read_image  # noqa: E402
from tools.dance.body import Stage, pose  # noqa: E402
from tools.dance.detector import detect  # noqa: E402
from tools.dance.motion import STYLES, choreograph  # noqa: E402
from tools.dance.render import render_frame, render_label  # noqa: E402
from utils.cli import tool_parser  # noqa: E402
from utils.fileio import atomic_write  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.metrics import FRAMES_PER_SEQUENCE, REAL_TRAIN_FRAMES  # noqa: E402
from utils.submission import FRAME_SIZE  # noqa: E402

PNG_LEVEL = 1          # noisy frames hardly compress; level 1 is fastest
FORMAT_VERSION = 3      # 3: labels at least 256 wide, every take starts centre stage
PARAMS_FILE = "synthetic_dance.json"
# Marks a folder as this generator's while it writes, so a rerun may clear it.
PARTIAL_FILE = ".synthetic_dance.partial"
FRAME_RE = re.compile(r"frame\d+\.png")
TMP_RE = re.compile(r"\.frame\d+\.png\..+\.tmp")   # atomic_write's temporary files
MIN_FRAME_SIZE = (16, 32)   # (H, W)


class Take:
    """One continuous sequence, simulated whole (motion, detector) before rendering."""

    def __init__(self, n: int, style: str, seed: np.random.SeedSequence, stage: Stage):
        rng = np.random.default_rng(seed)
        self.posed = pose(choreograph(n, rng, STYLES[style]), stage)
        self.keypoints, self.found = detect(self.posed, rng)
        self.noise_base = int(seed.generate_state(1)[0])

    def frame_args(self, k: int) -> tuple:
        """Everything rendering frame k needs: small and picklable."""
        p = self.posed
        return (p.points[k], p.scale[k], p.yaw[k], p.hem[k], p.gain[k],
                (self.noise_base, k), self.keypoints[k], self.found[k])


def _write_atomic(path, data: bytes) -> None:
    """An interrupted run never leaves a truncated file; no fsync, since a dataset
    is regenerated from its seed at no cost but time."""
    atomic_write(path, lambda f: f.write(data), durable=False)


def _render_chunk(task) -> int:
    """Worker: render frames and labels of a chunk and save each to all its destinations."""
    stage, frames, destinations = task
    for args, (img_paths, label_paths) in zip(frames, destinations):
        *frame_args, keypoints, found = args
        for paths, image in ((img_paths, render_frame(*frame_args, stage)),
                             (label_paths, render_label(keypoints, found, stage))):
            buf = io.BytesIO()
            image.save(buf, format="PNG", compress_level=PNG_LEVEL)
            for path in paths:
                _write_atomic(path, buf.getvalue())
    return len(destinations)


def _pair_paths(out: Path, split: str, k: int, seq: int = 0) -> tuple[Path, Path]:
    """Frame and label path of frame k; a test sequence's frame is its ground truth."""
    if split == "test":
        return out / f"test_gt/{seq}/frame{k}.png", out / f"test/test_label/{seq}/frame{k}.png"
    return out / f"{split}/{split}_img/frame{k}.png", out / f"{split}/{split}_label/frame{k}.png"


def _split_plan(out: Path, params: dict) -> list[tuple[str, str, list]]:
    """(name, style, per-frame (image paths, label paths)) per take, in seed-spawn order:
    the training split's takes, val, then the test sequences."""
    def frames(split, n, seq=0, first=0):
        return [tuple((str(p),) for p in _pair_paths(out, split, first + k, seq))
                for k in range(n)]
    n_train = params["train_frames"]
    take = FRAMES_PER_SEQUENCE       # frames per take of the training split, like one real video
    plan = [(f"train {k}-{min(n_train, k + take) - 1}", "train",
             frames("train", min(take, n_train - k), first=k)) for k in range(0, n_train, take)]
    plan.append(("val", "val", frames("val", params["val_frames"])))
    for i in range(params["test_sequences"]):
        seq = frames("test", params["test_frames"], i)
        seq[0] = (seq[0][0] + (str(out / f"test/test_img/{i}/frame0.png"),), seq[0][1])
        plan.append((f"test/{i}", "test", seq))
    return plan


def _clear_frames(out: Path) -> None:
    """Delete frames of an earlier (maybe larger or interrupted) run so none go stale."""
    for pattern in ("train/train_*/*", "val/val_*/*", "test/test_*/*/*", "test_gt/*/*"):
        for path in out.glob(pattern):
            if path.is_file() and (FRAME_RE.fullmatch(path.name) or TMP_RE.fullmatch(path.name)):
                path.unlink()
    for folder in [*out.glob("test/test_*/*"), *out.glob("test_gt/*")]:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _wxh(frame_size) -> str:
    """(H, W) as the command line writes it: WxH."""
    return f"{frame_size[1]}x{frame_size[0]}"


def _check_counts(counts: dict, frame_size) -> None:
    bad = [f"--{k} {v}" for k, v in counts.items() if int(v) < 1]
    if bad:
        raise UserError(f"counts must be positive: {', '.join(bad)}")
    if frame_size[0] < MIN_FRAME_SIZE[0] or frame_size[1] < MIN_FRAME_SIZE[1]:
        raise UserError(f"--size {_wxh(frame_size)} is too small: at least "
                        f"{_wxh(MIN_FRAME_SIZE)}")


def _prepare(out: Path, params: dict, force: bool, log) -> bool:
    """Make `out` ready to be written; False when it already holds this exact dataset."""
    marker = out / PARAMS_FILE
    if not force and marker.is_file() and json.loads(marker.read_text()) == params:
        log(f"{out}: complete dataset with these parameters exists, skipping (--force to redo)")
        return False
    partial = out / PARTIAL_FILE
    if out.is_dir() and any(out.iterdir()) and not (marker.is_file() or partial.is_file()):
        raise UserError(f"refusing to write into '{out}': it holds files this generator did "
                        f"not write (no {PARAMS_FILE}); choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(str(partial), b"generation in progress\n")
    marker.unlink(missing_ok=True)
    _clear_frames(out)
    return True


def generate_dataset(out, train_frames: int = REAL_TRAIN_FRAMES, val_frames: int = FRAMES_PER_SEQUENCE,
                     test_sequences: int = 5, test_frames: int = FRAMES_PER_SEQUENCE,
                     seed: int = 0, frame_size: tuple[int, int] = (64, 128),
                     workers: int | None = None, force: bool = False, log=print) -> Path:
    """Write the dataset to `out` unless it is already complete; return `out` as a Path.

    `frame_size` is the frame files' (H, W). Equal arguments give byte-identical files
    for any `workers`. Raises UserError for bad counts, a too small size or a folder it
    did not write.
    """
    counts = dict(train_frames=train_frames, val_frames=val_frames,
                  test_sequences=test_sequences, test_frames=test_frames)
    _check_counts(counts, frame_size)
    out = Path(out)
    height, width = int(frame_size[0]), int(frame_size[1])
    params = dict(generator="synthetic_dance", version=FORMAT_VERSION, seed=int(seed),
                  size=[width, height], **{k: int(v) for k, v in counts.items()})
    if not _prepare(out, params, force, log):
        return out
    workers = workers or os.cpu_count() or 1
    stage = Stage(width=width, height=height)
    plan = _split_plan(out, params)
    train_takes = sum(style == "train" for _, style, _ in plan)
    root = np.random.SeedSequence(params["seed"])
    train_seed, val_seed, test_seed = root.spawn(3)
    seeds = [*train_seed.spawn(train_takes), val_seed, *test_seed.spawn(test_sequences)]
    start, total = time.perf_counter(), 0
    with multiprocessing.Pool(workers) as pool:
        for (name, style, frames), take_seed in zip(plan, seeds):
            take = Take(len(frames), style, take_seed, stage)
            for folder in {Path(p).parent for dests in frames[0] for p in dests}:
                folder.mkdir(parents=True, exist_ok=True)
            step = max(1, min(64, len(frames) // (4 * workers)))
            tasks = [(stage, [take.frame_args(k) for k in range(i, min(i + step, len(frames)))],
                      frames[i:i + step]) for i in range(0, len(frames), step)]
            total += sum(pool.imap_unordered(_render_chunk, tasks))
            if style != "train" or take_seed is seeds[train_takes - 1]:
                log(f"  {name if style != 'train' else 'train'}: {total} frames+labels so far, "
                    f"{time.perf_counter() - start:.1f}s elapsed")
    _write_atomic(str(out / PARAMS_FILE), json.dumps(params, indent=2).encode())
    (out / PARTIAL_FILE).unlink()
    log(f"done: {total} frames+labels in {time.perf_counter() - start:.1f}s "
        f"with {workers} worker(s) -> {out}")
    return out


def write_preview(out, preview, cols: int = 6, zoom: int = 3, frame_size=FRAME_SIZE) -> Path:
    """Contact sheet at the loader's `frame_size` (H, W), enlarged `zoom` times like the
    real reference picture: val frames; a test sequence's frames and labels 100 frames
    apart; training frames and labels spread over the split."""
    out, preview = Path(out), Path(preview)
    params = json.loads((out / PARAMS_FILE).read_text())
    n_train, n_val, n_test = params["train_frames"], params["val_frames"], params["test_frames"]
    val = [("val", 0, k * (n_val - 1) // (cols - 1)) for k in range(cols)]
    test = [("test", 0, min(n_test - 1, 100 * k)) for k in range(cols)]
    train = [("train", 0, k * (n_train - 1) // (cols - 1)) for k in range(cols)]
    rows = [(val, 0), (test, 0), (test, 1), (train, 0), (train, 1)]
    h, w = frame_size[0] * zoom, frame_size[1] * zoom
    sheet = Image.new("RGB", (cols * w, len(rows) * h), (255, 255, 255))
    for r, (row, which) in enumerate(rows):
        for c, (split, seq, k) in enumerate(row):
            path = _pair_paths(out, split, k, seq)[which]
            tile = read_image(path, frame_size).permute(1, 2, 0).numpy()
            sheet.paste(Image.fromarray(tile).resize((w, h), Image.NEAREST), (c * w, r * h))
    preview.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(preview)
    return preview


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _frame_size(text: str) -> tuple[int, int]:
    """--size WIDTHxHEIGHT -> frame_size (H, W)."""
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 128x64, got {text!r}")
    frame_size = int(match[2]), int(match[1])
    if frame_size[0] < MIN_FRAME_SIZE[0] or frame_size[1] < MIN_FRAME_SIZE[1]:
        raise argparse.ArgumentTypeError(
            f"must be at least {_wxh(MIN_FRAME_SIZE)}, got {_wxh(frame_size)}")
    return frame_size


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__)
    parser.add_argument("--out", required=True, type=Path, help="output dataset directory")
    for flag, default in (("--train_frames", REAL_TRAIN_FRAMES), ("--val_frames", FRAMES_PER_SEQUENCE),
                          ("--test_sequences", 5), ("--test_frames", FRAMES_PER_SEQUENCE)):
        parser.add_argument(flag, type=_positive_int, default=default,
                            help=f"number of {flag[2:].replace('_', ' ')}")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the whole world")
    parser.add_argument("--size", dest="frame_size", metavar="SIZE", type=_frame_size,
                        default="128x64",
                        help="frame size WIDTHxHEIGHT, at least 32x16; labels are written "
                             "at least 256 wide, the same shape; the real files are 1024x512")
    parser.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1,
                        help="parallel render processes, one per core by default")
    parser.add_argument("--preview", type=Path, default=None,
                        help="also write a contact sheet of frames and labels at the "
                             f"loader's {_wxh(FRAME_SIZE)} to this PNG")
    parser.add_argument("--force", action="store_true",
                        help="regenerate even if a complete dataset exists")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        generate_dataset(args.out, args.train_frames, args.val_frames, args.test_sequences,
                         args.test_frames, args.seed, args.frame_size, args.workers, args.force)
    except UserError as error:
        parser.error(f"--out: {error}" if "refusing" in str(error) else str(error))
    if args.preview:
        print(f"preview: {write_preview(args.out, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
