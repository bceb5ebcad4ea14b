"""The metric log of a training directory (a run's, or an add-on's): append-only `log.jsonl` and
`log.csv`, plus the optional TensorBoard and W&B sinks, and how log lines summarise the compiled
calls since the previous line (`combine_metrics`).

Imports the standard library, `qgf.fileio`, `qgf.errors` and `qgf.training.steps` (for
`metric_kind`); the sink packages only when a sink is opened.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import importlib.util
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgf.errors import QGFError
from qgf.fileio import atomic_write_bytes, no_space_error
from qgf.training.steps import metric_kind

LOG_JSONL = "log.jsonl"
LOG_CSV = "log.csv"


@dataclasses.dataclass(frozen=True)
class WandbRun:
    """What a W&B sink is told about the directory it logs: its name, a stable id (so a resumed
    training continues the same W&B run) and its settings."""

    name: str
    id: str
    config: dict[str, Any]

    @staticmethod
    def stable_id(directory: Path, created: str) -> str:
        return hashlib.sha256(f"{directory.resolve()}|{created}".encode()).hexdigest()[:16]


class MetricLog:
    """Append-only JSONL and CSV logs in `directory`, plus optional TensorBoard / W&B.

    On resume, lines past the resumed step (written after the last checkpoint by the killed run)
    are dropped, so each step appears once.
    """

    def __init__(
        self, directory: Path, resume_step: int, *, tensorboard: bool = False, wandb: WandbRun | None = None
    ):
        self.jsonl_path = directory / LOG_JSONL
        self.csv_path = directory / LOG_CSV
        self._truncate_after(resume_step)
        self._writers: list[Callable[[dict], None]] = []
        self._closers: list[Callable[[], None]] = []
        if tensorboard:
            self._open_tensorboard(directory)
        if wandb is not None:
            self._open_wandb(directory, wandb)

    def _truncate_after(self, step: int) -> None:
        if self.jsonl_path.exists():
            kept = [
                line
                for line in self.jsonl_path.read_text().splitlines()
                if line.strip() and _parse_step(line) is not None and _parse_step(line) <= step
            ]
            atomic_write_bytes(self.jsonl_path, "".join(line + "\n" for line in kept).encode())
        if self.csv_path.exists():
            with self.csv_path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            fields = list(rows[0].keys()) if rows else []
            buffer = io.StringIO()
            if fields:
                writer = csv.DictWriter(buffer, fieldnames=fields)
                writer.writeheader()
                writer.writerows(row for row in rows if int(float(row["step"])) <= step)
            atomic_write_bytes(self.csv_path, buffer.getvalue().encode())

    def write(self, record: dict[str, Any]) -> None:
        try:
            with self.jsonl_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            self._write_csv(record)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise no_space_error(self.jsonl_path.parent) from None
            raise
        for writer in self._writers:
            writer(record)

    def _write_csv(self, record: dict[str, Any]) -> None:
        fields = list(record.keys())
        existing = self.csv_path.exists() and self.csv_path.stat().st_size > 0
        if existing:
            with self.csv_path.open(newline="") as handle:
                header = next(csv.reader(handle), [])
            if header != fields:  # a metric was added or removed: rewrite with the union of fields
                with self.csv_path.open(newline="") as handle:
                    rows = list(csv.DictReader(handle))
                fields = header + [name for name in fields if name not in header]
                buffer = io.StringIO()
                writer = csv.DictWriter(buffer, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
                atomic_write_bytes(self.csv_path, buffer.getvalue().encode())
        with self.csv_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            if not existing:
                writer.writeheader()
            writer.writerow(record)

    def _open_tensorboard(self, directory: Path) -> None:
        if tensorboard_package() == "tensorboardX":
            from tensorboardX import SummaryWriter
        else:
            from torch.utils.tensorboard import SummaryWriter
        summary = SummaryWriter(str(directory / "tensorboard"))

        def write(record: dict) -> None:
            for name, value in record.items():
                if name != "step" and isinstance(value, int | float):
                    summary.add_scalar(name, value, record["step"])

        self._writers.append(write)
        self._closers.append(summary.close)

    def _open_wandb(self, directory: Path, run: WandbRun) -> None:
        import wandb

        wandb_run = wandb.init(
            project="qgf", name=run.name, id=run.id, resume="allow", dir=str(directory), config=run.config
        )
        self._writers.append(lambda record: wandb_run.log(record, step=record["step"]))
        self._closers.append(wandb_run.finish)

    def close(self) -> None:
        for close in self._closers:
            close()


def tensorboard_package() -> str | None:
    """The installed package that provides a TensorBoard SummaryWriter, if any."""
    for package in ("tensorboardX", "torch"):
        if importlib.util.find_spec(package) is not None:
            return package
    return None


def check_sinks(tensorboard: bool, wandb: bool) -> None:
    """Fail before any work when an optional sink is requested but its package is missing."""
    if tensorboard and tensorboard_package() is None:
        raise QGFError("TensorBoard logging needs tensorboardX (pip install tensorboardX) or torch")
    if wandb and importlib.util.find_spec("wandb") is None:
        raise QGFError("W&B logging needs wandb (pip install wandb)")


def _parse_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # a line cut short by a kill


def read_log(directory: str | Path) -> list[dict[str, Any]]:
    """The JSONL log of a run (or of an add-on's directory) as a list of records."""
    path = Path(directory) / LOG_JSONL
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if _parse_step(line) is not None]


def combine_metrics(window: list[tuple[int, float, dict[str, float]]]) -> dict[str, float]:
    """Summarise consecutive calls (steps, seconds, metrics) as one: step-weighted means,
    extremes for *_min / *_max, and steps_per_s over the whole window."""
    total_steps = sum(steps for steps, _, _ in window)
    combined = {}
    for name in window[0][2]:
        values = [metrics[name] for _, _, metrics in window]
        kind = metric_kind(name)
        if kind == "min":
            combined[name] = min(values)
        elif kind == "max":
            combined[name] = max(values)
        else:
            combined[name] = sum(steps * metrics[name] for steps, _, metrics in window) / total_steps
    combined["steps_per_s"] = total_steps / sum(seconds for _, seconds, _ in window)
    return combined
