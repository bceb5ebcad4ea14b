"""The one schedule loop that trains agents, S seeds of an agent and add-ons.

Whatever it trains satisfies `Trainable`: a pytree with a `step` counter and an
`update_many(device_data, num_steps, sample_fn=None, donate=False)` that runs that many steps in
one compiled call (`qgf.agents.base.Agent` as it is; `qgf.training.fit.SeedStack` for stacked
seeds; `qgf.addons.base.AddonTrainer` for an add-on against its frozen run). The loop cuts the
schedule into calls that end at every multiple of `log_every` and of `ckpt_every`, so log lines
and checkpoints land on fixed steps whatever the history of interruptions; it writes checkpoints
and log lines into one directory per trained state, and on Ctrl-C keeps the finished steps.
With a `CurveHook` (`qgf.evaluation.curve.CurveEvaluator`) the calls also end at every multiple of
its `every`, where the loop saves a pinned checkpoint and hands the states to the hook (evaluation
during training); each checkpoint records the training wall-clock so far (`train_seconds`).

Imports `qgf.checkpoint` (saving), `qgf.progress` and `qgf.training.log`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np

from qgf import checkpoint as ckpt
from qgf.progress import progress_bar
from qgf.training.log import MetricLog, combine_metrics


class Schedule(Protocol):
    """The schedule fields of a settings object (`TrainConfig`, `AddonConfig`): changing them
    between a training and its resumption does not change what a step computes."""

    steps: int
    log_every: int
    ckpt_every: int
    keep_checkpoints: int


class Trainable(Protocol):
    """What the loop trains: a pytree that counts its steps and advances many in one call."""

    step: Any  # a scalar array: steps taken

    def update_many(
        self, device_data: Any, num_steps: int, sample_fn: Callable | None = None, donate: bool = False
    ) -> tuple[Trainable, dict[str, Any]]:
        """`num_steps` updates in one compiled call; metrics are scalars (or (S,) for S runs)."""
        ...


class CurveHook(Protocol):
    """Evaluation during training: called at every multiple of `every` and at the run's last step
    (`final`, default the schedule's end; a seed brought level first trains to an earlier end)."""

    every: int
    final: int | None

    def catch_up(self, directories: Sequence[Path], step: int, total: int) -> None:
        """Evaluate the points at or before `step` that are missing (from their checkpoints)."""
        ...

    def __call__(self, directories: Sequence[Path], step: int, states: list[Any], seconds: list[float]):
        """Evaluate `states[i]` (run `directories[i]` at `step`, `seconds[i]` of training so far)."""
        ...


def chunk_length(step: int, schedule: Schedule, every: int | None = None) -> int:
    """Steps until the next log line, checkpoint, evaluation point (multiple of `every`) or the
    end, whichever comes first."""
    to_log = schedule.log_every - step % schedule.log_every
    to_checkpoint = schedule.ckpt_every - step % schedule.ckpt_every
    to_point = every - step % every if every else schedule.steps
    return min(to_log, to_checkpoint, to_point, schedule.steps - step)


def is_curve_step(step: int, total: int, every: int | None) -> bool:
    """Whether a learning curve with points every `every` steps has a point at `step`."""
    return bool(every) and step > 0 and (step % every == 0 or step == total)


def run_schedule(
    schedule: Schedule,
    state: Trainable,
    device_data: Any,
    directories: Sequence[Path],
    logs: Sequence[MetricLog],
    *,
    step: int | None = None,
    sample_fn: Callable | None = None,
    checkpoints: Callable[[Any], list[Any]] = lambda state: [state],
    last_saved: int | None = None,
    progress: bool = True,
    description: str | None = None,
    postfix: tuple[str, ...] = ("bc_loss", "q_mean", "steps_per_s"),
    on_log: Callable[[dict[str, Any]], None] | None = None,
    curve: CurveHook | None = None,
) -> tuple[Any, int, list[dict[str, Any]]]:
    """Train `state` from `step` (default: its own counter) up to `schedule.steps`.

    `directories[i]` receives the checkpoints of `checkpoints(state)[i]` (one entry per trained
    run: the state itself, S unstacked seeds, an add-on's own state) and `logs[i]` its log lines;
    the loop closes the logs. All runs share the step counter, so their log lines and checkpoints
    land on the same steps. `last_saved` is the step of the newest checkpoint already on disk
    (an interrupt saves unless it is the current step). `on_log(record)` is called after each log
    line (after that step's checkpoint, if any). `curve` (a `CurveHook`) is called at its points,
    after that step's checkpoint (pinned) and log line. Returns (state, step, last record of each run).
    """
    step = int(state.step) if step is None else step
    every = curve.every if curve is not None else None
    final = (curve.final or schedule.steps) if curve is not None else schedule.steps
    # training wall-clock per run: what its checkpoint at `step` recorded, plus this call's
    base = [ckpt.train_seconds_at(directory, last_saved) or 0.0 for directory in directories]
    elapsed = 0.0
    if curve is not None:
        curve.catch_up(directories, step, final)
    records: list[dict[str, Any]] = [{} for _ in directories]
    # per run: (steps, seconds, metrics) since the last log line
    windows: list[list[tuple[int, float, dict[str, float]]]] = [[] for _ in directories]
    bar = progress_bar(progress, schedule.steps, initial=step, unit="step", smoothing=0.1, desc=description)
    try:
        while step < schedule.steps:
            length = chunk_length(step, schedule, every)
            started = time.perf_counter()
            state, metrics = state.update_many(device_data, length, sample_fn=sample_fn, donate=True)
            metrics = {name: np.reshape(value, -1) for name, value in jax.device_get(metrics).items()}
            seconds = time.perf_counter() - started
            elapsed += seconds
            for index, window in enumerate(windows):
                window.append(
                    (length, seconds, {name: float(value[index]) for name, value in metrics.items()})
                )
            step += length
            bar.update(length)
            point = is_curve_step(step, final, every)
            if step % schedule.ckpt_every == 0 or step == schedule.steps or point:
                saved = checkpoints(state)
                for index, (directory, checkpoint, window) in enumerate(
                    zip(directories, saved, windows, strict=True)
                ):
                    ckpt.save_checkpoint(
                        directory,
                        checkpoint,
                        metrics=window[-1][2],
                        keep=schedule.keep_checkpoints,
                        pin=point,
                        train_seconds=base[index] + elapsed,
                    )
                last_saved = step
            if step % schedule.log_every == 0 or step == schedule.steps:
                for index, (log, window) in enumerate(zip(logs, windows, strict=True)):
                    records[index] = {"step": step, **combine_metrics(window), "time": time.time()}
                    window.clear()
                    log.write(records[index])
                bar.set_postfix({key: f"{records[0][key]:.3g}" for key in postfix if key in records[0]})
                if on_log is not None:
                    for record in records:
                        on_log(record)
            if point:
                curve(directories, step, saved, [seconds_so_far + elapsed for seconds_so_far in base])
    except KeyboardInterrupt:
        # Keep the finished steps: the state after a completed compiled call is a consistent one.
        if last_saved != step:
            _save_on_interrupt(directories, state, checkpoints, schedule, [b + elapsed for b in base])
        raise
    finally:
        bar.close()
        for log in logs:
            log.close()
    return state, step, records


def _save_on_interrupt(
    directories: Sequence[Path], state: Any, checkpoints: Callable, schedule, seconds: list[float]
) -> None:
    try:
        for directory, saved, spent in zip(directories, checkpoints(state), seconds, strict=True):
            ckpt.save_checkpoint(directory, saved, keep=schedule.keep_checkpoints, train_seconds=spent)
    except RuntimeError:
        pass  # the interrupt hit while the state's buffers were handed to the next call
