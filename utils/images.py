"""Image files -> uint8 tensors: ordering by frame number, decoding with clear errors."""
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from utils.errors import UserError

_LAST_INTEGER = re.compile(r"(\d+)(?!.*\d)")


def frame_index(path):
    """The integer in a file name (frame12.png -> 12), used for ordering."""
    match = _LAST_INTEGER.search(Path(path).stem)
    return int(match.group(1)) if match else -1


def list_images(folder):
    """The PNGs of a folder, ordered by the integer in their names."""
    return sorted(Path(folder).glob("*.png"), key=lambda p: (frame_index(p), p.name))


def read_image(path, size):
    """One image file -> uint8 tensor (3, H, W) at size (H, W), any input mode."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                # Pose images have a white background; keep it white where transparent.
                rgba = image.convert("RGBA")
                image = Image.new("RGB", rgba.size, (255, 255, 255))
                image.paste(rgba, mask=rgba.getchannel("A"))
            elif image.mode != "RGB":   # an RGB file needs no converted copy
                image = image.convert("RGB")
            if image.size != (size[1], size[0]):
                # Exactly the template's resize (torchvision's Resize on a PIL image), so
                # both loaders give identical tensors.
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise UserError(f"cannot read image '{path}' ({error}); "
                        "re-download or regenerate this file.") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def read_images(paths, size, workers=4, done=None):
    """Many image files -> uint8 tensor (N, 3, H, W), decoded by a thread pool;
    ``done(1)`` (a progress bar's update) is called after each image."""
    out = torch.empty(len(paths), 3, *size, dtype=torch.uint8)

    def decode(i):
        out[i] = read_image(paths[i], size)
        if done is not None:
            done(1)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(decode, range(len(paths))))
    return out


def to_uint8(frames):
    """Float frames (..., 3, H, W) in [0, 1] -> uint8 tensor: round(pixel * 255), clipped.

    The one conversion used for GIFs, the submission CSV and tests.
    """
    return frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
