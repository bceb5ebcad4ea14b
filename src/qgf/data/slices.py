"""100M-style datasets: a directory of slice files, streamed so the whole never sits in RAM.

OGBench publishes its 100M-transition datasets as a directory per dataset,
`<domain>-<type>-100m-v0/`, holding `<domain>-<type>-v0-NNN.npz` and `<domain>-<type>-v0-NNN-val.npz`
(NNN = 000..099, each slice a complete 1M-transition dataset of its own). Compressed `.npz` members
cannot be memory-mapped, so `SliceDataset` rotates: it holds the slice in use and loads the next one
in a background thread (at most two slices in memory).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from qgf.data.load import SPLITS, Dataset, generate_command, load_file
from qgf.envs import parse_file_name, parse_name
from qgf.errors import QGFError


def find_slices(directory: str, split: str = "train") -> list[str]:
    """The slice files of `split` in `directory`, sorted by name (i.e. by slice index)."""
    paths = sorted(glob.glob(os.path.join(glob.escape(directory), "*.npz")))
    is_val = [p.endswith("-val.npz") for p in paths]
    return [p for p, val in zip(paths, is_val, strict=True) if val == (split == "val")]


def infer_dataset_name(directory: str, paths: list[str]) -> str | None:
    """The plain dataset name (e.g. `cube-double-play-v0`) from the slice file names, if recognisable."""
    for path in paths[:1]:
        parsed, _, _ = parse_file_name(os.path.basename(path))
        if parsed is not None:
            return parsed.dataset_name
    try:
        parsed = parse_name(os.path.basename(os.path.normpath(directory)))
    except QGFError:
        return None
    return parsed.dataset_name if parsed.dataset_type else None


class SliceDataset:
    """A directory of OGBench-format slices, loaded one (plus one prefetched) at a time.

    `name` selects the task for relabelling (`cube-double-play-singletask-task2-v0`); if omitted it
    is inferred from the file names and no task is applied (rewards 0, masks 1).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        name: str | None = None,
        *,
        split: str = "train",
        sparse: bool = False,
        action_clip_eps: float = 1e-5,
    ):
        self.directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
        if split not in SPLITS:
            raise QGFError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.sparse = sparse
        self.action_clip_eps = action_clip_eps
        if name is not None:
            parse_name(name)  # unknown names fail here, with suggestions
        if not os.path.isdir(self.directory):
            command = ""
            if name is not None:
                parsed = parse_name(name)
                command = (
                    f"; generate it with: {generate_command(parsed, os.path.dirname(self.directory), True)}"
                )
            raise QGFError(f"slice directory not found: {self.directory}{command}")
        self.paths = find_slices(self.directory, split)
        if not self.paths:
            raise QGFError(
                f"no {split} slice files ({'*-val.npz' if split == 'val' else '*.npz'}) in {self.directory}"
            )
        self.name = name or infer_dataset_name(self.directory, self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def total_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in self.paths)

    def load(self, index: int) -> Dataset:
        """Load and validate slice `index` (0-based position in the sorted file list)."""
        return load_file(
            self.paths[index],
            self.name,
            split=self.split,
            sparse=self.sparse,
            action_clip_eps=self.action_clip_eps,
            fix="regenerate the slice or remove it from the directory",
        )

    def iterate(self, start: int = 0, *, cycle: bool = False, prefetch: bool = True) -> Iterator[Dataset]:
        """Yield slices in order from `start` (wrapping forever if `cycle`), loading the next one in a
        background thread while the caller works on the current one.

        Memory holds at most two slices as long as the caller drops each slice once it moves on.
        """
        count = len(self.paths)
        order = range(start, start + count) if not cycle else _forever(start)
        if not prefetch:
            for position in order:
                yield self.load(position % count)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qgf-slice-prefetch") as pool:
            positions = iter(order)
            pending = pool.submit(self.load, next(positions) % count)
            for position in positions:
                current = pending.result()
                pending = pool.submit(self.load, position % count)
                yield current
                del current
            yield pending.result()

    def __iter__(self) -> Iterator[Dataset]:
        return self.iterate()


def _forever(start: int) -> Iterator[int]:
    position = start
    while True:
        yield position
        position += 1


def iterate_slices(directory: str | os.PathLike, name: str | None = None, **kwargs) -> Iterator[Dataset]:
    """Stream the slices of a 100M-style directory in order, one (plus one prefetched) in RAM."""
    cycle = kwargs.pop("cycle", False)
    return SliceDataset(directory, name, **kwargs).iterate(cycle=cycle)
