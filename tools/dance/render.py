"""Pixels: the grey studio with the dancer, and the pose label drawn like the real ones.

Frames are drawn at a supersampled size and box-filtered down (anti-aliasing
without ringing), then exposure gain and sensor noise are applied. Labels follow
Everybody Dance Now's drawing of OpenPose output: on a white canvas whose height
stands for 1080 pixels, limbs of half-width 4 and joints of radius 8, blended at
alpha 0.6; at the loader's 32x64 that leaves faint, thin strokes.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from tools.dance.body import BODY_25, FACE, J, L_HAND, R_HAND, Stage

SHIRT, TROUSERS, SHOES = np.array((50, 63, 86)), np.array((24, 25, 29)), np.array((16, 16, 18))
SKIN, HAIR, COLLAR = np.array((168, 126, 104)), np.array((28, 24, 23)), np.array((92, 104, 124))
REFLECTION = 0.22         # how much of the dancer the glossy floor mirrors
NOISE_AT_64 = 2.0         # sensor noise (grey levels) left after the loader's resize to 64x32

# OpenPose BODY_25: limbs as keypoint pairs, coloured like their second keypoint.
LIMBS = ((1, 8), (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (10, 11),
         (8, 12), (12, 13), (13, 14), (1, 0), (0, 15), (15, 17), (0, 16), (16, 18), (14, 19),
         (19, 20), (14, 21), (11, 22), (22, 23), (11, 24))
COLORS = ((255, 0, 85), (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0),
          (85, 255, 0), (0, 255, 0), (255, 0, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255),
          (0, 170, 255), (0, 85, 255), (0, 0, 255), (255, 0, 170), (170, 0, 255), (255, 0, 255),
          (85, 0, 255), (0, 0, 255), (0, 0, 255), (0, 0, 255), (0, 255, 255), (0, 255, 255),
          (0, 255, 255))
HAND_LIMBS = tuple((0 if j == 0 else 1 + 4 * f + j - 1, 1 + 4 * f + j)
                   for f in range(5) for j in range(4))
HAND_COLORS = ((255, 0, 0), (255, 200, 0), (0, 220, 0), (0, 160, 255), (200, 0, 255))
FACE_COLOR = (255, 0, 85)
JOINT_RADIUS = 8
LABEL_HEIGHT = 512        # label canvas height in pixels, so 4/1080 of it stays drawable
# Label files are at least 4x the loader's 64 pixels wide. From a smaller file the
# loader's bilinear resize spreads the faint strokes over more pixels than it does
# from the real 1024x512 files (label ink 6.4% against 5.6% on val); from 4x it is
# within 0.1 point of 1024x512.
LABEL_MIN_WIDTH = 256


def supersample(stage: Stage) -> int:
    """Drawing scale for frames: small images get a canvas of about 512 pixels wide."""
    return max(1, math.ceil(512 / stage.width))


@lru_cache(maxsize=4)
def studio(stage: Stage, scale: int) -> Image.Image:
    """The empty cyclorama: three ceiling light pools at the top, a darker left side,
    a soft dim band where wall turns into floor, and a brighter floor."""
    w, h = stage.width * scale, stage.height * scale
    u = (np.arange(w) + 0.5)[None, :] / w
    v = (np.arange(h) + 0.5)[:, None] / h
    lum = 142 + 34 * u - 10 * np.exp(-((v - 0.5) / 0.13) ** 2)
    lum = lum + 18 * np.clip((v - 0.62) / 0.3, 0, 1) - 34 * np.exp(-v / 0.09)
    for centre, amp in ((0.06, 78), (0.44, 94), (0.87, 120)):
        lum = lum + amp * np.exp(-((u - centre) / 0.085) ** 2) * np.exp(-v / 0.13)
    rgb = lum[..., None] * np.array([1.008, 1.0, 0.99])
    return Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8), "RGB")


def _capsule(draw, a, b, width, color) -> None:
    """A thick segment with round ends, so joints look continuous."""
    r = width / 2
    draw.line([tuple(a), tuple(b)], fill=color, width=max(1, round(width)))
    for x, y in (a, b):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)


def _shade(color, light: float, tint=None, mix: float = 0.0) -> tuple:
    c = np.asarray(color, dtype=float) * light
    if tint is not None:
        c = (1 - mix) * c + mix * np.asarray(tint, dtype=float)
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))


def _parts(pt, depth, unit, yaw, hem):
    """(depth, kind, geometry, colour) of every body part, to draw far to near."""
    # A key light from the camera's left: the dancer's side facing it is lighter.
    light = 0.85 + 0.25 * max(0.0, math.cos(yaw + 0.6))
    parts = []
    for s in ("r", "l"):
        def p(name):
            return pt[J[f"{s}_{name}"]]

        def d(*names):
            return float(np.mean([depth[J[f"{s}_{n}"]] for n in names]))
        parts += [(d("hip", "knee"), "capsule", (p("hip"), p("knee"), 0.095 * unit), TROUSERS),
                  (d("knee", "ankle"), "capsule", (p("knee"), p("ankle"), 0.075 * unit), TROUSERS),
                  (d("ankle", "toe"), "capsule", (p("heel"), p("toe"), 0.05 * unit), SHOES),
                  (d("shoulder", "elbow") + 0.01, "capsule",
                   (p("shoulder"), p("elbow"), 0.068 * unit), _shade(SHIRT, light)),
                  (d("elbow", "wrist") + 0.01, "capsule",
                   (p("elbow"), p("wrist"), 0.058 * unit), _shade(SHIRT, light)),
                  (d("wrist", "hand") + 0.01, "capsule", (p("wrist"), p("hand"), 0.045 * unit),
                   _shade(SKIN, light))]
    neck, pelvis = pt[J["neck"]], pt[J["pelvis"]]
    sh = [pt[J["r_shoulder"]], pt[J["l_shoulder"]]]
    hips = [pt[J["r_hip"]], pt[J["l_hip"]]]
    flap = np.array([hem, 0.07 * unit])
    torso = [sh[0] + 0.15 * (sh[0] - sh[1]), sh[1] + 0.15 * (sh[1] - sh[0]),
             hips[1] + 0.45 * (hips[1] - hips[0]) + flap,
             hips[0] + 0.45 * (hips[0] - hips[1]) + flap]
    parts += [(0.0, "torso", (torso, neck, pelvis + flap / 2, 0.15 * unit), _shade(SHIRT, light)),
              (0.005, "head", (pt[J["head"]], pt[J["nose"]], neck, 0.06 * unit, yaw, light),
               None)]
    parts.sort(key=lambda part: part[0])
    return parts


def _draw_head(draw, head, nose, neck, radius, yaw, light, recolor) -> None:
    """Hair and face: all hair from behind, a face from the front, half and half in
    profile, so the view shows which way the dancer faces."""
    _capsule(draw, neck, neck + 0.5 * (head - neck), 0.9 * radius, recolor(_shade(SKIN, light)))
    draw.ellipse([*(head - radius), *(head + radius)], fill=recolor(HAIR))
    front = math.cos(yaw)
    if front > -0.35:
        face_r = radius * (0.75 + 0.15 * front)
        centre = head + 0.45 * (nose - head) + [0, 0.25 * radius]
        draw.ellipse([*(centre - face_r), *(centre + face_r)], fill=recolor(_shade(SKIN, light)))
    if front > 0.3:
        draw.ellipse([*(neck - 0.5 * radius), *(neck + 0.5 * radius)], fill=recolor(COLLAR))


def _draw_dancer(draw, pt, depth, unit, yaw, hem, recolor) -> None:
    for _, kind, geo, color in _parts(pt, depth, unit, yaw, hem):
        if kind == "capsule":
            _capsule(draw, *geo, recolor(color))
        elif kind == "torso":
            polygon, neck, pelvis, width = geo
            draw.polygon([tuple(q) for q in polygon], fill=recolor(color))
            _capsule(draw, neck, pelvis, width, recolor(color))
        else:
            _draw_head(draw, *geo, recolor)


def _sensor_noise(seed, stage: Stage) -> np.ndarray:
    """Noise (H, W, 3) drawn on a 64x32 grid and smoothly resized: the loader's 64x32
    sees about the same noise at any file size, and large files stay compressible
    (the real frames are decoded video, whose fine grain the codec removed)."""
    coarse = np.random.default_rng(seed).normal(0.0, NOISE_AT_64, (3, 32, 64)).astype(np.float32)
    if (stage.width, stage.height) == (64, 32):
        return coarse.transpose(1, 2, 0)
    return np.stack([np.asarray(Image.fromarray(c, "F").resize(stage, Image.BILINEAR))
                     for c in coarse], axis=-1)


def render_frame(points, scale, yaw, hem, gain, noise_seed, stage: Stage) -> Image.Image:
    """One frame: the studio, the dancer's floor reflection and shadow, the dancer,
    then exposure gain and sensor noise (seeded per frame, so any worker gives the
    same bytes)."""
    ss = supersample(stage)
    canvas = studio(stage, ss).copy()
    draw = ImageDraw.Draw(canvas)
    pt, depth = points[:, :2] * ss, points[:, 2]
    unit = scale * ss
    feet = [J[f"{s}_{p}"] for s in "rl" for p in ("toe", "heel")]
    floor_y = pt[feet, 1].max()
    mirrored = pt.copy()
    mirrored[:, 1] = 2 * floor_y - pt[:, 1]
    floor = np.asarray(canvas.getpixel((int(pt[J["pelvis"], 0]) % canvas.width,
                                        min(canvas.height - 1, int(floor_y) + 2))), dtype=float)
    _draw_dancer(draw, mirrored, depth, unit, yaw, hem,
                 lambda c: _shade(floor, 1.0, c, REFLECTION))
    foot_x = pt[feet, 0].mean()
    draw.ellipse([foot_x - 0.16 * unit, floor_y - 0.012 * unit, foot_x + 0.16 * unit,
                  floor_y + 0.02 * unit], fill=_shade(floor, 0.8))
    _draw_dancer(draw, pt, depth, unit, yaw, hem, lambda c: _shade(c, 1.0))
    small = canvas.resize((stage.width, stage.height), Image.BOX) if ss > 1 else canvas
    pixels = np.asarray(small, dtype=np.float32) * gain
    pixels += _sensor_noise(noise_seed, stage)
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "RGB")


_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 12, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 12, endpoint=False))], axis=-1)


def _stick(draw, a, b, half_width, color) -> None:
    """An OpenPose limb: an ellipse spanning the two joints, half-width thick."""
    delta = (b - a) / 2
    normal = np.array([-delta[1], delta[0]]) / (np.hypot(*delta) + 1e-9) * half_width
    outline = (a + b) / 2 + _CIRCLE[:, :1] * delta + _CIRCLE[:, 1:] * normal
    draw.polygon(outline.ravel().tolist(), fill=color)


def _dot(draw, p, radius, color) -> None:
    draw.ellipse([p[0] - radius, p[1] - radius, p[0] + radius, p[1] + radius], fill=color)


# White minus alpha 0.6 of the ink: the stroke blended over the white canvas.
_BLEND = [round(255 - 0.6 * (255 - v)) for v in range(256)] * 3


def render_label(keypoints, found, stage: Stage) -> Image.Image:
    """The detected pose drawn as Everybody Dance Now draws OpenPose output: limbs
    blended at alpha 0.6 over white, joints opaque on top."""
    ss = max(1.0, LABEL_HEIGHT / stage.height)
    size = (round(stage.width * ss), round(stage.height * ss))
    px = size[1] / 1080            # one pixel of the original 1080-high canvas
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    kp = keypoints * ss
    for a, b in LIMBS:
        if found[a] and found[b]:
            _stick(draw, kp[a], kp[b], 4 * px, COLORS[b])
    for hand in (R_HAND, L_HAND):
        for i, (a, b) in enumerate(HAND_LIMBS):
            if found[hand + a] and found[hand + b]:
                _stick(draw, kp[hand + a], kp[hand + b], 1 * px, HAND_COLORS[i // 4])
    canvas = canvas.point(_BLEND)
    draw = ImageDraw.Draw(canvas)
    for k in range(len(BODY_25)):
        if found[k]:
            _dot(draw, kp[k], JOINT_RADIUS * px, COLORS[k])
    for k in range(FACE, len(kp)):
        if found[k]:
            _dot(draw, kp[k], 1 * px, FACE_COLOR)
    out = label_size(stage)
    return canvas.resize(out, Image.BOX) if out != canvas.size else canvas


def label_size(stage: Stage) -> tuple[int, int]:
    """(width, height) of a label file: the stage's, or LABEL_MIN_WIDTH wide and the
    same shape when the stage is narrower."""
    if stage.width >= LABEL_MIN_WIDTH:
        return stage.width, stage.height
    return LABEL_MIN_WIDTH, round(stage.height * LABEL_MIN_WIDTH / stage.width)
