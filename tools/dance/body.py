"""The dancer's 3-D body, posed from a choreography and projected by a static camera.

Lengths are in units of the dancer's height (1.75 m). Body-local axes: x to the
dancer's left, y up, z forward. A yaw of 0 faces the camera, pi/2 faces the
image's right, pi shows the back.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

HEIGHT_M = 1.75
BODY_PX = 0.74        # standing height on screen at the reference depth, fraction of H
FLOOR = 0.83          # feet line at the reference depth, fraction of H
HORIZON = 0.41        # where the floor would vanish, fraction of H
CAMERA_DIST = 4.0     # camera to the reference depth, body heights

# Points the renderer draws with; "r_"/"l_" are the dancer's right and left.
LIMB_POINTS = ("shoulder", "elbow", "wrist", "hand", "hip", "knee", "ankle", "toe", "heel")
NAMES = ("pelvis", "neck", "head", "nose") + tuple(
    f"{s}_{p}" for s in ("r", "l") for p in LIMB_POINTS)
J = {name: i for i, name in enumerate(NAMES)}

# OpenPose BODY_25 order.
BODY_25 = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
           "l_wrist", "mid_hip", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle",
           "r_eye", "l_eye", "r_ear", "l_ear", "l_big_toe", "l_small_toe", "l_heel",
           "r_big_toe", "r_small_toe", "r_heel")
HAND_POINTS, FACE_POINTS = 21, 70
R_HAND = len(BODY_25)                 # keypoint index of the right wrist of the hand model
L_HAND = R_HAND + HAND_POINTS
FACE = L_HAND + HAND_POINTS
N_KEYPOINTS = FACE + FACE_POINTS


class Stage(NamedTuple):
    """Output image size in pixels."""
    width: int
    height: int


class Posed(NamedTuple):
    """A projected sequence: screen points for drawing and keypoints for the label."""
    points: np.ndarray      # (n, len(NAMES), 3): x, y pixels; depth towards the camera
    keypoints: np.ndarray   # (n, N_KEYPOINTS, 2) pixels
    visible: np.ndarray     # (n, N_KEYPOINTS) bool: in view of the camera
    scale: np.ndarray       # (n,) pixels per body height
    yaw: np.ndarray         # (n,) radians
    hem: np.ndarray         # (n,) sideways swing of the shirt's hem, pixels
    gain: np.ndarray        # (n,) exposure gain


def _rot_x(v, a):
    """Rotate vectors v (..., 3) about x by a: forward swing of a hanging limb."""
    c, s = np.cos(a)[..., None], np.sin(a)[..., None]
    return np.stack([v[..., 0], v[..., 1] * c[..., 0] - v[..., 2] * s[..., 0],
                     -v[..., 1] * s[..., 0] + v[..., 2] * c[..., 0]], axis=-1)


def _rot_y(v, a):
    """Rotate vectors v (n, k, 3) about the vertical by a (n,): yaw."""
    c, s = np.cos(a)[:, None], np.sin(a)[:, None]
    return np.stack([v[..., 0] * c + v[..., 2] * s, v[..., 1],
                     -v[..., 0] * s + v[..., 2] * c], axis=-1)


def _rot_z(v, a):
    """Rotate vectors v (n, k, 3) about the forward axis by a (n,): sideways tilt."""
    c, s = np.cos(a)[:, None], np.sin(a)[:, None]
    return np.stack([v[..., 0] * c - v[..., 1] * s, v[..., 0] * s + v[..., 1] * c,
                     v[..., 2]], axis=-1)


def _limb(abd, flex, side):
    """Unit direction of a limb raised sideways by abd and swung forwards by flex."""
    down = np.stack([side * np.sin(abd), -np.cos(abd), np.zeros_like(abd)], axis=-1)
    return _rot_x(down, flex)


def _skeleton(m) -> dict[str, np.ndarray]:
    """Body-local 3-D points (n, 3) per name, feet not yet on the floor."""
    n = len(m["yaw"])
    pts = {"pelvis": np.stack([m["sway"] * 0.3, np.full(n, 0.53), np.zeros(n)], -1)}
    for side, s in (("r", -1.0), ("l", 1.0)):
        gait = s * 0.38 * m["gait_amp"] * np.sin(m["gait_phase"])
        hip = pts["pelvis"] + [s * 0.055, 0, 0]
        thigh = _limb(m[f"{side}_hip_abd"], m[f"{side}_hip_flex"] - gait, s)
        lift = 0.6 * m["gait_amp"] * np.clip(np.cos(m["gait_phase"] + (s < 0) * np.pi), 0, 1)
        knee_bend = m[f"{side}_knee"] + lift
        shin = _limb(m[f"{side}_hip_abd"], m[f"{side}_hip_flex"] - gait - knee_bend, s)
        knee = hip + 0.25 * thigh
        ankle = knee + 0.245 * shin
        pts.update({f"{side}_hip": hip, f"{side}_knee": knee, f"{side}_ankle": ankle,
                    f"{side}_toe": ankle + [s * 0.01, -0.035, 0.09],
                    f"{side}_heel": ankle + [0, -0.035, -0.03]})
    return pts


def _upper_body(m, pelvis) -> dict[str, np.ndarray]:
    """Neck, head and arms relative to the pelvis, before the sideways tilt."""
    pts = {"neck": pelvis + [0, 0.30, 0]}
    pts["head"] = pts["neck"] + [0, 0.10, 0]
    for side, s in (("r", -1.0), ("l", 1.0)):
        swing = -s * 0.3 * m["gait_amp"] * np.sin(m["gait_phase"])
        abd, flex, elbow = m[f"{side}_abd"], m[f"{side}_flex"] + swing, m[f"{side}_elbow"]
        shoulder = pts["neck"] + [s * 0.11, -0.025, 0]
        upper = _limb(abd, flex, s)
        fore = _limb(abd + 0.35 * elbow, flex + 0.9 * elbow, s)
        elbow_pt = shoulder + 0.17 * upper
        wrist = elbow_pt + 0.15 * fore
        pts.update({f"{side}_shoulder": shoulder, f"{side}_elbow": elbow_pt,
                    f"{side}_wrist": wrist, f"{side}_hand": wrist + 0.07 * fore})
    return pts


def _face_template() -> np.ndarray:
    """70 face points (x, y) in head units: jaw, brows, nose, eyes, mouth, pupils."""
    a = np.linspace(-1.2, 1.2, 17)
    jaw = np.stack([0.06 * np.sin(a), -0.065 * np.cos(a) + 0.01], -1)
    brows = [(s * (0.012 + 0.008 * i), 0.035) for s in (-1, 1) for i in range(5)]
    nose = [(0, 0.02 - 0.01 * i) for i in range(4)] + [(0.006 * i, -0.022) for i in range(-2, 3)]
    eyes = [(s * 0.022 + 0.01 * np.cos(t), 0.018 + 0.005 * np.sin(t)) for s in (-1, 1)
            for t in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
    mouth = [(0.02 * np.cos(t), -0.04 + 0.008 * np.sin(t)) for t in
             np.linspace(0, 2 * np.pi, 20, endpoint=False)]
    pupils = [(-0.022, 0.018), (0.022, 0.018)]
    return np.concatenate([jaw, brows, nose, eyes, mouth, pupils])


FACE_TEMPLATE = _face_template()


def _hand(wrist, tip, side):
    """21 hand points (n, 21, 3): the wrist and four points along each of five fingers."""
    along = tip - wrist
    along /= np.linalg.norm(along, axis=-1, keepdims=True) + 1e-9
    across = np.cross(along, [0.0, 0.0, 1.0])
    across /= np.linalg.norm(across, axis=-1, keepdims=True) + 1e-6
    out = [wrist]
    for finger in range(5):
        spread = (finger - 2) * 0.011 * side
        base = wrist + 0.025 * along + spread * across
        direction = along + (finger - 2) * 0.15 * across
        out += [base + 0.016 * j * direction for j in range(4)]
    return np.stack(out, axis=1)


def _head_points(head_c, yaw_head):
    """Nose, eyes, ears and the face's 70 points, before the body yaw (n, k, 3)."""
    n = len(yaw_head)
    local = [(0, -0.012, 0.065), (-0.022, 0.018, 0.055), (0.022, 0.018, 0.055),
             (-0.065, 0.0, -0.005), (0.065, 0.0, -0.005)]
    face = np.concatenate([FACE_TEMPLATE, np.full((FACE_POINTS, 1), 0.058)], axis=1)
    rel = np.broadcast_to(np.concatenate([local, face]), (n, 5 + FACE_POINTS, 3))
    rel = _rot_y(rel, yaw_head)
    return head_c[:, None] + rel


def pose(m: dict[str, np.ndarray], stage: Stage) -> Posed:
    """Pose and project a whole choreography."""
    n = len(m["yaw"])
    pts = _skeleton(m)
    upper = _upper_body(m, pts["pelvis"])
    pelvis = pts["pelvis"]
    for name, p in upper.items():
        pts[name] = pelvis + _rot_z((p - pelvis)[:, None], m["tilt"] * 0.3)[:, 0]
    head_pts = _head_points(pts["head"], m["head"])
    pts["nose"] = head_pts[:, 0]
    hands = [_hand(pts[f"{s}_wrist"], pts[f"{s}_hand"], sign) for s, sign in (("r", -1), ("l", 1))]
    body = np.stack([pts[k] for k in NAMES], axis=1)
    feet = body[:, [J[f"{s}_{p}"] for s in "rl" for p in ("toe", "heel", "ankle")], 1]
    lift = feet.min(axis=1)
    keyed = {**pts, "mid_hip": pts["pelvis"], "r_eye": head_pts[:, 1], "l_eye": head_pts[:, 2],
             "r_ear": head_pts[:, 3], "l_ear": head_pts[:, 4]}
    for s, sign in (("r", -1), ("l", 1)):
        keyed[f"{s}_big_toe"] = pts[f"{s}_toe"] - [sign * 0.02, 0, 0]
        keyed[f"{s}_small_toe"] = pts[f"{s}_toe"] + [sign * 0.02, 0, -0.015]
    kp3 = np.concatenate([np.stack([keyed[k] for k in BODY_25], axis=1), *hands,
                          head_pts[:, 5:]], axis=1)

    def project(p3):
        p3 = _rot_y(p3, m["yaw"])
        world_x = m["X"][:, None] / HEIGHT_M + p3[..., 0]
        depth = m["Z"][:, None] / HEIGHT_M + p3[..., 2]
        s = CAMERA_DIST / (CAMERA_DIST - depth)
        x = stage.width / 2 + world_x * s * BODY_PX * stage.height
        floor = HORIZON + (FLOOR - HORIZON) * s
        y = (floor - (p3[..., 1] - lift[:, None]) * s * BODY_PX) * stage.height
        return np.stack([x, y, p3[..., 2]], axis=-1)

    points, keypoints = project(body), project(kp3)
    visible = np.ones((n, N_KEYPOINTS), dtype=bool)
    facing = _rot_y(head_pts - pts["head"][:, None], m["yaw"])[..., 2]
    # Head points on the far side of the head are hidden from the camera.
    head_vis = facing > -0.012
    visible[:, [BODY_25.index(k) for k in ("nose", "r_eye", "l_eye", "r_ear", "l_ear")]] = \
        head_vis[:, :5]
    visible[:, FACE:] = head_vis[:, 5:] & (np.cos(m["yaw"] + m["head"]) > 0.3)[:, None]
    scale = CAMERA_DIST / (CAMERA_DIST - m["Z"] / HEIGHT_M) * BODY_PX * stage.height
    return Posed(points, keypoints[..., :2], visible, scale, m["yaw"], m["hem"] / HEIGHT_M
                 * scale, m["gain"])
