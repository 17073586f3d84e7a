"""Devices, precision, torchrun/DDP setup and seeding.

DDP is used only when the script was launched by torchrun (WORLD_SIZE > 1);
a plain ``python Trainer.py`` never creates a process group.
"""
import contextlib
import functools
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from utils.errors import UserError, choice


def mps_available():
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name="auto", gpu=0):
    """'auto' -> cuda, then mps, then cpu; 'cuda' is CUDA device ``gpu``, 'cuda:N'
    device N. A CUDA device is checked and made the current one here, before
    anything else asks CUDA about "the" device (its precision, pinned memory)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was asked for but no CUDA GPU is available; "
                            "use --device cpu (or the default --device auto).")
        flag, index = (f"--device {name}", name[5:]) if name != "cuda" else (f"--gpu {gpu}", gpu)
        try:
            index = int(index)
        except ValueError:
            raise UserError(f"{flag}: a CUDA device is cuda or cuda:N, N a number.") from None
        count = torch.cuda.device_count()
        if not 0 <= index < count:
            raise UserError(f"{flag}: this machine has {count} CUDA device(s), numbered "
                            f"0..{count - 1} (nvidia-smi lists them).")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if name == "mps" and not mps_available():
        raise UserError("--device mps was asked for but MPS is not available; use --device cpu.")
    return torch.device(name)


def pins_memory(device):
    """Whether host batches bound for ``device`` are pinned: on CUDA only. A copy
    is non_blocking only from pinned memory (an unpinned non_blocking copy to MPS
    can hand the kernel a half-written batch)."""
    return torch.device(device).type == "cuda"


def to_device(tensor, device):
    return tensor.to(device, non_blocking=pins_memory(device))


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


# CUDA compute capabilities: bf16 tensor cores from Ampere (8.0) on; fp16 tensor
# cores from Volta (7.0) on (V100, T4, RTX 20xx); below, no fast half precision.
CUDA_BF16_CAPABILITY, CUDA_FP16_CAPABILITY = (8, 0), (7, 0)
# --amp after resolve_amp -> the autocast dtype (None: fp32, no autocast).
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


@functools.lru_cache
def resolve_amp(amp, device_type):
    """--amp auto -> the fastest precision this device type trains in safely:
    bf16 where it is native (CUDA 8.0+, CPUs with AVX512-BF16/AMX); fp16 with a
    gradient scaler on CUDA 7.x; fp32 ("off") on older GPUs, MPS and other CPUs.

    args keep the requested value, so a checkpoint trained with auto runs in
    each device's own precision where it is resumed or tested. CUDA asks the
    current device (resolve_device made it the chosen one).
    """
    if amp != "auto":
        return amp
    if device_type == "cuda":
        capability = torch.cuda.get_device_capability()
        if capability >= CUDA_BF16_CAPABILITY and torch.cuda.is_bf16_supported(
                including_emulation=False):
            return "bf16"
        return "fp16" if capability >= CUDA_FP16_CAPABILITY else "off"
    if device_type == "cpu" and cpu_computes_bf16():
        return "bf16"
    return "off"


@functools.lru_cache
def fp16_trains_on(device_type):
    """Whether fp16 autocast and a working GradScaler exist for this device type
    in this torch: tried once on a one-element parameter."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # a scaler that cannot run disables itself
            scaler = torch.amp.GradScaler(device_type)
            if not scaler.is_enabled():
                return False
            weight = torch.ones(1, device=device_type, requires_grad=True)
            optimizer = torch.optim.SGD([weight], lr=0.0)
            with torch.autocast(device_type, dtype=torch.float16):
                if not torch.is_autocast_enabled(device_type):
                    return False
                loss = torch.mm(weight[None], weight[None]).sum()
            scaler.scale(loss.float()).backward()
            scaler.step(optimizer)
            scaler.update()
        return True
    except (RuntimeError, NotImplementedError, TypeError, AssertionError):
        return False


def require_amp_runs(amp, device_type):
    """Stop at the start, naming --amp, where fp16 would train unscaled."""
    if resolve_amp(amp, device_type) == "fp16" and not fp16_trains_on(device_type):
        raise UserError(f"--amp {amp}: fp16 needs a gradient scaler, and this torch "
                        f"({torch.__version__}) has none that runs on {device_type}; fp16 "
                        "without one underflows silently. Use --amp auto, bf16 or off.")


def autocast(amp, device_type):
    """The autocast context of a precision; a null context for fp32, so that a
    device type without autocast (MPS on older torch) never builds one."""
    dtype = choice(AMP_DTYPES, resolve_amp(amp, device_type), "--amp")
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def describe_precision(amp, device_type):
    """One line for the log: the precision a run computes in, and why."""
    precision = resolve_amp(amp, device_type).replace("off", "fp32")
    if amp != "auto":
        return f"precision: {precision} (--amp {amp})"
    if precision == "fp16":
        return ("precision: fp16 with a dynamic gradient scaler (--amp auto: this GPU has "
                "fp16 tensor cores but no native bf16)")
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
