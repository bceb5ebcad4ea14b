"""Atomic file writes: readers see the old file or the whole new one, never a part.

Every writer in qgf (datasets, checkpoints, logs, results, plots, benchmarks) goes through here:
write to a temporary file in the target's folder, flush it to disk, then `os.replace` it over the
target. A killed process leaves at most a stray `.<name>.*.tmp` file, never a truncated target.
"""

from __future__ import annotations

import contextlib
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
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TEMP_SUFFIX, dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # flush to disk so a crash never leaves a renamed empty file
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
