"""Where the dancer is, read off pose images (coloured strokes on white)."""
import math

import torch


def pose_centre(labels):
    """The centre of each pose image as fractions of the width and the height,
    NaN where it is blank: labels (N, 3, H, W) in [0, 1] -> (N, 2), (x, y).

    Each pixel weighs by its ink (1 - its darkest channel), so faint strokes
    count and no threshold is needed.
    """
    ink = 1 - labels.min(dim=1).values                                    # (N, H, W)
    total = ink.sum(dim=(1, 2))
    centre = []
    for dim, size in ((2, labels.shape[-1]), (1, labels.shape[-2])):
        position = (torch.arange(size, dtype=ink.dtype) + 0.5) / size
        mass = ink.sum(dim=3 - dim)                                        # (N, size)
        centre.append((mass * position).sum(dim=1) / total.clamp_min(1e-12))
    centre = torch.stack(centre, dim=1)
    return torch.where(total[:, None] > 0, centre, torch.full_like(centre, math.nan))
