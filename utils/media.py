"""GIFs of frame sequences."""
from pathlib import Path

import imageio.v3 as iio
import torch

from utils.fileio import atomic_write, make_parent
from utils.images import to_uint8


def save_gif(path, frames, duration_ms=20):
    """Write (T, 3, H, W) frames in [0, 1] as a looping GIF, atomically (a failed
    write keeps the previous file)."""
    path = Path(path)
    # Encoded in memory first: a failed write of the file then leaves no half-done
    # encoder behind to flush into it later.
    data = iio.imwrite("<bytes>", to_uint8(frames).permute(0, 2, 3, 1).numpy(), extension=".gif",
                       duration=duration_ms, loop=0)
    make_parent(path)
    return atomic_write(path, lambda f: f.write(data), durable=False)


def side_by_side(sequences, gap=2):
    """Several (T, 3, H, W) sequences as one, side by side, separated by white
    columns, as long as the shortest."""
    length = min(s.shape[0] for s in sequences)
    panels = []
    for seq in sequences:
        panels.append(seq[:length].detach().float().cpu())
        panels.append(torch.ones(length, 3, seq.shape[2], gap))
    return torch.cat(panels[:-1], dim=3)
