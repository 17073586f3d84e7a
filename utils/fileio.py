"""Atomic file writes: a reader sees the old file or the new one, never half of one."""
import os
import tempfile
from pathlib import Path

from utils.errors import UserError


def current_umask():
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    # Elsewhere the only way to read it is to set it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write_fn, text=False, durable=True):
    """Call ``write_fn(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    The data is fsynced before the rename, so a crash, ``kill -9`` or a full
    disk at any moment leaves either the old file or the new one. ``durable``
    False skips the fsync, for files that are cheap to make again (a crash of
    the machine may then leave an empty file, never a half-written one after a
    crash of the program). The file gets
    the mode a plain ``open`` would give (0666 less the umask); mkstemp's 0600
    would hide it from the user's group. An OSError becomes a UserError that
    names the file; on any error the temporary file is removed.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise write_error(path, error) from None
    try:
        with os.fdopen(fd, "w", newline="") if text else os.fdopen(fd, "wb") as f:
            write_fn(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, error) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_error(path, error):
    """The UserError for an OSError while writing ``path``: the file, the cause, what is kept."""
    kept = "the previous file is intact" if path.exists() else "nothing was written"
    return UserError(f"could not write '{path}' ({error.strerror or error}); {kept}. "
                     "Free disk space (or fix permissions) and try again.")


def make_parent(path):
    """Create the folder ``path`` goes into, or raise the UserError of a failed write."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error) from None
    return path
