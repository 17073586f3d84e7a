"""The whole product in one command: data, training, testing, scoring, plots.

    python tools/quickstart.py [--out runs/quickstart] [--data data/synthetic] [--device auto]

Generates the synthetic dance dataset if it is missing, trains with a
configuration measured to fit a CPU budget (small dims) or, on a GPU, the
default dims; then runs Tester.py and tools/score_submission.py against the
synthetic ground truth and prints where everything is. Every step is the real
command-line tool in a subprocess, so what you see here is what you would type.
"""
import json
import time
from pathlib import Path

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

from tools.recipes import CPU_RECIPE, GPU_RECIPE, SMOKE_DATA, SMOKE_RECIPE  # noqa: E402
from utils.cli import run_script, tool_parser  # noqa: E402
from utils.runlog import read_metrics  # noqa: E402
from utils.runtime import resolve_device  # noqa: E402


def step(title, command):
    print(f"\n=== {title}", flush=True)
    started = time.time()
    run_script(command)
    print(f"=== {title}: {time.time() - started:.0f} s", flush=True)


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--out", default="runs/quickstart", help="folder for all outputs")
    parser.add_argument("--data", default="data/synthetic",
                        help="synthetic dataset folder (generated there if missing)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny data and dims: checks the pipeline in about a minute")
    args, trainer_flags = parser.parse_known_args(argv)
    out, data = Path(args.out).resolve(), Path(args.data).resolve()
    device = resolve_device(args.device)
    recipe = GPU_RECIPE if device.type == "cuda" else CPU_RECIPE
    if args.smoke:
        recipe = SMOKE_RECIPE
    started = time.time()

    step("1/4 synthetic dataset", ["tools/synthetic_dance.py", "--out", data,
                                   *(SMOKE_DATA if args.smoke else []),
                                   "--preview", out / "dataset_preview.png"])
    # A second quickstart keeps the first one's training in train/previous-<N>/.
    step("2/4 training", ["Trainer.py", "--DR", data, "--save_root", out / "train",
                          "--device", args.device, "--overwrite", *recipe, *trainer_flags])
    step("3/4 testing", ["Tester.py", "--DR", data, "--save_root", out / "test",
                         "--ckpt_path", out / "train" / "best.ckpt", "--device", args.device])
    step("4/4 scoring", ["tools/score_submission.py", out / "test" / "submission.csv",
                         "--gt", data / "test_gt", "--json", out / "test" / "score.json"])

    rows = read_metrics(out / "train")
    scores = json.loads((out / "test" / "score.json").read_text())
    print(f"""
Done in {(time.time() - started) / 60:.1f} min on {device}.
  dataset           {data}  (preview: {out / 'dataset_preview.png'})
  checkpoints       {out / 'train'}/best.ckpt, last.ckpt, epoch=N.ckpt
  training logs     {out / 'train'}/metrics.csv, val_psnr_epoch<N>.csv
  plots             {out / 'train' / 'plots'}/
  submission        {out / 'test' / 'submission.csv'}
  GIFs              {out / 'test'}/pred_seq<i>.gif
  best val PSNR     {max(r['val_psnr'] for r in rows):.2f} dB (629 predicted frames)
  test score        {scores['score']:.2f} dB with the grader's metric (public {scores['public']:.2f}, private {scores['private']:.2f})""")


if __name__ == "__main__":
    main()
