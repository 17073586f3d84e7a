"""Whole-clip augmentation of training clips.

One transform is drawn per clip from (seed, epoch, clip index) and applied
identically to every frame of the clip and, where it is geometric, to every
label: a clip stays a coherent video of a coherent pose sequence, and a
resumed or distributed run draws exactly what an uninterrupted single-process
run draws. Validation and test data are never augmented.

The transforms, each off by default:
  flip   mirror the clip left-right with probability ``flip``;
  shift  move the clip horizontally by up to ``shift`` x its width, in whole
         pixels, so the dancer reaches places of the stage no training frame shows;
  scale  zoom by a factor drawn log-uniformly in [scale[0], scale[1]] (< 1 out,
         > 1 in): zooming in, toward a close-up of the dancer (the view's centre
         within a quarter of its width of the clip's pose, and the view inside the
         frame); zooming out, about a random centre that keeps the frame in view;
  color  scale the frames' brightness by 1 +- color and each channel by a
         further 1 +- color/2. Labels keep their colours, which name limbs.
Pixels a transform brings in from outside the frame repeat the nearest edge
pixel: the studio's wall and floor in a frame, the white background in a label.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from utils.pose import pose_centre
from utils.runtime import seed_for

AUGMENT_SALT = 0xA06E   # the augmentation's own random stream, apart from every other draw
# Uniform draws per clip, always all of them, so that turning one transform on
# leaves what the others draw unchanged: flip, shift, zoom, centre x, centre y,
# brightness, 3 channel gains.
DRAWS = 9


@dataclass(frozen=True)
class ClipAugmentation:
    flip: float = 0.0            # probability of mirroring a clip
    shift: float = 0.0           # largest horizontal shift, as a fraction of the width
    scale: tuple = (1.0, 1.0)    # range of the zoom factor
    color: float = 0.0           # largest brightness change; channel gains vary by half

    @classmethod
    def of(cls, args):
        """The augmentation the --aug_* flags of ``args`` ask for."""
        return cls(flip=args.aug_flip, shift=args.aug_shift, scale=tuple(args.aug_scale),
                   color=args.aug_color)

    @property
    def geometric(self):
        return self.flip > 0 or self.shift > 0 or tuple(self.scale) != (1.0, 1.0)

    @property
    def enabled(self):
        return self.geometric or self.color > 0

    def draw(self, generator):
        """The transform of one clip: a dict of its parameters."""
        u = torch.rand(DRAWS, generator=generator, dtype=torch.float64).tolist()
        low, high = (math.log(s) for s in self.scale)
        return {"flip": u[0] < self.flip,
                "shift": (2 * u[1] - 1) * self.shift,
                "zoom": math.exp(low + u[2] * (high - low)),
                "centre": (2 * u[3] - 1, 2 * u[4] - 1),
                "brightness": 1 + (2 * u[5] - 1) * self.color,
                "gains": [1 + (2 * g - 1) * self.color / 2 for g in u[6:9]]}

    def apply(self, frames, labels, transform):
        """frames, labels (T, 3, H, W) in [0, 1] -> the same, transformed."""
        if self.geometric:
            theta = affine(transform, pose_centre(labels).nanmean(0), frames.shape[-1])
            frames, labels = warp(torch.cat([frames, labels]), theta).split(len(frames))
        if self.color > 0:
            gains = torch.tensor(transform["gains"], dtype=frames.dtype)
            frames = (frames * (transform["brightness"] * gains)[:, None, None]).clamp_(0.0, 1.0)
        return frames, labels


def affine(transform, dancer, width):
    """The 2x3 matrix that maps output to input coordinates (both in [-1, 1]):
    mirror, then shift by whole pixels, then zoom. ``dancer``: the clip's pose
    centre (x, y) as fractions of the frame (NaN where the labels are blank)."""
    zoom = transform["zoom"]
    shift = 2 * round(transform["shift"] * width) / width   # whole pixels: no resampling blur
    # Zooming in, a centre within 1 - 1/zoom keeps the view inside the frame;
    # zooming out, within 1/zoom - 1 keeps the frame inside the view.
    reach = abs(1 - 1 / zoom)
    if zoom > 1:
        target = torch.nan_to_num(2 * dancer - 1, nan=0.0).tolist()
        cx, cy = (max(-reach, min(reach, t + c / (2 * zoom)))
                  for t, c in zip(target, transform["centre"]))
    else:
        cx, cy = (reach * c for c in transform["centre"])
    mirror = -1.0 if transform["flip"] else 1.0
    # Mirroring flips the output's axis only: the view still centres on the dancer.
    return torch.tensor([[mirror / zoom, 0.0, cx - shift / zoom],
                         [0.0, 1.0 / zoom, cy]])


def warp(images, theta):
    """(N, 3, H, W) -> (N, 3, H, W) under one affine map, the edge repeated."""
    theta = theta.to(images.dtype).expand(len(images), 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def clip_generator(seed, epoch, clip):
    """The random stream of one clip in one epoch."""
    return torch.Generator().manual_seed(
        ((seed_for(seed, epoch) * 1_000_003 + clip) ^ AUGMENT_SALT) % (2 ** 63))


class AugmentedClips(Dataset):
    """``clips`` (a training Dataset_Dance) with each clip transformed by the
    draw of (seed, epoch, its index). Index i is clip i of ``clips``, so a
    Subset or a DistributedSampler over it keeps every clip's transform."""

    def __init__(self, clips, augmentation, seed, epoch):
        self.clips, self.augmentation, self.seed, self.epoch = clips, augmentation, seed, epoch

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, index):
        frames, labels = self.clips[index]
        transform = self.augmentation.draw(clip_generator(self.seed, self.epoch, index))
        return self.augmentation.apply(frames, labels, transform)
