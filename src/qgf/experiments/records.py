"""A sweep's records: every file of a sweep directory except the bulk that can be made again
(checkpoints, generated datasets, job logs). They are what `qgf report` and the planner read: about
70 kB a trained seed, most of it its training log.jsonl (1.4 MB for fair-cube's first 20 jobs),
small enough to keep in version control beside the study's write-up, so that a study survives the
loss of the machine it ran on.

`qgf sweep SPEC --out DIR --records REC` copies REC's records into DIR before planning (files DIR
lacks; its own are newer), and copies each finished job's records, and the protocol's choices,
back to REC as it goes. A sweep restored from records does not re-run a job whose results are
there: an evaluation is finished by its results.json, and a training whose every dependent job is
finished is not needed (`superseded`), though its checkpoints are gone. A job that still needs a
run's checkpoints (a new evaluation, a longer budget) retrains that run from its first step.
"""

from __future__ import annotations

import filecmp
import os
from collections.abc import Iterable
from pathlib import Path

from qgf.fileio import atomic_write_bytes

# what is left out: made again by re-running the job that wrote it ("checkpoints" is
# qgf.checkpoint.CHECKPOINT_DIR, not imported: that module loads Flax)
_BULK_DIRS = {"checkpoints", "logs", "data"}
_BULK_SUFFIXES = (".npz", ".msgpack", ".log", ".lock")


def is_record(relative: Path) -> bool:
    """Whether a path inside a sweep directory is one of its records."""
    if any(part in _BULK_DIRS for part in relative.parts[:-1]):
        return False
    return not relative.name.endswith(_BULK_SUFFIXES) and not relative.name.startswith(".")


def copy_records(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    under: str | os.PathLike | None = None,
    overwrite: bool = True,
) -> list[Path]:
    """Copy the records of sweep directory `src` (only those below `under`, a path inside it, when
    given) to `dst`, each file atomically; files that are already equal are left alone, and with
    overwrite=False so is every file `dst` has. Returns the paths written, relative to the sweep."""
    src, dst = Path(src), Path(dst)
    top = Path(under) if under is not None else src
    if not top.is_absolute():
        top = src / top
    if not top.exists():
        return []
    files: Iterable[Path] = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
    written = []
    for path in files:
        relative = path.relative_to(src)
        if not is_record(relative):
            continue
        target = dst / relative
        if target.exists() and (not overwrite or filecmp.cmp(path, target, shallow=False)):
            continue
        atomic_write_bytes(target, path.read_bytes())
        written.append(relative)
    return written


def has_checkpoint(job) -> bool:
    """Whether a job has left checkpoints in its directory (a training or add-on to resume)."""
    out = Path(job.out)
    return out.is_dir() and any(out.rglob("checkpoints/step_*.msgpack"))


def superseded(jobs, done: set[str]) -> set[str]:
    """The unfinished jobs that need not run: every job that depends on one is finished or itself
    superseded (a training restored from records, whose evaluations are all there). A job nothing
    depends on is never superseded, nor one with checkpoints to resume from (a run whose curve was
    asked for after it finished still computes it); the set is recomputed at each planning, so a
    dependent planned later (the protocol's final stage) makes its dependency needed again."""
    dependents: dict[str, list[str]] = {}
    for job in jobs:
        for dep in job.deps:
            dependents.setdefault(dep, []).append(job.id)
    by_id = {job.id: job for job in jobs}
    memo: dict[str, bool] = {}

    def satisfied(job_id: str) -> bool:  # finished, or not needed by anything unfinished
        if job_id not in memo:
            users = dependents.get(job_id, [])
            memo[job_id] = job_id in done or (
                bool(users)
                and all(user in by_id and satisfied(user) for user in users)
                and not has_checkpoint(by_id[job_id])
            )
        return memo[job_id]

    return {job.id for job in jobs if job.id not in done and satisfied(job.id)}
