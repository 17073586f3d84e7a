"""Devices, precision, torchrun/DDP setup and seeding.

DDP is used only when the script was launched by torchrun (WORLD_SIZE > 1);
a plain ``python Trainer.py`` never creates a process group.
"""
import functools
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from utils.errors import UserError


def resolve_device(name="auto", gpu=0):
    """'auto' -> cuda, then mps, then cpu; 'cuda' uses CUDA device ``gpu``."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available; "
                            "use --device cpu (or the default --device auto).")
        if name == "cuda":
            if not 0 <= gpu < torch.cuda.device_count():
                raise UserError(f"--gpu {gpu}: this machine has {torch.cuda.device_count()} "
                                "CUDA device(s).")
            name = f"cuda:{gpu}"
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for but MPS is not available; use --device cpu.")
    return torch.device(name)


CPUINFO = Path("/proc/cpuinfo")


def cpu_computes_bf16():
    """AVX512-BF16 or AMX on this CPU, with ATen's kernels at AVX-512 (they run at
    AVX2 on a CPU without it, or under ATEN_CPU_CAPABILITY=avx2, the approximation
    of such a CPU): torch's own check where this torch has one, else the flags
    Linux lists (torch 2.4 has no check; elsewhere: no)."""
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")()
    if not capability.startswith("AVX512"):
        return False
    if hasattr(torch.cpu, "_is_avx512_bf16_supported"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    try:
        flags = CPUINFO.read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache
def resolve_amp(amp, device_type):
    """--amp auto -> bf16 where the device type has native bf16 arithmetic, else off.

    args keep the requested value, so a checkpoint trained with auto runs in
    bf16 where that is native and in fp32 elsewhere (an old GPU, a laptop CPU).
    """
    if amp != "auto":
        return amp
    if device_type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    elif device_type == "cpu":
        native = cpu_computes_bf16()
    else:
        native = False
    return "bf16" if native else "off"


def describe_precision(amp, device_type):
    """One line for the log: the precision a run computes in, and why."""
    precision = resolve_amp(amp, device_type).replace("off", "fp32")
    if amp != "auto":
        return f"precision: {precision} (--amp {amp})"
    if precision != "fp32":
        return f"precision: {precision} (--amp auto: this {device_type} computes it natively)"
    slower = ("; a step takes several times as long as with native bf16 (README: "
              "'How long, by kind of CPU')" if device_type == "cpu" else "")
    return f"precision: fp32 (--amp auto: this {device_type} has no native bf16){slower}"


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def mean(self, values):
        """All-reduce a list of floats to their mean over ranks."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.world_size).tolist()

    def wrap(self, model):
        """The module that runs training's forward pass: under torchrun a DDP wrapper
        (which averages gradients across processes), else the model itself."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def close(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


# Rank 0 validates and writes checkpoints while the other ranks wait at a
# barrier; NCCL's default (10 min) is too short for a long validation.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


def setup_distributed(device_name="auto", gpu=0):
    """One process per device under torchrun (NCCL on CUDA, gloo on CPU).

    Under torchrun each process takes the GPU numbered by its LOCAL_RANK, so
    ``gpu`` is ignored there (choose GPUs with CUDA_VISIBLE_DEVICES).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(device=resolve_device(device_name, gpu))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_name.startswith("cuda:"):
        raise UserError(f"--device {device_name}: under torchrun each process uses the GPU of "
                        "its LOCAL_RANK; pass --device cuda (select GPUs with "
                        "CUDA_VISIBLE_DEVICES) or --device cpu.")
    if device_name == "mps":
        raise UserError("--device mps cannot be used under torchrun (no collective backend "
                        "supports MPS); use --device cpu.")
    if device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available; "
                            "use --device cpu.")
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started LOCAL_RANK {local_rank} but this node has "
                            f"{torch.cuda.device_count()} CUDA device(s); lower --nproc_per_node.")
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = resolve_device("cpu" if device_name == "auto" else device_name), "gloo"
    dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT,
                            device_id=device if backend == "nccl" else None)
    return Distributed(rank=rank, world_size=world_size, device=device)


def seed_for(seed, epoch, rank=0):
    """The seed of one epoch on one rank: a resumed run draws what an
    uninterrupted one would, with no RNG state to carry in the checkpoint."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2 ** 63)
