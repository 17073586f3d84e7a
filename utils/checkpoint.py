"""Checkpoint IO: atomic writes, safe loads, template compatibility.

A checkpoint is a dict of tensors and plain values only, so it loads with
``torch.load(weights_only=True)``: a file crafted to run code when unpickled is
refused, and nothing in it runs.
"""
import pickle
import struct
from pathlib import Path

import torch

from utils.errors import UserError
from utils.fileio import atomic_write

# 2: no "scheduler" entry, since the LR is a function of (args, epoch, step), all
# stored. Version 1 files hold a LambdaLR state there; it is ignored, so they load.
FORMAT_VERSION = 2
# Where each model dimension can be read off a state_dict: (key, axis, divisor).
DIM_KEYS = {
    "F_dim": ("frame_transformation.6.weight", 0, 1),
    "L_dim": ("label_transformation.4.conv2.weight", 0, 1),
    "N_dim": ("Gaussian_Predictor.6.weight", 0, 2),
    "D_out_dim": ("Decoder_Fusion.5.weight", 0, 1),
}


def atomic_save(obj, path):
    """torch.save ``obj`` to ``path`` atomically (old file or new one, never a truncated one)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path):
    """Load a checkpoint dict safely, or raise a UserError that says why not."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: '{path}' (--ckpt_path).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():   # corrupt bytes, not a crafted object
            raise UserError(f"'{path}' is not a readable checkpoint (corrupt or not made by "
                            "torch.save); re-download or re-create it.") from None
        raise UserError(
            f"refusing to load '{path}': it holds objects other than tensors and plain "
            f"values, which could run code when unpickled ({str(error).splitlines()[0]}). "
            "Only load checkpoints written by this project or the course template.") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            struct.error, UnicodeDecodeError) as error:
        # Random bytes can read as pickle opcodes that index an empty memo or stack.
        raise UserError(f"'{path}' is not a readable checkpoint ({type(error).__name__}: "
                        f"{error}).") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"'{path}' is not a Lab 4 checkpoint: it has no 'state_dict' entry.")
    return ckpt


def is_template_checkpoint(ckpt):
    """The template stored the model's state_dict under 'optimizer' and no args."""
    optimizer = ckpt.get("optimizer")
    return "format_version" not in ckpt and not (
        isinstance(optimizer, dict) and "param_groups" in optimizer)


def dims_of(state_dict):
    """The model dimensions a state_dict was made with, e.g. {'F_dim': 128, ...}."""
    dims = {}
    for name, (key, axis, divisor) in DIM_KEYS.items():
        if key in state_dict:
            dims[name] = int(state_dict[key].shape[axis]) // divisor
    return dims


def check_dims(state_dict, args, source):
    """Raise a UserError naming every dimension that differs from ``args``."""
    found = dims_of(state_dict)
    wrong = [f"--{k} {getattr(args, k)} (checkpoint: {v})"
             for k, v in found.items() if getattr(args, k) != v]
    if wrong:
        raise UserError(f"'{source}' was made with other model dimensions: "
                        + ", ".join(wrong) + ". Pass the checkpoint's values.")


def plain_args(args):
    """argparse.Namespace -> dict of primitives (safe under weights_only)."""
    out = {}
    for key, value in vars(args).items():
        if isinstance(value, Path):
            value = str(value)
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = [v for v in value]
    return out
