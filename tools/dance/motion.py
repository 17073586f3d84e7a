"""Choreography: per-frame stage position, facing, joint angles and the lagging shirt.

A sequence is a chain of segments (hold a gesture, turn, walk somewhere), each
chosen at random by a split's Style. Targets jump at segment boundaries and are
followed by smooth filters, so joints accelerate and settle like a person's.
Angles are radians; positions are metres on the stage floor (X to the camera's
right, Z towards the camera).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

FPS = 30
SIDES = ("r", "l")
JOINTS = ("abd", "flex", "elbow", "hip_flex", "hip_abd", "knee")
DOFS = tuple(f"{s}_{j}" for s in SIDES for j in JOINTS) + ("tilt", "sway", "head")
STAGE_X = 2.45                   # walkable half-width in metres
# Walkable depth in metres, upstage to downstage: the real dancer is 22 to 27 of 32
# pixels tall (median per sequence), never far upstage.
STAGE_Z = (-0.3, 0.75)
STRIDE = 1.3                     # metres per gait cycle

# Target joint angles per gesture, for the right side (the left mirrors it unless
# a gesture names l_ joints). Missing joints rest.
REST = dict(abd=0.12, flex=0.0, elbow=0.15, hip_flex=0.0, hip_abd=0.03, knee=0.05)
GESTURES = {
    "rest": {},
    "arms_up": dict(abd=2.85, flex=0.15, elbow=0.25),
    "t_pose": dict(abd=1.5, elbow=0.05),
    "wave_r": dict(r_abd=2.3, r_elbow=1.1),
    "wave_l": dict(l_abd=2.3, l_elbow=1.1),
    "reach_front": dict(flex=1.3, elbow=0.3, abd=0.2),
    "hands_on_hips": dict(abd=0.55, flex=-0.25, elbow=1.9),
    "squat": dict(hip_flex=0.7, knee=1.1, flex=0.9, elbow=0.4),
    "step_out_r": dict(r_hip_abd=0.3, abd=0.5, elbow=0.6),
    "lunge_l": dict(l_hip_flex=0.6, l_knee=0.7, r_hip_flex=-0.2, abd=1.0, elbow=0.3),
}
# Joints each gesture swings to the beat while it is held.
SWINGS = {"arms_up": ("abd",), "t_pose": ("flex", "elbow"), "wave_r": ("r_elbow",),
          "wave_l": ("l_elbow",), "reach_front": ("elbow",), "hands_on_hips": ("sway",),
          "squat": ("knee",), "step_out_r": ("sway",), "lunge_l": ("abd",), "rest": ("sway",)}


class Style(NamedTuple):
    """How a split dances: segment odds (walk, turn, gesture), its gestures, tempo."""
    p_walk: float
    p_turn: float
    gestures: tuple
    tempo: tuple          # beats per second, range
    swing: float          # amplitude of the beat, radians
    hold: tuple           # seconds a gesture is held, range
    roam: float           # fraction of the stage a walk may reach
    facing: float         # largest yaw a turn or a hold faces, radians


STYLES = {
    "train": Style(0.4, 0.2, ("rest", "arms_up", "t_pose", "wave_r", "reach_front", "squat",
                                "hands_on_hips"), (0.5, 1.0), 0.35, (2.0, 5.0), 1.0, np.pi),
    "test": Style(0.35, 0.25, ("rest", "t_pose", "wave_l", "arms_up", "step_out_r", "lunge_l",
                               "hands_on_hips"), (0.7, 1.3), 0.4, (1.5, 4.0), 1.0, np.pi),
    # The real validation video: the dancer stays near the centre, mostly still.
    "val": Style(0.0, 0.15, ("rest", "rest", "rest", "hands_on_hips", "reach_front", "wave_r"),
                 (0.4, 0.7), 0.15, (3.0, 7.0), 0.1, 0.9),
}


def _joint_targets(gesture: str) -> dict[str, float]:
    values = {f"{s}_{j}": REST[j] for s in SIDES for j in JOINTS}
    for key, value in GESTURES[gesture].items():
        sides = SIDES if key.split("_")[0] not in SIDES else (None,)
        for side in sides:
            values[key if side is None else f"{side}_{key}"] = value
    return values


def _segments(n: int, rng: np.random.Generator, style: Style):
    """(start frame, kind, gesture, facing yaw, goal X, goal Z, tempo) until n frames."""
    t, segments = 0, []
    while t < n:
        kind = rng.choice(["walk", "turn", "gesture"],
                          p=[style.p_walk, style.p_turn, 1 - style.p_walk - style.p_turn])
        gesture = "rest" if kind != "gesture" else str(rng.choice(style.gestures))
        facing = rng.uniform(-style.facing, style.facing) if kind == "turn" else None
        goal = ((rng.uniform(-1, 1) * STAGE_X * style.roam, rng.uniform(*STAGE_Z) * style.roam)
                if kind == "walk" else None)
        seconds = rng.uniform(*style.hold) if kind == "gesture" else rng.uniform(1.5, 3.0)
        if kind == "walk":
            seconds = rng.uniform(4.0, 7.0)
        segments.append((t, kind, gesture, facing, goal, rng.uniform(*style.tempo)))
        t += int(seconds * FPS)
    return segments


def _follow(target: np.ndarray, tau: float) -> np.ndarray:
    """Critically damped second-order follower of `target` (time constant tau s)."""
    w, dt = 1.0 / tau, 1.0 / FPS
    out, pos, vel = np.empty_like(target), target[0].copy(), np.zeros_like(target[0])
    for k in range(len(target)):
        acc = w * w * (target[k] - pos) - 2 * w * vel
        vel = vel + acc * dt
        pos = pos + vel * dt
        out[k] = pos
    return out


def _locomotion(n, segments, rng, start):
    """Per-frame X, Z, walking speed and yaw: walk towards each goal, face the way one
    walks (profile across the stage, back view going upstage), else the held facing."""
    x, z = start
    yaw, speed = 0.0, 0.0
    out = np.zeros((n, 4))
    bounds = [s[0] for s in segments[1:]] + [n]
    face_yaw = 0.0
    for (begin, kind, _, facing, goal, _), end in zip(segments, bounds):
        if facing is not None:
            face_yaw = facing
        top_speed = rng.uniform(0.8, 1.25)
        for k in range(begin, min(end, n)):
            dx, dz = (goal[0] - x, goal[1] - z) if goal is not None else (0.0, 0.0)
            dist = np.hypot(dx, dz)
            want = min(top_speed, 1.2 * dist) if dist > 0.05 else 0.0
            speed += np.clip(want - speed, -1.5 / FPS, 1.5 / FPS)
            if speed > 0.02 and dist > 1e-6:
                x += speed / FPS * dx / dist
                z += speed / FPS * dz / dist
                target = np.arctan2(dx, dz)
            else:
                target = face_yaw
            # Turn the short way round, at most ~2.5 rad/s.
            delta = (target - yaw + np.pi) % (2 * np.pi) - np.pi
            yaw += np.clip(delta, -2.5 / FPS, 2.5 / FPS)
            out[k] = x, z, speed, yaw
    return out


def _exposure(n: int, rng: np.random.Generator) -> np.ndarray:
    """Slight auto-exposure flicker: a slowly wandering gain around 1 plus jitter."""
    slow = np.cumsum(rng.normal(0, 0.0006, n))
    slow -= np.linspace(slow[0], slow[-1], n)   # no drift across a whole sequence
    return 1.0 + slow + rng.normal(0, 0.0012, n)


def _shirt_lag(x: np.ndarray, sway: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Sideways swing of the shirt's hem (metres): an under-damped spring that the
    hips' sideways acceleration drives, so it trails every start, stop and turn."""
    lateral = x + sway + 0.05 * np.unwrap(yaw)
    velocity = np.diff(lateral, prepend=lateral[0])
    drive = np.diff(velocity, prepend=0.0) * FPS * FPS
    w, zeta, dt = 2 * np.pi * 1.4, 0.25, 1.0 / FPS
    hem, vel, out = 0.0, 0.0, np.empty_like(x)
    for k in range(len(x)):
        vel += (-w * w * hem - 2 * zeta * w * vel - drive[k]) * dt
        hem += vel * dt
        out[k] = np.clip(hem, -0.08, 0.08)
    return out


def choreograph(n: int, rng: np.random.Generator, style: Style) -> dict[str, np.ndarray]:
    """Per-frame motion of one continuous sequence: DOFS plus X, Z, yaw, gait phase,
    gait amplitude, shirt hem swing and exposure gain."""
    segments = _segments(n, rng, style)
    # Every real sequence passes the centre: the dancer starts there and walks off.
    start = (rng.uniform(-1, 1) * STAGE_X * 0.05, rng.uniform(*STAGE_Z) * 0.2 * style.roam)
    loco = _locomotion(n, segments, rng, start)
    targets = np.zeros((n, len(DOFS)))
    beat = np.zeros((n, len(DOFS)))
    t = np.arange(n) / FPS
    bounds = [s[0] for s in segments[1:]] + [n]
    for (begin, _, gesture, _, _, tempo), end in zip(segments, bounds):
        span = slice(begin, min(end, n))
        joints = _joint_targets(gesture)
        targets[span] = [joints.get(name, 0.0) for name in DOFS]
        phase = rng.uniform(0, 2 * np.pi)
        for name in SWINGS[gesture]:
            names = [name] if name in DOFS else [f"{s}_{name}" for s in SIDES]
            for full in names:
                amp = style.swing * (0.15 if full == "sway" else 1.0)
                beat[span, DOFS.index(full)] = amp * np.sin(2 * np.pi * tempo * t[span] + phase)
        beat[span, DOFS.index("head")] = 0.15 * np.sin(np.pi * tempo * t[span] + phase)
    motion = dict(zip(DOFS, (_follow(targets, 0.35) + _follow(beat, 0.12)).T))
    motion.update(X=loco[:, 0], Z=loco[:, 1], yaw=loco[:, 3])
    amp = np.clip(loco[:, 2] / 0.8, 0, 1)
    motion["gait_phase"] = 2 * np.pi * np.cumsum(loco[:, 2]) / FPS / STRIDE
    motion["gait_amp"] = amp
    motion["hem"] = _shirt_lag(loco[:, 0], motion["sway"], loco[:, 3])
    motion["gain"] = _exposure(n, rng)
    return motion
