"""What a pose detector (OpenPose) makes of the true keypoints.

The real labels were detected, not drawn from ground truth: joints jitter from
frame to frame, hands and feet drop out for runs of frames, and left and right
swap now and then, mostly when the dancer shows his back. So a label never
pins down a frame exactly.
"""
from __future__ import annotations

import numpy as np

from tools.dance.body import BODY_25, FACE, HAND_POINTS, L_HAND, N_KEYPOINTS, R_HAND, Posed

FEET = [BODY_25.index(k) for k in ("l_big_toe", "l_small_toe", "l_heel",
                                   "r_big_toe", "r_small_toe", "r_heel")]
# Left/right pairs exchanged by a swap: BODY_25 limbs and the two hands.
_PAIRS = [("r_shoulder", "l_shoulder"), ("r_elbow", "l_elbow"), ("r_wrist", "l_wrist"),
          ("r_hip", "l_hip"), ("r_knee", "l_knee"), ("r_ankle", "l_ankle"),
          ("r_big_toe", "l_big_toe"), ("r_small_toe", "l_small_toe"), ("r_heel", "l_heel")]
SWAP = np.arange(N_KEYPOINTS)
for _a, _b in _PAIRS:
    SWAP[BODY_25.index(_a)], SWAP[BODY_25.index(_b)] = BODY_25.index(_b), BODY_25.index(_a)
SWAP[R_HAND:L_HAND], SWAP[L_HAND:FACE] = np.arange(L_HAND, FACE), np.arange(R_HAND, L_HAND)


def _runs(n: int, rng: np.random.Generator, p_start, p_end: float) -> np.ndarray:
    """A two-state Markov chain: True for runs of frames (p_start may vary per frame)."""
    p_start = np.broadcast_to(p_start, (n,))
    draws = rng.random(n)
    state, out = False, np.zeros(n, dtype=bool)
    for k in range(n):
        state = draws[k] >= p_end if state else draws[k] < p_start[k]
        out[k] = state
    return out


def _jitter(n: int, rng: np.random.Generator, sigma: float, keep: float = 0.7) -> np.ndarray:
    """Noise (n, N_KEYPOINTS, 2) of std `sigma` that is partly correlated in time."""
    white = rng.normal(0, sigma, (n, N_KEYPOINTS, 2))
    out = np.empty_like(white)
    out[0] = white[0]
    for k in range(1, n):
        out[k] = keep * out[k - 1] + np.sqrt(1 - keep * keep) * white[k]
    return out


def detect(posed: Posed, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Detected keypoints (n, N_KEYPOINTS, 2) and which were found (n, N_KEYPOINTS)."""
    n = len(posed.yaw)
    scale = posed.scale[:, None, None]
    keypoints = posed.keypoints + _jitter(n, rng, 0.006) * scale
    keypoints[:, R_HAND:] += _jitter(n, rng, 0.004)[:, R_HAND:] * scale
    found = posed.visible.copy()
    for hand in (R_HAND, L_HAND):
        found[_runs(n, rng, 0.08, 0.2), hand:hand + HAND_POINTS] = False
    found[_runs(n, rng, 0.05, 0.25)[:, None] & np.isin(np.arange(N_KEYPOINTS), FEET)] = False
    back = np.cos(posed.yaw) < -0.2
    swapped = _runs(n, rng, np.where(back, 0.03, 0.004), 0.3)
    keypoints[swapped] = keypoints[swapped][:, SWAP]
    found[swapped] = found[swapped][:, SWAP]
    return keypoints, found
