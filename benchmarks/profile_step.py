"""Where a training step's time goes: per op, and per clip at several batch sizes.

    python benchmarks/profile_step.py [--threads 2] [--batches 1 2 4 8] [Trainer.py flags]

Without Trainer.py flags it profiles the quickstart's recipe (tools/recipes.py
CPU_RECIPE: small dims, 16-frame clips, teacher forcing off) on random clips.
First a torch.profiler table of one batch's steps by op (self CPU time), then
seconds per step and per clip for each of --batches.
"""
import time

import torch
from torch.profiler import ProfilerActivity, profile

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

import Trainer  # noqa: E402
from tools.recipes import CPU_RECIPE  # noqa: E402
from utils.cli import tool_parser  # noqa: E402
from utils.flags import default_args  # noqa: E402
from utils.submission import FRAME_SIZE  # noqa: E402


def model_and_clips(flags, batch):
    args = default_args(*CPU_RECIPE, "--device", "cpu", *flags, "--batch_size", str(batch))
    model = Trainer.build_model(args)
    shape = (batch, args.train_vi_len, 3, *FRAME_SIZE)
    return model, torch.rand(shape), torch.rand(shape)


def train_steps(model, img, label, steps):
    """``steps`` optimizer steps on the same clips, teacher forcing off."""
    for _ in range(steps):
        model.training_one_step(img, label, False)


def seconds_per_step(model, img, label, steps, warmup=2):
    train_steps(model, img, label, warmup)
    started = time.perf_counter()
    train_steps(model, img, label, steps)
    return (time.perf_counter() - started) / steps


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (default: torch's, here %(default)s)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="batch sizes to time (default: 1 2 4 8)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (default: 8)")
    args, flags = parser.parse_known_args(argv)
    torch.set_num_threads(args.threads)

    model, img, label = model_and_clips(flags, 2)
    train_steps(model, img, label, 3)   # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_steps(model, img, label, 4)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))

    print(f"threads {args.threads}")
    for batch in args.batches:
        seconds = seconds_per_step(*model_and_clips(flags, batch), steps=args.steps)
        print(f"batch {batch}: {seconds:.3f} s per step, {seconds / batch:.3f} s per clip")


if __name__ == "__main__":
    main()
