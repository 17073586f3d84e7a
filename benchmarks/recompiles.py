"""How many times --compile compiles each network across a run's shapes.

    python benchmarks/recompiles.py [--frames 630] [--sequences 5] [Trainer.py flags]

Dynamo compiles a network again whenever a guard fails (a new input shape, grad
mode, a flag); past its recompile limit it runs the network uncompiled with only a
warning. This compiles the five networks as `--compile` does, but with a backend
that only counts its calls (the guards, and so the recompiles, are Dynamo's, not
the backend's), and runs what a training run and Tester.py run: two training
steps, the validation rollout of one video, the test rollout of --sequences at
once, one-step prediction, then training again. It prints the compiles of each
network per phase and their total against Trainer.RECOMPILE_LIMIT. CPU, tiny
dims by default (the shapes' families do not depend on the dims).
"""
import collections

import torch

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

import Trainer  # noqa: E402
from utils.cli import tool_parser  # noqa: E402
from utils.flags import default_args  # noqa: E402

TINY = ["--F_dim", "16", "--L_dim", "16", "--N_dim", "4", "--D_out_dim", "24"]


def main(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--frames", type=int, default=630, help="frames per rolled-out sequence")
    p.add_argument("--sequences", type=int, default=5, help="test sequences rolled out at once")
    opts, flags = p.parse_known_args(argv)
    args = default_args(*(flags or TINY), device="cpu")
    torch.manual_seed(0)
    model = Trainer.VAE_Model(args)
    counts = collections.Counter()
    phase = ["?"]

    def counting(name):
        def backend(graph_module, example_inputs):
            counts[(phase[0], name)] += 1
            return graph_module.forward
        return backend

    for option in ("recompile_limit", "cache_size_limit"):   # count every compile
        if hasattr(torch._dynamo.config, option):
            setattr(torch._dynamo.config, option, 1000)
    for name in Trainer.NETWORK_NAMES:
        getattr(model, name).compile(backend=counting(name))

    H, W = args.frame_H, args.frame_W
    clip = lambda b, t: torch.rand(b, t, 3, H, W)  # noqa: E731
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train(steps=2):
        for _ in range(steps):
            loss, _ = model(clip(args.batch_size, args.train_vi_len),
                            clip(args.batch_size, args.train_vi_len), teacher_forcing=False)
            optim.zero_grad()
            loss.backward()
            optim.step()

    phases = [
        ("train", train),
        ("validation rollout", lambda: model.rollout(clip(1, 1)[:, 0], clip(1, opts.frames))),
        ("test rollout", lambda: model.rollout(clip(opts.sequences, 1)[:, 0],
                                               clip(opts.sequences, opts.frames))),
        ("one-step prediction", lambda: model.predict_from_truth(clip(1, opts.frames),
                                                                 clip(1, opts.frames))),
        ("train again", train),
    ]
    for name, run in phases:
        phase[0] = name
        with torch.no_grad() if "train" not in name else torch.enable_grad():
            run()
    width = max(map(len, Trainer.NETWORK_NAMES))
    print(f"{'network':{width}s} " + " ".join(f"{name:>20s}" for name, _ in phases)
          + f" {'total':>6s}")
    worst = 0
    for network in Trainer.NETWORK_NAMES:
        row = [counts[(name, network)] for name, _ in phases]
        worst = max(worst, sum(row))
        print(f"{network:{width}s} " + " ".join(f"{n:20d}" for n in row) + f" {sum(row):6d}")
    print(f"most compiles of one network: {worst}; Trainer.RECOMPILE_LIMIT "
          f"{Trainer.RECOMPILE_LIMIT}, Dynamo's default 8")
    return counts


if __name__ == "__main__":
    main()
