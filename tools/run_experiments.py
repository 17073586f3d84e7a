"""Train the three KL-annealing strategies (and optionally teacher-forcing
variants) with one seed and budget, then draw the report's comparison figures.

    python tools/run_experiments.py --DR <dataset> --out DIR [--budget EPOCHS]
                                    [--teacher_forcing] [any Trainer.py flags]

Each run is a real `python Trainer.py` in DIR/<name>; figures and summary.md
go to DIR/figures (tools/compare_runs.py). A run whose folder already holds a
complete metrics.csv is kept, so an interrupted sweep can simply be rerun.
"""
import math
from pathlib import Path

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

from tools.compare_runs import compare  # noqa: E402
from tools.recipes import decayed_teacher_forcing  # noqa: E402
from utils.cli import run_script, tool_parser  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402
from utils.runlog import read_metrics  # noqa: E402

KL_RUNS = {"kl_cyclical": ["--kl_anneal_type", "Cyclical"],
           "kl_monotonic": ["--kl_anneal_type", "Monotonic"],
           "kl_none": ["--kl_anneal_type", "None"]}
# Teacher forcing from the start, decaying to none by mid-budget, against none at all:
# {name: (flags for a budget, label for a budget)}.
TF_RUNS = {"tf_decay": (decayed_teacher_forcing,
                        lambda budget: "teacher forcing 1.0, decaying to 0 by epoch "
                                       f"{math.ceil(budget / 2)}"),
           "tf_off": (lambda budget: ["--tfr", "0.0"], lambda budget: "no teacher forcing")}


def train(name, out, data, budget, flags, extra):
    run_dir = out / name
    if len(read_metrics(run_dir)) >= budget:
        print(f"== {name}: already complete in {run_dir}, kept")
        return run_dir
    # An incomplete run there starts again; --overwrite keeps it in previous-<N>/.
    # Cycles of about 4 epochs (the template's 10 cycles of 7 over 70 epochs
    # at full budget); a --kl_anneal_cycle among the trainer flags wins.
    cycles = min(10, max(1, budget // 4))
    print(f"== {name}", flush=True)
    run_script(["Trainer.py", "--DR", data, "--save_root", run_dir, "--num_epoch", budget,
                "--kl_anneal_cycle", cycles, "--overwrite", *extra, *flags])
    return run_dir


@exit_on_user_error
def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--DR", required=True, help="dataset root")
    parser.add_argument("--out", required=True, help="folder for the runs and figures/")
    parser.add_argument("--budget", type=int, default=10, help="epochs per run")
    parser.add_argument("--teacher_forcing", action="store_true",
                        help="also compare teacher-forcing schedules (with the default KL type)")
    args, trainer_flags = parser.parse_known_args(argv)
    if args.budget < 2:
        parser.error(f"--budget must be at least 2 epochs (a KL schedule needs 2 to rise), "
                     f"got {args.budget}")
    # Trainer.py runs in the repository root: the paths it gets are absolute.
    out, data = Path(args.out).resolve(), Path(args.DR).resolve()
    runs = [train(name, out, data, args.budget, flags, trainer_flags)
            for name, flags in KL_RUNS.items()]
    figures = compare(runs, out / "figures")
    if args.teacher_forcing:
        tf_runs = [train(name, out, data, args.budget, flags(args.budget), trainer_flags)
                   for name, (flags, _) in TF_RUNS.items()]
        figures += compare(tf_runs, out / "figures_teacher_forcing",
                           labels=[label(args.budget) for _, label in TF_RUNS.values()])
    print("figures:\n  " + "\n  ".join(map(str, figures)))


if __name__ == "__main__":
    main()
