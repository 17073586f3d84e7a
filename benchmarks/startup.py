"""How long until the first training step, and how much RAM: a first start (the disk
cache is built) against a second one (it is mapped), at the real split's size.

    python benchmarks/startup.py [--pairs 23410] [--distinct 200] [--ranks 2] [--no_memory]
                                 [--json FILE]

The training split has ``--pairs`` frame+label pairs of 1024x512 PNGs, as the
course's does (23,410), and the val split 630. Writing that many synthetic
frames would take an hour, so ``--distinct`` pairs are generated and the split is
made of hard links to them under the real file names: each is decoded as a file
of its own, exactly as a distinct one would be. Each start runs Trainer.py as a
user does (tiny dims, --device cpu) and is timed until it prints "training on",
just before the first step; it is then stopped. Peak RAM is the largest sum of
the proportional set sizes (PSS: a page shared by N processes counts 1/N in
each) over every process of the run, sampled every 0.1 s, so shared file pages
count once however many ranks map them.

Starts, in order: --data_cache memory (what every start paid before the disk
cache), disk with no cache yet, disk again (mapped), and the same two again
under torchrun with --ranks processes.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if not __package__: import _repo  # noqa: E701,F401 (script: repo root on sys.path)

from tools.synthetic_dance import generate_dataset  # noqa: E402
from utils.cli import REPO_ROOT, tool_parser  # noqa: E402
from utils.metrics import FRAMES_PER_SEQUENCE, REAL_TRAIN_FRAMES  # noqa: E402

READY = "training on "
TINY = ["--F_dim", "16", "--L_dim", "16", "--N_dim", "4", "--D_out_dim", "24"]


def parse(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--pairs", type=int, default=REAL_TRAIN_FRAMES,
                   help="frame+label pairs in the training split")
    p.add_argument("--val_pairs", type=int, default=FRAMES_PER_SEQUENCE,
                   help="frame+label pairs in the val split")
    p.add_argument("--distinct", type=int, default=200, help="distinct pairs generated")
    p.add_argument("--ranks", type=int, default=2, help="processes of the torchrun starts; 0 skips")
    p.add_argument("--threads", type=int, default=2,
                   help="OMP_NUM_THREADS of a start (shared out among its ranks)")
    p.add_argument("--no_memory", dest="memory", action="store_false",
                   help="skip the --data_cache memory starts (each decodes the whole split)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def linked_dataset(root, pairs, val_pairs, distinct):
    """``pairs`` training and ``val_pairs`` val pairs at 1024x512, hard links to
    ``distinct`` generated ones."""
    pool = generate_dataset(root / "pool", train_frames=distinct, val_frames=1,
                            test_sequences=1, test_frames=2, frame_size=(512, 1024),
                            log=lambda *a, **k: None)
    data = root / "data"
    for mode, count in (("train", pairs), ("val", val_pairs)):
        for kind in ("img", "label"):
            src, dst = pool / "train" / f"train_{kind}", data / mode / f"{mode}_{kind}"
            dst.mkdir(parents=True)
            for k in range(count):
                os.link(src / f"frame{k % distinct}.png", dst / f"frame{k}.png")
    return data


def pss_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(root_pid):
    """root_pid and all its descendants (read from /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def start(command, threads):
    """Seconds until ``command`` prints READY, and its peak PSS in MiB until then."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], sum(pss_kb(pid) for pid in process_tree(proc.pid)))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if READY in line:
                return time.perf_counter() - started, peak[0] / 1024
        raise RuntimeError(f"{command[1]} exited before training:\n{''.join(output[-30:])}")
    finally:
        done.set()
        sampler.join()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv=None):
    opts = parse(argv)
    results = dict(pairs=opts.pairs, val_pairs=opts.val_pairs, distinct=opts.distinct,
                   threads=opts.threads, cpus=os.cpu_count(), starts=[])
    with tempfile.TemporaryDirectory(prefix="lab4_startup_") as tmp:
        tmp = Path(tmp)
        print(f"writing {opts.distinct} distinct pairs at 1024x512, linked into "
              f"{opts.pairs:,} training pairs ...", flush=True)
        data = linked_dataset(tmp, opts.pairs, opts.val_pairs, opts.distinct)
        cache_dir = tmp / "cache"

        def trainer(cache, ranks):
            launch = [sys.executable]
            if ranks > 1:
                launch += ["-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={ranks}"]
            return [*launch, "Trainer.py", "--DR", str(data),
                    "--save_root", str(tmp / "runs" / f"{cache}_{ranks}_{time.time_ns()}"),
                    "--device", "cpu", "--data_cache", cache, "--cache_dir", str(cache_dir),
                    "--val_vi_len", "12", *TINY]

        plan = [("memory", "memory", 1)] if opts.memory else []
        plan += [("disk, first", "disk", 1), ("disk, second", "disk", 1)]
        if opts.ranks > 1:
            plan += [(f"memory, {opts.ranks} ranks", "memory", opts.ranks)] if opts.memory else []
            plan += [(f"disk, second, {opts.ranks} ranks", "disk", opts.ranks)]
        for label, cache, ranks in plan:
            # The ranks share the cores: as many threads in all as a one-process start.
            seconds, peak = start(trainer(cache, ranks), max(1, opts.threads // ranks))
            results["starts"].append(dict(start=label, ranks=ranks, seconds=seconds,
                                          peak_pss_mib=peak))
            print(f"{label:24s} {seconds:8.1f} s to the first step   peak RAM {peak:7.0f} MiB",
                  flush=True)
    by = {s["start"]: s for s in results["starts"]}
    first, second = by["disk, first"]["seconds"], by["disk, second"]["seconds"]
    results["second_start_speedup"] = first / second
    print(f"second start: {first / second:.1f}x sooner than the first "
          f"({first:.1f} s -> {second:.1f} s)")
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
