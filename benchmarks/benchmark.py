"""How fast is this project? Training step, test rollout, data loading, submission.

    python benchmarks/benchmark.py [--device auto|cpu|cuda] [--json FILE] [--quick]
                                   [--batch_size 2] [--clip_len 16] [--repeats N] [Trainer.py flags]

Any Trainer.py flag (--F_dim, --amp, --no-channels_last, --compile, ...) is passed
on to the project's model; without them it runs with the project's defaults.

Everything is measured in one process on a small synthetic dataset (written to a
temporary folder). The project is compared with the NAIVE REFERENCE of
benchmarks/template_reference.py: the course template's loop, one frame at a time,
re-encoding every frame it needs, in fp32. Variants being compared run
interleaved (A, B, A, B, ...) after a warm-up and each figure is a median, so a
load from other processes hits all variants alike and the ratios stay
meaningful even when absolute times do not.
"""
import copy
import ctypes
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

import Trainer  # noqa: E402
from dataloader import Dataset_Dance, DanceTestSequences, list_images, read_images  # noqa: E402
from tools.synthetic_dance import generate_dataset  # noqa: E402
from benchmarks.template_reference import (TemplateModel, naive_rollout,  # noqa: E402
                                      naive_training_step)
from utils.cli import tool_parser  # noqa: E402
from utils.flags import default_args, validate_args  # noqa: E402
from utils.metrics import FRAMES_PER_SEQUENCE, REAL_TRAIN_FRAMES  # noqa: E402
from utils.runtime import resolve_amp, resolve_device  # noqa: E402
from utils.submission import write_submission  # noqa: E402


# --------------------------------------------------------------------------- measuring
def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, device):
    """Seconds of one call of fn (the device synchronised at both ends)."""
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


def peak_memory_mb(fn, device):
    """Peak memory of one call of fn above what was in use before it: on CUDA the
    allocator's peak; on CPU the resident-set high-water mark (VmHWM, reset
    through /proc/self/clear_refs) after handing freed heap back to the OS.
    Never combined with timing: the reset makes the next call fault its memory
    in afresh, which a training loop that reuses its buffers never pays."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        try:
            Path("/proc/self/clear_refs").write_text("5")   # "5": VmHWM := VmRSS
            before = _proc_status_mb("VmRSS")
        except OSError:
            before = float("nan")
    fn()
    synchronize(device)
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return _proc_status_mb("VmHWM") - before


def interleaved(variants, repeats, device):
    """Run {name: fn} round-robin: one warm-up round that measures peak memory,
    then ``repeats`` timed rounds. Returns ({name: [seconds, ...]}, {name: peak MB})."""
    peaks = {name: peak_memory_mb(fn, device) for name, fn in variants.items()}
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn, device))
    return times, peaks


def median(values):
    return statistics.median(values)


def matmul_gflops(device, dtype, n, repeats):
    """Median GFLOP/s of an n x n by n x n matmul."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    seconds = median(interleaved({"mm": lambda: a @ b}, repeats, device)[0]["mm"])
    return 2 * n ** 3 / seconds / 1e9


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_native(device):
    return resolve_amp("auto", device.type) == "bf16"


def counted_flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# --------------------------------------------------------------------------- benchmark
def parse(argv=None):
    p = tool_parser(__doc__, allow_abbrev=False,
                    epilog="Other flags go to Trainer.py's parser (model dims, "
                    "--amp, --channels_last, --compile, ...).")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--batch_size", type=int, default=2, help="clips per training step")
    p.add_argument("--clip_len", type=int, default=16, help="frames per training clip")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repetitions per figure (default 5, or 2 with --quick)")
    p.add_argument("--rollout_repeats", type=int, default=None,
                   help="timed rounds of the rollouts (default 5, or 2 with --quick)")
    p.add_argument("--test_sequences", type=int, default=5, help="sequences in the rollout")
    p.add_argument("--rollout_frames", type=int, default=None,
                   help="frames per test sequence (default 630, or 40 with --quick)")
    p.add_argument("--train_clips", type=int, default=None,
                   help="clips in the synthetic training set (default 40, or 8 with --quick)")
    p.add_argument("--matmul_size", type=int, default=None,
                   help="side of the peak-measuring matmul (default 4096, or 1024 with --quick)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--real_size_pairs", type=int, default=None,
                   help="frame+label pairs written at the real 1024x512 to time loading them; "
                        "0 skips (default 200, or 20 with --quick)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and a short rollout")
    args, project_flags = p.parse_known_args(argv)
    quick = args.quick
    defaults = dict(repeats=(5, 2), rollout_repeats=(5, 2),
                    rollout_frames=(FRAMES_PER_SEQUENCE, 40), train_clips=(40, 8),
                    matmul_size=(4096, 1024), real_size_pairs=(200, 20))
    for name, (full, short) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    return args, project_flags


def template_read(path, transform):
    """How the course template reads an image on every access: PIL, then torchvision."""
    with Image.open(path) as image:
        return transform(image.convert("RGB"))


def real_size_loading(pairs, frame_size):
    """Seconds to load the real training split's 23,410 frames and labels (1024x512 PNGs)
    into 32x64 tensors, extrapolated from `pairs` synthetic pairs of that size: the
    project's decoded-cache build (a thread pool) against the template's
    decode-per-access reading, which every epoch pays again."""
    from torchvision import transforms
    transform = transforms.Compose([transforms.Resize(list(frame_size)), transforms.ToTensor()])
    with tempfile.TemporaryDirectory(prefix="lab4_bench_real_") as tmp:
        root = generate_dataset(Path(tmp) / "data", train_frames=pairs, val_frames=1,
                                test_sequences=1, test_frames=1, frame_size=(512, 1024),
                                log=lambda *a, **k: None)
        files = list_images(root / "train" / "train_img")
        files += [root / "train" / "train_label" / f.name for f in files]
        started = time.perf_counter()
        read_images(files, frame_size)
        cache = time.perf_counter() - started
        started = time.perf_counter()
        for path in files:
            template_read(path, transform)
        template = time.perf_counter() - started
    scale = REAL_TRAIN_FRAMES / pairs
    return dict(pairs=pairs, cache_build_s=cache * scale, template_pass_s=template * scale,
                measured_cache_s=cache, measured_template_s=template)


def build_models(project_flags, device):
    """The project's model as Trainer.py builds it (its defaults plus the given
    flags), and the naive reference: the same weights in fp32, NCHW, eager."""
    # Speed does not depend on the step size; a tiny one keeps dozens of steps on
    # the same batch finite (at the default lr they can diverge, as in the first
    # steps of a real run).
    args = default_args("--lr", "1e-6", *project_flags)
    validate_args(args)
    model = Trainer.build_model(args, device)
    ref_args = copy.copy(args)
    ref_args.amp, ref_args.channels_last, ref_args.compile = "off", False, False
    reference = TemplateModel(ref_args).to(device)
    reference.load_state_dict(model.state_dict())
    return model, reference


def run(opts, project_flags):
    device = resolve_device(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    model, reference = build_models(project_flags, device)
    args = model.args
    frame_size = (args.frame_H, args.frame_W)
    results = dict(
        device=str(device),
        device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                     else cpu_name()),
        torch=torch.__version__, threads=torch.get_num_threads(),
        load_average_before=os.getloadavg(),
        dims=dict(F_dim=args.F_dim, L_dim=args.L_dim, N_dim=args.N_dim, D_out_dim=args.D_out_dim,
                  frame_H=args.frame_H, frame_W=args.frame_W),
        batch_size=opts.batch_size, clip_len=opts.clip_len,
        settings=dict(amp=resolve_amp(args.amp, device.type),
                      channels_last=args.channels_last, compile=args.compile,
                      frame_chunk=Trainer.FRAME_CHUNK.get(device.type),
                      project_flags=project_flags, quick=opts.quick),
        repeats=opts.repeats, rollout_repeats=opts.rollout_repeats)

    with tempfile.TemporaryDirectory(prefix="lab4_bench_") as tmp:
        root = Path(tmp) / "data"
        print(f"writing a synthetic dataset to {root} ...")
        generate_dataset(root, train_frames=opts.train_clips * opts.clip_len,
                         val_frames=opts.clip_len, test_sequences=opts.test_sequences,
                         test_frames=opts.rollout_frames, workers=1, log=lambda *a, **k: None)

        # ---- data loading: decoded cache against PNG decoding, one pass over the set
        started = time.perf_counter()
        cached = Dataset_Dance(root, None, "train", opts.clip_len, frame_size=frame_size,
                               cache="memory")
        results["data_cache_build_s"] = time.perf_counter() - started
        png = Dataset_Dance(root, None, "train", opts.clip_len, frame_size=frame_size,
                            cache="none")
        epoch = lambda dataset: [dataset[i] for i in range(len(dataset))]  # noqa: E731
        print("timing data loading ...")
        t, _ = interleaved({"cached": lambda: epoch(cached), "png": lambda: epoch(png)},
                           opts.repeats, torch.device("cpu"))
        results["data_epoch_s"] = {k: median(v) for k, v in t.items()}
        results["data_epoch_raw_s"] = t
        results["data_clips"] = len(cached)
        if opts.real_size_pairs:
            print(f"timing loading at the real size ({opts.real_size_pairs} pairs) ...")
            results["real_size_loading"] = real_size_loading(opts.real_size_pairs, frame_size)

        # ---- training step
        clips = [cached[i % len(cached)] for i in range(opts.batch_size)]
        img = torch.stack([frames for frames, _ in clips]).to(device)      # (B, T, 3, H, W)
        label = torch.stack([poses for _, poses in clips]).to(device)       # (B, T, 3, H, W)
        model.train()
        reference.train()
        beta = model.trainer.beta
        variants = {
            "project_tf_off": lambda: model.training_one_step(img, label, False),
            "naive_tf_off": lambda: naive_training_step(reference, img, label, False, beta),
            "project_tf_on": lambda: model.training_one_step(img, label, True),
            "naive_tf_on": lambda: naive_training_step(reference, img, label, True, beta),
        }
        print(f"timing training steps ({opts.repeats} repeats of {len(variants)} variants) ...")
        t, peaks = interleaved(variants, opts.repeats, device)
        train_s = {k: median(v) for k, v in t.items()}
        results["train_step_s"] = train_s
        results["train_step_raw_s"] = t
        results["train_peak_memory_mb"] = peaks
        results["train_speedup_vs_naive"] = train_s["naive_tf_off"] / train_s["project_tf_off"]
        results["train_speedup_vs_naive_tf_on"] = train_s["naive_tf_on"] / train_s["project_tf_on"]

        print("counting FLOPs of the training step ...")
        flops = {name: counted_flops(fn) for name, fn in variants.items()}
        results["train_gflop_per_step"] = {k: v / 1e9 for k, v in flops.items()}
        results["train_gflops_per_s_by_variant"] = {k: flops[k] / train_s[k] / 1e9 for k in flops}
        results["train_gflops_per_s"] = results["train_gflops_per_s_by_variant"]["project_tf_off"]

        print("timing matmul peaks ...")
        results["matmul_peak_gflops_per_s"] = matmul_gflops(
            device, torch.float32, opts.matmul_size, opts.repeats)
        results["matmul_peak_bf16_gflops_per_s"] = (
            matmul_gflops(device, torch.bfloat16, opts.matmul_size, opts.repeats)
            if bf16_native(device) else None)

        # ---- test rollout: all sequences in one batch against one at a time
        test = DanceTestSequences(root, frame_size)
        items = [test[i] for i in range(len(test))]
        first = torch.cat([f for f, _ in items]).to(device)                # (S, 3, H, W)
        labels = torch.stack([lab for _, lab in items]).to(device)          # (S, L, 3, H, W)
        generator = torch.Generator(device).manual_seed(0)
        S, L = labels.shape[:2]
        outputs = {}

        def project_rollout(frames=L):
            outputs["pred"] = model.rollout(first, labels[:, :frames], generator=generator)

        def reference_rollout(s, frames=L):
            naive_rollout(reference, first[s:s + 1], labels[s:s + 1, :frames], generator=generator)

        print("warming up the rollouts (and measuring their peak memory) ...")
        peaks = {"project": peak_memory_mb(project_rollout, device),
                 "naive": peak_memory_mb(lambda: reference_rollout(0), device)}
        # The naive loop handles one sequence at a time, so each round times the
        # project's rollout of all S sequences and the naive rollout of one of them
        # (in turn); the naive total is S times its median per sequence.
        print(f"timing rollouts of {S} x {L} frames ({opts.rollout_repeats} rounds) ...")
        t = {"project": [], "naive_per_sequence": []}
        for round_ in range(opts.rollout_repeats):
            t["project"].append(timed(project_rollout, device))
            t["naive_per_sequence"].append(timed(lambda: reference_rollout(round_ % S), device))
        rollout_s = {"project": median(t["project"]),
                     "naive": S * median(t["naive_per_sequence"])}
        results["rollout_sequences"], results["rollout_frames"] = S, L
        results["rollout_s"] = rollout_s
        results["rollout_raw_s"] = t
        results["rollout_speedup_vs_naive"] = rollout_s["naive"] / rollout_s["project"]
        results["rollout_peak_memory_mb"] = peaks

        # ---- submission.csv
        predictions = list(outputs["pred"].cpu())
        print("timing submission.csv writing ...")
        t, _ = interleaved({"write": lambda: write_submission(Path(tmp) / "submission.csv",
                                                              predictions)},
                           opts.repeats, torch.device("cpu"))
        results["submission_rows"] = sum(len(p) for p in predictions)
        results["submission_write_s"] = median(t["write"])
        results["submission_write_raw_s"] = t["write"]
    results["load_average_after"] = os.getloadavg()
    return results


def table(r):
    """The results as readable text."""
    s, d = r["settings"], r["dims"]
    ts, rs, g = r["train_step_s"], r["rollout_s"], r["train_gflops_per_s_by_variant"]
    gf, mt, mr = r["train_gflop_per_step"], r["train_peak_memory_mb"], r["rollout_peak_memory_mb"]
    row = lambda name, a, b, fmt: (  # noqa: E731
        f"{name:42s}{a:>10{fmt}}{b:>12{fmt}}{b / a:>15.2f}x")
    lines = [
        f"Lab 4 benchmark on {r['device']} ({r['device_name']}, {r['threads']} threads), "
        f"torch {r['torch']}",
        f"dims F{d['F_dim']} L{d['L_dim']} N{d['N_dim']} D{d['D_out_dim']}, frames "
        f"{d['frame_H']}x{d['frame_W']}, batch {r['batch_size']} x {r['clip_len']} frames",
        f"project settings: amp={s['amp']} channels_last={s['channels_last']} "
        f"compile={s['compile']} frame_chunk={s['frame_chunk']}; load average before/after "
        f"{r['load_average_before'][0]:.2f}/{r['load_average_after'][0]:.2f}",
        "",
        f"{'':42s}{'project':>10s}{'naive fp32':>12s}{'naive/project':>16s}",
        row("train step, teacher forcing off (s)", ts["project_tf_off"], ts["naive_tf_off"], ".3f"),
        row("train step, teacher forcing on (s)", ts["project_tf_on"], ts["naive_tf_on"], ".3f"),
        row(f"rollout {r['rollout_sequences']} x {r['rollout_frames']} frames (s)",
            rs["project"], rs["naive"], ".2f"),
        row("GFLOP per train step, tf off", gf["project_tf_off"], gf["naive_tf_off"], ".1f"),
        row("GFLOP per train step, tf on", gf["project_tf_on"], gf["naive_tf_on"], ".1f"),
        row("achieved GFLOP/s, tf off", g["project_tf_off"], g["naive_tf_off"], ".1f"),
        row("achieved GFLOP/s, tf on", g["project_tf_on"], g["naive_tf_on"], ".1f"),
        row("peak memory, train step tf off (MB)", mt["project_tf_off"], mt["naive_tf_off"], ".0f"),
        row("peak memory, train step tf on (MB)", mt["project_tf_on"], mt["naive_tf_on"], ".0f"),
        row("peak memory, rollout (MB; naive: 1 seq.)", mr["project"], mr["naive"], ".0f"),
        "",
    ]
    peak32, peak16 = r["matmul_peak_gflops_per_s"], r["matmul_peak_bf16_gflops_per_s"]
    lines.append(f"matmul peak: fp32 {peak32:.0f} GFLOP/s"
                 + (f", bf16 {peak16:.0f} GFLOP/s" if peak16 else " (no native bf16)")
                 + "; the train step (tf off) reaches "
                 + f"{100 * r['train_gflops_per_s'] / peak32:.0f}% of the fp32 peak"
                 + (f", {100 * r['train_gflops_per_s'] / peak16:.0f}% of bf16's" if peak16 else ""))
    de = r["data_epoch_s"]
    lines += [
        f"data loading, one pass over {r['data_clips']} clips: decoded cache {de['cached']:.3f} s,"
        f" PNG decoding {de['png']:.3f} s ({de['png'] / de['cached']:.1f}x); building the cache"
        f" once {r['data_cache_build_s']:.2f} s",
        f"submission.csv, {r['submission_rows']} rows: {r['submission_write_s']:.2f} s",
    ]
    real = r.get("real_size_loading")
    if real:
        lines.append(
            f"real-size training split ({REAL_TRAIN_FRAMES} pairs of 1024x512 PNGs, "
            f"extrapolated from {real['pairs']}): decoded cache built once {real['cache_build_s']:.0f} s; the "
            f"template's decode-per-access reading {real['template_pass_s']:.0f} s per epoch")
    return "\n".join(lines)


def main(argv=None):
    opts, project_flags = parse(argv)
    results = run(opts, project_flags)
    print()
    print(table(results))
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2))
        print(f"\nresults written to {opts.json}")
    return results


if __name__ == "__main__":
    main()
