"""Atomic file writes: readers see the old file or the whole new one, never a part.

Every writer in qgf (datasets, checkpoints, logs, results, plots, benchmarks) goes through here:
write to a temporary file in the target's folder, flush it to disk, then `os.replace` it over the
target. A killed process leaves at most a stray `.<name>.*.tmp` file, never a truncated target.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which must not race with other threads.
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to `path`; if the block succeeds it replaces `path` atomically."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TEMP_SUFFIX, dir=directory)
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as handle:  # flush to disk so a crash never leaves a renamed empty file
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_space_error(path) from None
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def no_space_error(path: str | os.PathLike):
    """The one-line error of a write that ran out of disk space (ENOSPC) or quota (EDQUOT)."""
    from qgf.errors import QGFError

    return QGFError(
        f"no space left on the device while writing {os.fspath(path)}; free space there (or choose an "
        "--out on another filesystem) and re-run the same command: finished work is kept and resumes"
    )


# Kernel filesystems: writable-looking paths that are no storage.
_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse, before any work, an output directory that cannot hold files: an existing file, a path
    under /proc, /sys or /dev, or one whose nearest existing folder is not writable (read-only,
    not ours). Creates nothing. A one-line `QGFError` naming `option` and the fix."""
    from qgf.errors import QGFError

    text = os.fspath(path)
    resolved = os.path.realpath(os.path.expanduser(text))
    for root in _PSEUDO_FILESYSTEMS:
        if resolved == root or resolved.startswith(root + os.sep):
            raise QGFError(
                f"{option} {text} is under {root}, a kernel filesystem that cannot hold output files; "
                "give a directory on disk"
            )
    if os.path.exists(resolved) and not os.path.isdir(resolved):
        raise QGFError(
            f"{option} {text} is a file, not a directory; give a directory path (created if absent)"
        )
    existing = resolved
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise QGFError(f"{option} {text}: {existing} is a file, so the directory cannot be created there")
    if not os.access(existing, os.W_OK | os.X_OK) or _read_only_mount(existing):
        raise QGFError(
            f"{option} {text}: {existing} is not writable (read-only or not yours); "
            "choose a writable directory"
        )


def _read_only_mount(directory: str) -> bool:
    """Whether `directory` lies on a read-only mount (os.access ignores that for root)."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> None:
    dumps_kwargs.setdefault("indent", 2)
    atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Delete temporaries a killed writer left behind in `directory`."""
    for entry in Path(directory).glob(f".*{TEMP_SUFFIX}"):
        entry.unlink(missing_ok=True)
