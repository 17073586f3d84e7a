"""One run per --save_root: a folder that holds a run is resumed, moved aside on
request, or refused, and a second process writing into it at once is refused."""
import contextlib
import os
import sys
from pathlib import Path

from utils.errors import UserError

try:
    import fcntl
except ImportError:   # Windows: no flock; runs there go unguarded against each other
    fcntl = None

# Any of these means the folder holds a training run.
RUN_MARKERS = ("last.ckpt", "best.ckpt", "epoch=*.ckpt", "metrics.csv")
# Everything a training run writes: --overwrite moves these aside together.
RUN_OUTPUTS = RUN_MARKERS + ("args.json", "val_psnr_epoch*.csv", "plots", "visualization")
LOCK_NAME = ".lock"


def run_files(save_root, patterns=RUN_OUTPUTS):
    return sorted({path for pattern in patterns for path in Path(save_root).glob(pattern)})


def holds_run(save_root):
    return bool(run_files(save_root, RUN_MARKERS))


def resumes_here(save_root, ckpt_path):
    """A checkpoint inside --save_root continues that folder's run."""
    return ckpt_path is not None and Path(ckpt_path).resolve().parent == Path(save_root).resolve()


def move_run_aside(save_root):
    """Move the run's files into the first free previous-<N>/ folder and return it."""
    save_root = Path(save_root)
    n = 1
    while (save_root / f"previous-{n}").exists():
        n += 1
    aside = save_root / f"previous-{n}"
    try:
        aside.mkdir()
        for path in run_files(save_root):
            path.rename(aside / path.name)   # the same file system: nothing is copied
    except OSError as error:
        raise UserError(f"could not move the earlier run in '{save_root}' aside into "
                        f"'{aside}' ({error.strerror or error}); nothing was deleted.") from None
    return aside


def make_room(save_root, ckpt_path, overwrite, data_root):
    """Let a new run into ``save_root``: returns where an earlier run was moved
    (with ``overwrite``), or None; a run that would be overwritten is refused."""
    if not holds_run(save_root):
        return None
    if overwrite:
        return move_run_aside(save_root)
    if resumes_here(save_root, ckpt_path):
        return None
    found = ", ".join(p.name for p in run_files(save_root, RUN_MARKERS))
    last = Path(save_root) / "last.ckpt"
    resume = (f"To continue it: python Trainer.py --DR {data_root} --save_root {save_root} "
              f"--ckpt_path {last} (with a larger --num_epoch to train longer). "
              if last.is_file() else "")
    raise UserError(f"--save_root '{save_root}' already holds a training run ({found}); a new "
                    f"run would overwrite it. {resume}To start afresh there, add --overwrite: "
                    f"the earlier run's files move into '{Path(save_root) / 'previous-<N>'}', "
                    "nothing is deleted. Or choose another --save_root.")


@contextlib.contextmanager
def exclusive(save_root):
    """Hold <save_root>/.lock while the block runs, with this process's id in it.

    flock belongs to the open file, so the kernel drops it when the process
    dies, even by kill -9: a crashed run leaves nothing to clean up.
    """
    if fcntl is None:
        yield
        return
    path = Path(save_root) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(f"another process (pid {holder}) is writing to --save_root "
                            f"'{save_root}'; wait for it to end, stop it, or choose another "
                            "--save_root.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def prepare(path):
    """--save_root, created and checked writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"--save_root '{path}' is not writable ({error.strerror}); "
                        "choose a folder you can write to.") from None
    return path


def claim(args, dist, held):
    """Rank 0 makes --save_root ready and, to train, holds its lock until ``held``
    (an ExitStack) closes; under torchrun the other ranks learn whether it could
    and stop if not."""
    failure = None
    if dist.is_main:
        try:
            save_root = prepare(args.save_root)
            if not args.test:   # --test only reads: it may run beside a training run
                held.enter_context(exclusive(save_root))
                aside = make_room(save_root, args.ckpt_path, args.overwrite, args.DR)
                if aside is not None:
                    print(f"--overwrite: the earlier run in '{save_root}' was moved into "
                          f"'{aside}'.", file=sys.stderr)
        except UserError as error:
            failure = error
    if dist.mean([float(failure is not None)])[0] > 0:
        if failure is not None:
            raise failure
        raise SystemExit(2)   # rank 0 prints why
    return Path(args.save_root)
