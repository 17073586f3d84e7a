"""Where a CPU training step's time goes: the quickstart's step under each
candidate setting, timed interleaved in one process, as ratios to the step as
Trainer.py runs it.

    python benchmarks/cpu_paths.py [--threads 2] [--repeats 5] [--also FLAGS ...]
        [Trainer flags, e.g. --amp off]

To approximate a CPU without AVX-512 (most laptops) on one that has it:

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/cpu_paths.py --amp off

Variants (each on its own copy of the same weights, the same clips):
  as run           the model as Trainer.py builds it (the flags given)
  NCHW             --no-channels_last
  flush denormals  torch.set_flush_denormal(True) around the step
  native conv      oneDNN (mkldnn) convolutions off: ATen's own kernels
  no autocast      the step without any autocast context (what --amp off
                   costs against none)
  1 thread / 2 threads  torch.set_num_threads
  --also FLAGS     one more variant per quoted string of Trainer flags added to the
                   recipe, e.g. --also "--F_dim 16 --D_out_dim 24" "--batch_size 1"
It also counts the denormal numbers in the weights, gradients and optimizer
state after the warm-up steps: where they are many, flushing them pays.
"""
import contextlib
import copy
import shlex
import statistics
import time

import torch

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

import Trainer  # noqa: E402
from tools.recipes import CPU_RECIPE  # noqa: E402
from utils.cli import tool_parser  # noqa: E402
from utils.flags import default_args  # noqa: E402
from utils.runtime import resolve_amp  # noqa: E402
from utils.submission import FRAME_SIZE  # noqa: E402


@contextlib.contextmanager
def flushed_denormals():
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextlib.contextmanager
def threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def denormal_share(model):
    """Share of fp32 values below the normal range (but not zero) in the weights,
    their gradients and the optimizer's state."""
    tensors = [p.detach() for p in model.parameters()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    for state in model.trainer.optim.state.values():
        tensors += [v for v in state.values() if torch.is_tensor(v) and v.dim() > 0]
    tiny = torch.finfo(torch.float32).tiny
    flat = torch.cat([t.float().flatten() for t in tensors])
    return ((flat != 0) & (flat.abs() < tiny)).float().mean().item()


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads of the variants (default: torch's, here %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default: 5)")
    parser.add_argument("--steps", type=int, default=4, help="steps per round (default: 4)")
    parser.add_argument("--also", nargs="*", default=[], metavar="FLAGS",
                        help="more variants: each a quoted string of Trainer flags added to "
                             "the recipe (default: none)")
    opts, flags = parser.parse_known_args(argv)
    torch.set_num_threads(opts.threads)
    args = default_args(*CPU_RECIPE, "--device", "cpu", *flags)

    def clips(args):   # (img, label), each (B, T, 3, H, W)
        g = torch.Generator().manual_seed(0)
        shape = (args.batch_size, args.train_vi_len, 3, *FRAME_SIZE)
        return torch.rand(shape, generator=g), torch.rand(shape, generator=g)

    base = Trainer.build_model(args)
    nchw = copy.deepcopy(base)
    nchw.args = copy.copy(args)
    nchw.args.channels_last = False
    nchw.adopt_settings()
    no_autocast = copy.deepcopy(base)
    no_autocast.autocast = contextlib.nullcontext
    variants = {   # name -> (model, context)
        "as run": (base, contextlib.nullcontext),
        "NCHW": (nchw, contextlib.nullcontext),
        "flush denormals": (copy.deepcopy(base), flushed_denormals),
        "native conv": (copy.deepcopy(base), lambda: torch.backends.mkldnn.flags(enabled=False)),
        "no autocast": (no_autocast, contextlib.nullcontext),
        "1 thread": (copy.deepcopy(base), lambda: threads(1)),
        "2 threads": (copy.deepcopy(base), lambda: threads(2)),
    }
    for extra in opts.also:
        variants[extra] = (Trainer.build_model(default_args(*CPU_RECIPE, "--device", "cpu",
                                                            *flags, *shlex.split(extra))),
                           contextlib.nullcontext)
    inputs = {id(model): clips(model.args) for model, _ in variants.values()}

    def steps(model, context, n):
        with context():
            for _ in range(n):
                model.training_one_step(*inputs[id(model)], False)

    for model, context in variants.values():   # warm-up: oneDNN primitives, optimizer state
        steps(model, context, 3)
    share = denormal_share(base)
    times = {name: [] for name in variants}
    for _ in range(opts.repeats):
        for name, (model, context) in variants.items():
            started = time.perf_counter()
            steps(model, context, opts.steps)
            times[name].append((time.perf_counter() - started) / opts.steps)

    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"precision {resolve_amp(args.amp, 'cpu')}, {opts.threads} thread(s), batch "
          f"{args.batch_size} x {args.train_vi_len} frames, dims F{args.F_dim} L{args.L_dim} "
          f"N{args.N_dim} D{args.D_out_dim}")
    print(f"denormal values after the warm-up: {100 * share:.3f}% of weights, gradients and "
          "optimizer state")
    reference = statistics.median(times["as run"])
    width = max(17, *map(len, times))
    print(f"{'variant':<{width}} {'s per step':>10} {'vs as run':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<{width}} {median:>10.3f} {reference / median:>9.2f}x")


if __name__ == "__main__":
    main()
