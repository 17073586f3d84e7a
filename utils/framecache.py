"""Decoded frames on disk: a split's PNGs decoded once, memory-mapped by every later start.

A cache file holds the uint8 tensor (N, 3, H, W) that ``read_images`` makes of a
list of image files, exactly (the same decoder made it). Its header stores the
key it was built for: the files' names, sizes and modification times, the frame
size, the format and the Pillow version (a new Pillow may resize differently).
A start whose key differs, or that finds the file truncated, unreadable or
failing its checksum, rebuilds it and says why.

    <cache folder>/<split>-<H>x<W>.frames

The cache folder is ``--cache_dir`` when given, else ``<DR>/.lab4_cache`` where
--DR is writable, else the user's cache folder (``$XDG_CACHE_HOME`` or
``~/.cache``, then ``lab4-vae/<DR's name>-<hash of its path>``).

Files are written to a temporary name and renamed, so a crash or a full disk never
leaves a partial cache under the real name. Builders take turns on a lock of the
cache folder: under torchrun one rank decodes, the others wait and then map the
same file, so the page cache holds one copy for all of them. Where the OS offers
no ``fcntl`` lock (Windows), two builders each decode and the later rename wins;
both read a whole file.
"""
import contextlib
import hashlib
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL
import torch

from utils.cli import progress_bar
from utils.fileio import atomic_write
from utils.errors import UserError
from utils.images import read_images

try:
    import fcntl
except ImportError:   # Windows
    fcntl = None

DATA_CACHES = ("disk", "memory", "none")   # --data_cache's choices
FORMAT = 1
MAGIC = b"LAB4FRMS"
PREFIX = struct.Struct("<8sQ")   # magic, header length
ALIGN = 4096                     # the data starts on a page boundary
CHUNK = 1 << 24                  # bytes checksummed per call
BESIDE_DATA = ".lab4_cache"


def user_cache_folder():
    """$XDG_CACHE_HOME/lab4-vae, or ~/.cache/lab4-vae."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lab4-vae"


def _usable(folder):
    """Whether files can be created in ``folder`` (made if missing): tried, not
    inferred from permission bits, which root and read-only mounts ignore."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f".probe-{os.getpid()}", "wb"):
            pass
        (folder / f".probe-{os.getpid()}").unlink()
        return True
    except OSError:
        return False


def cache_folder(data_root, cache_dir=None):
    """Where a dataset's caches go (see the module's docstring), or None where no
    folder is writable. ``cache_dir`` that cannot be written is a UserError."""
    if cache_dir:
        folder = Path(cache_dir).expanduser()
        if not _usable(folder):
            raise UserError(f"--cache_dir '{folder}' cannot be written; choose a writable "
                            "folder, or --data_cache memory to keep the frames in RAM only.")
        return folder
    root = Path(data_root).resolve()
    for folder in (root / BESIDE_DATA, user_cache_folder()
                   / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:12]}"):
        if _usable(folder):
            return folder
    return None


def file_key(files, size, base):
    """What a cache is valid for: every file's name (relative to ``base``), size and
    modification time, the frame size, the format and the decoder's version."""
    rows = []
    for path in files:
        stat = os.stat(path)
        rows.append([Path(path).relative_to(base).as_posix(), stat.st_size, stat.st_mtime_ns])
    return {"format": FORMAT, "pillow": PIL.__version__, "size": list(size), "files": rows}


def why_stale(stored, wanted):
    """One phrase saying how a stored key differs from the wanted one."""
    for field, what in (("format", "the cache format"), ("pillow", "Pillow's version"),
                        ("size", "the frame size")):
        if stored.get(field) != wanted[field]:
            return f"{what} changed ({stored.get(field)} -> {wanted[field]})"
    old = {name: (size, mtime) for name, size, mtime in stored.get("files", [])}
    new = {name: (size, mtime) for name, size, mtime in wanted["files"]}
    changed = sorted(n for n in new.keys() & old.keys() if new[n] != old[n])
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    parts = [f"{len(names)} {kind}" for names, kind in
             ((changed, "changed"), (added, "added"), (removed, "removed")) if names]
    first = (changed or added or removed or [None])[0]
    if not parts:
        return "its file order changed"
    return f"files changed since it was built: {', '.join(parts)} (e.g. '{first}')"


def _checksum(array):
    view, crc = memoryview(array.reshape(-1)), 0
    for start in range(0, len(view), CHUNK):
        crc = zlib.crc32(view[start:start + CHUNK], crc)
    return crc


def open_cache(path, key):
    """(the mapped tensor, None) if ``path`` is a whole cache built for ``key``;
    else (None, why it cannot be used; None if there is no file)."""
    try:
        with open(path, "rb") as f:   # header and data read from one file, whatever renames
            magic, length = PREFIX.unpack(f.read(PREFIX.size))
            if magic != MAGIC:
                return None, "it is not a frame cache"
            header = json.loads(f.read(length))
            stored = {k: header.get(k) for k in key}
            if stored != key:
                return None, why_stale(stored, key)
            shape, offset, crc = tuple(header["shape"]), header["offset"], header["crc32"]
            total, expected = os.fstat(f.fileno()).st_size, offset + int(np.prod(shape))
            if total != expected:
                return None, f"it is truncated ({total:,} of {expected:,} bytes)"
            array = np.memmap(f, dtype=np.uint8, mode="c", offset=offset, shape=shape)
    except FileNotFoundError:
        return None, None
    except (OSError, struct.error, ValueError, TypeError, KeyError, AttributeError) as error:
        return None, f"its header cannot be read ({type(error).__name__}: {error})"
    if _checksum(array) != crc:
        return None, "it is corrupt (checksum mismatch)"
    # Copy-on-write pages stay the page cache's until written, and nothing writes
    # them: every process that maps the file shares one copy.
    return torch.from_numpy(array), None


def write_cache(path, key, images):
    """Write ``images`` (uint8 (N, 3, H, W)) and ``key`` to ``path`` atomically."""
    array = images.numpy()
    header = dict(key, shape=list(array.shape), crc32=_checksum(array), offset=0)
    # Room for the offset's own digits; the data starts on a page boundary.
    offset = -(-(PREFIX.size + len(json.dumps(header)) + 32) // ALIGN) * ALIGN
    body = json.dumps(dict(header, offset=offset)).encode()

    def write(f):
        f.write(PREFIX.pack(MAGIC, len(body)) + body)
        f.write(bytes(offset - PREFIX.size - len(body)))
        f.write(memoryview(array.reshape(-1)))

    atomic_write(path, write)


@contextlib.contextmanager
def build_lock(path, log):
    """Hold the builders' lock of ``path``'s folder (the folder itself, so no lock
    file is left behind), saying so if another process holds it."""
    if fcntl is None:
        yield
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"data cache: waiting for another process to finish '{path}'")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # releases the lock


def _stderr(message):
    print(message, file=sys.stderr)


def _first_rank():
    """Rank 0 of a torchrun job, or a process outside one: it says where the cache is."""
    return os.environ.get("RANK", "0") == "0"


def cached_images(files, size, *, base, path, workers=4, log=_stderr):
    """``read_images(files, size, workers)``, from the cache at ``path`` where it is
    valid; else decoded (with a progress bar), written there and mapped back. A
    cache that cannot be written leaves the decoded tensor in RAM, with a note."""
    path = Path(path)
    key = file_key(files, size, base)
    images, why = open_cache(path, key)
    if images is None:
        with build_lock(path, log if _first_rank() else lambda _: None):
            images, why = open_cache(path, key)   # another process may have built it
            if images is None:
                log(f"data cache: {why}, so '{path}' is rebuilt" if why else
                    f"data cache: decoding {len(files):,} images once into '{path}'")
                with progress_bar(None, total=len(files), desc="decoding", unit="image",
                                  file=sys.stderr) as bar:
                    decoded = read_images(files, size, workers, done=bar.update)
                try:
                    write_cache(path, key, decoded)
                except UserError as error:
                    log(f"note: no data cache was kept ({error}); this run holds the "
                        "frames in RAM.")
                    return decoded
                images, why = open_cache(path, key)
                if images is None:   # replaced or damaged between the write and the read
                    return decoded
    if _first_rank():
        log(f"data cache: '{path}' ({os.path.getsize(path) / 2**20:,.1f} MiB)")
    return images
