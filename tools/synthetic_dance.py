"""Synthetic stand-in for the Lab 4 dance dataset (one dancer, one studio, OpenPose labels).

Writes the real dataset's layout so every test, demo and benchmark can run offline:

    DIR/train/train_img/frame<N>.png      DIR/train/train_label/frame<N>.png
    DIR/val/val_img/frame<N>.png          DIR/val/val_label/frame<N>.png
    DIR/test/test_img/<i>/frame0.png      DIR/test/test_label/<i>/frame<N>.png
    DIR/test_gt/<i>/frame<N>.png          (true test frames, for local scoring)

Every frame is a deterministic rendering of a 2-D pose; poses follow smooth random
"moves" (sums of sinusoids, cross-faded every few seconds) drawn from one seed.
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
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

FPS = 30
SUPERSAMPLE = 4  # draw at 4x and box-filter down: anti-aliasing without ringing halos
PNG_LEVEL = 6
FORMAT_VERSION = 1
PARAMS_FILE = "synthetic_dance.json"
# Marks a folder as this generator's while it writes, so a rerun may clear it.
PARTIAL_FILE = ".synthetic_dance.partial"
FRAME_RE = re.compile(r"frame\d+\.png")
TMP_RE = re.compile(r"\.frame\d+\.png\.\d+\.tmp")

# COCO-18 keypoints as used by OpenPose, followed by extra points only the renderer needs.
KEYPOINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
             "l_wrist", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle",
             "r_eye", "l_eye", "r_ear", "l_ear")
EXTRAS = ("pelvis", "head", "r_hand", "l_hand", "r_toe", "l_toe")
P = {name: i for i, name in enumerate(KEYPOINTS + EXTRAS)}
OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
                  (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
OPENPOSE_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0),
                   (85, 255, 0), (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255),
                   (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255),
                   (255, 0, 255), (255, 0, 170), (255, 0, 85))

# Degrees of freedom: name -> (centre, half range); a move's raw value is squashed by tanh.
DOFS = {"sway": (0.0, 1.0), "hop": (0.012, 0.012), "lean": (0.0, 0.18), "tilt": (0.0, 0.25),
        "r_shoulder": (1.05, 1.3), "l_shoulder": (1.05, 1.3), "r_elbow": (0.8, 0.8),
        "l_elbow": (0.8, 0.8), "r_hip": (0.18, 0.25), "l_hip": (0.18, 0.25),
        "r_knee": (0.35, 0.35), "l_knee": (0.35, 0.35)}

# Body proportions in units of standing height; colours of the one studio and dancer.
TORSO, SHOULDER, HIP, NECK_HEAD, HEAD_R = 0.30, 0.10, 0.055, 0.10, 0.06
UPPER_ARM, FOREARM, HAND, THIGH, SHIN, SHOE = 0.17, 0.15, 0.045, 0.25, 0.24, 0.03
REACH = TORSO * np.sin(0.18) + SHOULDER + UPPER_ARM + FOREARM + HAND + 0.04
WALL, WALL_LOW, BASEBOARD = (188, 196, 207), (211, 214, 219), (120, 118, 122)
FLOOR_FAR, FLOOR_NEAR, SHADOW = (170, 128, 88), (132, 92, 60), (112, 80, 54)
SKIN, HAIR, SHOES = (225, 174, 138), (48, 34, 28), (28, 28, 30)
SHIRT, TROUSERS = (196, 40, 56), (38, 50, 98)


class Stage(NamedTuple):
    """Image geometry: output size, standing body height and floor line in output pixels."""
    width: int
    height: int

    @property
    def body(self) -> float:
        return 0.78 * self.height

    @property
    def floor(self) -> float:
        return 0.94 * self.height


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def dance_dofs(n_frames: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Smooth joint trajectories: a chain of 2-5 s moves, cross-faded over ~0.7 s.

    Each move has a tempo; every degree of freedom gets a posture offset plus two
    sinusoids at simple multiples of that tempo, so limbs move in rhythm together.
    Weights are differences of one smooth step, hence sum to one at every frame.
    """
    blend = 0.7 * FPS
    starts = [0.0]
    while starts[-1] < n_frames:
        starts.append(starts[-1] + rng.uniform(2.0, 5.0) * FPS)
    t = np.arange(n_frames, dtype=np.float64)
    raw = {name: np.zeros(n_frames) for name in DOFS}
    for begin, end in zip(starts[:-1], starts[1:]):
        weight = (_smoothstep((t - begin) / blend + 0.5) if begin > 0 else 1.0)
        weight = weight - _smoothstep((t - end) / blend + 0.5)
        tempo = rng.uniform(0.4, 1.0)
        for name in DOFS:
            wave = np.full(n_frames, rng.uniform(-0.7, 0.7))
            for _ in range(2):
                freq = np.clip(tempo * rng.choice([0.25, 0.5, 1.0, 1.5]), 0.1, 1.5)
                amp = rng.uniform(0.2, 0.8) / (1.0 + freq)
                wave += amp * np.sin(2 * np.pi * freq * t / FPS + rng.uniform(0, 2 * np.pi))
            raw[name] += weight * wave
    return {name: c + h * np.tanh(raw[name]) for name, (c, h) in DOFS.items()}


def _direction(side: float, angle: np.ndarray) -> np.ndarray:
    """Unit vector `angle` radians away from straight down, swinging outwards on `side`."""
    return np.stack([side * np.sin(angle), np.cos(angle)], axis=-1)


def pose_points(dofs: dict[str, np.ndarray], stage: Stage) -> np.ndarray:
    """Pixel coordinates (frames, points, xy) of keypoints and extras for each frame.

    The person's right side is drawn on the image left (facing the camera), and the
    pelvis height is chosen so the lowest foot rests on the floor (minus a small hop).
    """
    pts = np.zeros((len(dofs["lean"]), len(P), 2))  # body frame: pelvis at the origin
    up = np.stack([np.sin(dofs["lean"]), -np.cos(dofs["lean"])], axis=-1)
    across = np.stack([np.cos(dofs["lean"]), np.sin(dofs["lean"])], axis=-1)
    head_angle = dofs["lean"] + dofs["tilt"]
    head_up = np.stack([np.sin(head_angle), -np.cos(head_angle)], axis=-1)
    head_across = np.stack([np.cos(head_angle), np.sin(head_angle)], axis=-1)
    pts[:, P["neck"]] = TORSO * up
    head = pts[:, P["neck"]] + NECK_HEAD * head_up
    pts[:, P["head"]] = head
    pts[:, P["nose"]] = head - 0.012 * head_up
    for side, s in (("r", -1.0), ("l", 1.0)):
        pts[:, P[f"{side}_eye"]] = head + 0.018 * head_up + s * 0.022 * head_across
        pts[:, P[f"{side}_ear"]] = head + 0.005 * head_up + s * 0.052 * head_across
        shoulder = pts[:, P["neck"]] + s * SHOULDER * across - 0.015 * up
        arm = dofs[f"{side}_shoulder"]
        elbow = shoulder + UPPER_ARM * _direction(s, arm)
        fore = _direction(s, arm + dofs[f"{side}_elbow"])
        wrist = elbow + FOREARM * fore
        hip = s * HIP * across
        leg = dofs[f"{side}_hip"]
        bend = dofs[f"{side}_knee"] / 2  # knee pushes outwards, foot stays under the hip
        knee = hip + THIGH * _direction(s, leg + bend)
        ankle = knee + SHIN * _direction(s, leg - bend)
        for name, value in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
                            ("hand", wrist + HAND * fore), ("hip", hip), ("knee", knee),
                            ("ankle", ankle), ("toe", ankle + [s * 0.035, SHOE])):
            pts[:, P[f"{side}_{name}"]] = value
    lowest = np.maximum(pts[:, P["r_toe"], 1], pts[:, P["l_toe"], 1])
    max_shift = max(0.0, stage.width / 2 - REACH * stage.body - 1.0)
    origin_x = stage.width / 2 + max_shift * dofs["sway"]
    origin_y = stage.floor - stage.body * (lowest + dofs["hop"])
    return pts * stage.body + np.stack([origin_x, origin_y], axis=-1)[:, None, :]


@lru_cache(maxsize=4)
def _studio(stage: Stage) -> Image.Image:
    """The empty studio at supersampled resolution: graded wall, baseboard, wooden floor."""
    w, h = stage.width * SUPERSAMPLE, stage.height * SUPERSAMPLE
    horizon = int(0.70 * h)
    rows = np.zeros((h, 3))
    wall = np.linspace(0, 1, horizon)[:, None]
    rows[:horizon] = (1 - wall) * WALL + wall * WALL_LOW
    floor = np.linspace(0, 1, h - horizon)[:, None]
    rows[horizon:] = (1 - floor) * FLOOR_FAR + floor * FLOOR_NEAR
    rows[horizon - max(1, h // 40):horizon] = BASEBOARD
    pixels = np.repeat(np.round(rows).astype(np.uint8)[:, None, :], w, axis=1)
    return Image.fromarray(pixels, "RGB")


def _capsule(draw: ImageDraw.ImageDraw, a, b, width: float, color) -> None:
    """A thick segment with round ends, so joints look continuous."""
    r = width / 2
    draw.line([tuple(a), tuple(b)], fill=color, width=max(1, round(width)))
    for x, y in (a, b):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)


def render_frame(points: np.ndarray, stage: Stage) -> Image.Image:
    """Draw the dancer for one pose into the studio."""
    img = _studio(stage).copy()
    draw = ImageDraw.Draw(img)
    pt = points * SUPERSAMPLE
    unit = stage.body * SUPERSAMPLE
    foot_x = (pt[P["r_ankle"], 0] + pt[P["l_ankle"], 0]) / 2
    floor = stage.floor * SUPERSAMPLE
    draw.ellipse([foot_x - 0.2 * unit, floor - 0.02 * unit, foot_x + 0.2 * unit,
                  floor + 0.015 * unit], fill=SHADOW)
    for s in ("r", "l"):
        _capsule(draw, pt[P[f"{s}_hip"]], pt[P[f"{s}_knee"]], 0.08 * unit, TROUSERS)
        _capsule(draw, pt[P[f"{s}_knee"]], pt[P[f"{s}_ankle"]], 0.065 * unit, TROUSERS)
        _capsule(draw, pt[P[f"{s}_ankle"]], pt[P[f"{s}_toe"]], 0.045 * unit, SHOES)
    neck, pelvis = pt[P["neck"]], pt[P["pelvis"]]
    r_sh, l_sh, r_hip, l_hip = (pt[P[k]] for k in ("r_shoulder", "l_shoulder", "r_hip", "l_hip"))
    waist_r, waist_l = r_hip + 0.2 * (r_hip - pelvis), l_hip + 0.2 * (l_hip - pelvis)
    draw.polygon([tuple(r_hip + 0.6 * (r_hip - pelvis)), tuple(l_hip + 0.6 * (l_hip - pelvis)),
                  tuple(l_hip + 0.25 * (pelvis - neck)), tuple(r_hip + 0.25 * (pelvis - neck))],
                 fill=TROUSERS)
    draw.polygon([tuple(r_sh + 0.25 * (r_sh - neck)), tuple(l_sh + 0.25 * (l_sh - neck)),
                  tuple(waist_l), tuple(waist_r)], fill=SHIRT)
    head = pt[P["head"]]
    _capsule(draw, neck, neck + 0.45 * (head - neck), 0.045 * unit, SKIN)
    hair_r, face_r = HEAD_R * unit, 0.9 * HEAD_R * unit
    hair_c = head + 0.15 * (head - neck)
    draw.ellipse([*(hair_c - hair_r), *(hair_c + hair_r)], fill=HAIR)
    draw.ellipse([*(head - face_r), *(head + face_r)], fill=SKIN)
    for s in ("r", "l"):
        sh, el = pt[P[f"{s}_shoulder"]], pt[P[f"{s}_elbow"]]
        _capsule(draw, sh, el, 0.055 * unit, SKIN)
        _capsule(draw, sh, sh + 0.5 * (el - sh), 0.068 * unit, SHIRT)
        _capsule(draw, el, pt[P[f"{s}_wrist"]], 0.045 * unit, SKIN)
        _capsule(draw, pt[P[f"{s}_wrist"]], pt[P[f"{s}_hand"]], 0.05 * unit, SKIN)
    return img.resize((stage.width, stage.height), Image.BOX)


def render_label(points: np.ndarray, stage: Stage) -> Image.Image:
    """OpenPose-style skeleton of one pose on white: rainbow limbs plus keypoint dots."""
    size = (stage.width * SUPERSAMPLE, stage.height * SUPERSAMPLE)
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    pt = points * SUPERSAMPLE
    width = max(2.0, 0.045 * stage.body * SUPERSAMPLE)
    for (a, b), color in zip(OPENPOSE_LIMBS, OPENPOSE_COLORS):
        _capsule(draw, pt[a], pt[b], width, color)
    r = 0.75 * width
    for (x, y), color in zip(pt[:len(KEYPOINTS)], OPENPOSE_COLORS):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    return img.resize((stage.width, stage.height), Image.BOX)


def _write_atomic(path: str, data: bytes) -> None:
    """Write via a temporary sibling so an interrupted run never leaves a truncated file."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _render_chunk(task) -> int:
    """Worker: render frames and labels of a chunk and save each to all its destinations."""
    stage, points, destinations = task
    for pose, (img_paths, label_paths) in zip(points, destinations):
        for paths, render in ((img_paths, render_frame), (label_paths, render_label)):
            buf = io.BytesIO()
            render(pose, stage).save(buf, format="PNG", compress_level=PNG_LEVEL)
            for path in paths:
                _write_atomic(path, buf.getvalue())
    return len(destinations)


def _pair_paths(out: Path, split: str, k: int, seq: int = 0) -> tuple[Path, Path]:
    """Frame and label path of frame k; a test sequence's frame is its ground truth."""
    if split == "test":
        return out / f"test_gt/{seq}/frame{k}.png", out / f"test/test_label/{seq}/frame{k}.png"
    return out / f"{split}/{split}_img/frame{k}.png", out / f"{split}/{split}_label/frame{k}.png"


def _split_plan(out: Path, params: dict) -> list[tuple[str, list]]:
    """(name, per-frame (image paths, label paths)) per sequence, in seed-spawn order."""
    def frames(split, n, seq=0):
        return [tuple((str(p),) for p in _pair_paths(out, split, k, seq)) for k in range(n)]
    plan = [("train", frames("train", params["train_frames"])),
            ("val", frames("val", params["val_frames"]))]
    for i in range(params["test_sequences"]):
        seq = frames("test", params["test_frames"], i)
        seq[0] = (seq[0][0] + (str(out / f"test/test_img/{i}/frame0.png"),), seq[0][1])
        plan.append((f"test/{i}", seq))
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


def generate_dataset(out, train_frames: int = 23410, val_frames: int = 630,
                     test_sequences: int = 5, test_frames: int = 630, seed: int = 0,
                     size: tuple[int, int] = (128, 64), workers: int | None = None,
                     force: bool = False, log=print) -> Path:
    """Write the dataset to `out` unless it is already complete; return `out` as a Path.

    `size` is (width, height). Equal arguments give byte-identical files for any `workers`.
    """
    counts = dict(train_frames=train_frames, val_frames=val_frames,
                  test_sequences=test_sequences, test_frames=test_frames)
    if any(int(v) < 1 for v in counts.values()) or size[0] < 16 or size[1] < 8:
        raise ValueError(f"counts must be positive and size at least 16x8: {counts}, {size}")
    out = Path(out)
    params = dict(generator="synthetic_dance", version=FORMAT_VERSION, seed=int(seed),
                  size=[int(size[0]), int(size[1])], **{k: int(v) for k, v in counts.items()})
    marker = out / PARAMS_FILE
    if not force and marker.is_file() and json.loads(marker.read_text()) == params:
        log(f"{out}: complete dataset with these parameters exists, skipping (--force to redo)")
        return out
    partial = out / PARTIAL_FILE
    if out.is_dir() and any(out.iterdir()) and not (marker.is_file() or partial.is_file()):
        raise ValueError(f"refusing to write into '{out}': it holds files this generator did "
                         f"not write (no {PARAMS_FILE}); choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(str(partial), b"generation in progress\n")
    marker.unlink(missing_ok=True)
    _clear_frames(out)
    workers = workers or os.cpu_count() or 1
    stage = Stage(*params["size"])
    seeds = np.random.SeedSequence(params["seed"]).spawn(2 + test_sequences)
    start, total = time.perf_counter(), 0
    with multiprocessing.Pool(workers) as pool:
        for (name, frames), split_seed in zip(_split_plan(out, params), seeds):
            points = pose_points(dance_dofs(len(frames), np.random.default_rng(split_seed)), stage)
            for folder in {Path(p).parent for dests in frames[0] for p in dests}:
                folder.mkdir(parents=True, exist_ok=True)
            step = max(1, min(128, len(frames) // (8 * workers)))
            tasks = [(stage, points[i:i + step], frames[i:i + step])
                     for i in range(0, len(frames), step)]
            total += sum(pool.imap_unordered(_render_chunk, tasks))
            log(f"  {name}: {len(frames)} frames+labels, "
                f"{time.perf_counter() - start:.1f}s elapsed")
    _write_atomic(str(marker), json.dumps(params, indent=2).encode())
    partial.unlink()
    log(f"done: {total} frames+labels in {time.perf_counter() - start:.1f}s "
        f"with {workers} worker(s) -> {out}")
    return out


def write_preview(out, preview, cols: int = 8, zoom: int = 2) -> Path:
    """Contact sheet of frame|label pairs, upscaled `zoom`x: rows show train spread out,
    consecutive train frames (every 2nd), val, and the test sequences."""
    out, preview = Path(out), Path(preview)
    params = json.loads((out / PARAMS_FILE).read_text())
    n_train, n_seq = params["train_frames"], params["test_sequences"]
    spread = [c / max(1, cols - 1) for c in range(cols)]
    rows = [[("train", 0, round(f * (n_train - 1))) for f in spread],
            [("train", 0, min(n_train - 1, n_train // 2 + 2 * c)) for c in range(cols)],
            [("val", 0, round(f * (params["val_frames"] - 1))) for f in spread],
            [("test", c * n_seq // cols, round(f * (params["test_frames"] - 1)))
             for c, f in enumerate(spread)]]
    w, h = params["size"][0] * zoom, params["size"][1] * zoom
    caption, gap = 12, 6
    sheet = Image.new("RGB", (cols * (2 * w + gap) + gap, len(rows) * (h + caption + gap) + gap),
                      (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, (split, seq, k) in enumerate(row):
            x, y = gap + c * (2 * w + gap), gap + r * (h + caption + gap)
            draw.text((x, y), f"{split}{seq if split == 'test' else ''} {k}", fill=(230, 230, 230))
            for dx, path in zip((0, w), _pair_paths(out, split, k, seq)):
                with Image.open(path) as img:
                    tile = img.convert("RGB").resize((w, h), Image.NEAREST)
                sheet.paste(tile, (x + dx, y + caption))
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


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 128x64, got {text!r}")
    width, height = int(match[1]), int(match[2])
    if width < 16 or height < 8:
        raise argparse.ArgumentTypeError(f"must be at least 16x8, got {width}x{height}")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, type=Path,
                        help="output dataset directory (required, no default)")
    for flag, default in (("--train_frames", 23410), ("--val_frames", 630),
                          ("--test_sequences", 5), ("--test_frames", 630)):
        parser.add_argument(flag, type=_positive_int, default=default,
                            help=f"number of {flag[2:].replace('_', ' ')} (default: {default})")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of all motions (default: 0)")
    parser.add_argument("--size", type=_size, default=(128, 64),
                        help="image size WIDTHxHEIGHT, at least 16x8 (default: 128x64)")
    parser.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1,
                        help="parallel render processes (default: os.cpu_count(), "
                             f"here {os.cpu_count() or 1})")
    parser.add_argument("--preview", type=Path, default=None,
                        help="also write a contact sheet of frame/label pairs to this PNG "
                             "(default: none)")
    parser.add_argument("--force", action="store_true",
                        help="regenerate even if a complete dataset exists (default: off)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        generate_dataset(args.out, args.train_frames, args.val_frames, args.test_sequences,
                         args.test_frames, args.seed, args.size, args.workers, args.force)
    except ValueError as error:
        parser.error(f"--out: {error}")
    if args.preview:
        print(f"preview: {write_preview(args.out, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
