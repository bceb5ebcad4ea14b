"""Training loop: compiled multi-step updates, JSONL/CSV logs, periodic checkpoints, exact resume.

    from qgf.config import load_preset
    from qgf.train import train
    result = train(load_preset("cpu"), "runs/cube1", env="cube-single-play-singletask-task1-v0",
                   data_dir="data")

Each compiled call runs up to `log_every` steps (`Agent.update_many`, a `lax.scan` that samples
its batches on the device); calls end at every multiple of `log_every` and of `ckpt_every`, so log
lines and checkpoints land on fixed steps whatever the history of interruptions. Calling `train`
again on an existing run directory resumes from its latest checkpoint; because the RNG is part of
the checkpointed agent and split once per step, the resumed run ends with exactly the parameters
of an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import io
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from qgf import checkpoint as ckpt
from qgf.agents import agent_class
from qgf.agents.base import Agent, metric_kind
from qgf.config import TrainConfig, known_bad_combinations
from qgf.errors import QGFError
from qgf.progress import progress_bar

LOG_JSONL = "log.jsonl"
LOG_CSV = "log.csv"


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the final agent and where it is stored."""

    run_dir: Path
    agent: Agent
    step: int
    resumed_from: int | None  # checkpoint step the run continued from; None for a fresh start
    metrics: dict[str, float]  # the last log line


# ------------------------------------------------------------------ logging sinks


class MetricLog:
    """Append-only JSONL and CSV logs in the run directory, plus optional TensorBoard / W&B.

    On resume, lines past the resumed step (written after the last checkpoint by the killed run)
    are dropped, so each step appears once.
    """

    def __init__(self, run_dir: Path, resume_step: int, *, tensorboard: bool = False, wandb: bool = False):
        self.jsonl_path = run_dir / LOG_JSONL
        self.csv_path = run_dir / LOG_CSV
        self._truncate_after(resume_step)
        self._writers: list[Callable[[dict], None]] = []
        self._closers: list[Callable[[], None]] = []
        if tensorboard:
            self._open_tensorboard(run_dir)
        if wandb:
            self._open_wandb(run_dir)

    def _truncate_after(self, step: int) -> None:
        if self.jsonl_path.exists():
            kept = [
                line
                for line in self.jsonl_path.read_text().splitlines()
                if line.strip() and _parse_step(line) is not None and _parse_step(line) <= step
            ]
            ckpt.atomic_write_bytes(self.jsonl_path, "".join(line + "\n" for line in kept).encode())
        if self.csv_path.exists():
            with self.csv_path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            fields = list(rows[0].keys()) if rows else []
            buffer = io.StringIO()
            if fields:
                writer = csv.DictWriter(buffer, fieldnames=fields)
                writer.writeheader()
                writer.writerows(row for row in rows if int(float(row["step"])) <= step)
            ckpt.atomic_write_bytes(self.csv_path, buffer.getvalue().encode())

    def write(self, record: dict[str, Any]) -> None:
        with self.jsonl_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        self._write_csv(record)
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
                ckpt.atomic_write_bytes(self.csv_path, buffer.getvalue().encode())
        with self.csv_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            if not existing:
                writer.writeheader()
            writer.writerow(record)

    def _open_tensorboard(self, run_dir: Path) -> None:
        if tensorboard_package() == "tensorboardX":
            from tensorboardX import SummaryWriter
        else:
            from torch.utils.tensorboard import SummaryWriter
        summary = SummaryWriter(str(run_dir / "tensorboard"))

        def write(record: dict) -> None:
            for name, value in record.items():
                if name != "step" and isinstance(value, int | float):
                    summary.add_scalar(name, value, record["step"])

        self._writers.append(write)
        self._closers.append(summary.close)

    def _open_wandb(self, run_dir: Path) -> None:
        import wandb

        meta = ckpt.read_meta(run_dir)
        # A stable id per run directory, so a resumed run continues the same W&B run.
        run_id = hashlib.sha256(f"{run_dir.resolve()}|{meta['created']}".encode()).hexdigest()[:16]
        wandb_run = wandb.init(
            project="qgf",
            name=run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=ckpt.read_config(run_dir).to_dict(),
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


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's JSONL log as a list of records."""
    path = Path(run_dir) / LOG_JSONL
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if _parse_step(line) is not None]


# ------------------------------------------------------------------ the loop


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """Name, path, size and fingerprint of a dataset (its `metadata()` when it has one)."""
    if hasattr(dataset, "metadata"):
        return dict(dataset.metadata())
    return {key: getattr(dataset, key, None) for key in ("name", "path", "size", "fingerprint")}


def _check_same_dataset(run_dir: Path, stored: dict[str, Any], current: dict[str, Any]) -> None:
    keys = ("name", "size", "fingerprint", "split", "sparse", "action_clip_eps")
    differing = [key for key in keys if key in stored and key in current and stored[key] != current[key]]
    if differing:
        details = ", ".join(f"{key}: {stored[key]!r} (run) vs {current[key]!r} (now)" for key in differing)
        raise QGFError(
            f"run {run_dir} was trained on different data ({details}); "
            "resume with the original dataset or start a new run with a different --out"
        )


def _check_same_config(run_dir: Path, stored: TrainConfig, config: TrainConfig) -> None:
    differing = stored.identity_diff(config)
    if differing:
        details = ", ".join(f"{key}={old!r} (run) vs {new!r} (now)" for key, (old, new) in differing.items())
        raise QGFError(
            f"run {run_dir} exists with a different config ({details}); re-run with the run's settings "
            "to resume it (see its config.json), or choose a new --out"
        )


# Domains the QGF paper trains with sparse rewards (Section 5: "a challenging sparse reward setting
# for the harder puzzles environments").
PAPER_SPARSE_DOMAINS = ("puzzle-4x5", "puzzle-4x6")


def _warn_about_setup(config: TrainConfig, dataset: Any, env: str | None) -> None:
    for message in known_bad_combinations(config):
        warnings.warn(message, UserWarning, stacklevel=3)
    name = env or getattr(dataset, "name", "") or ""
    domain = next((d for d in PAPER_SPARSE_DOMAINS if d in name), None)
    if domain and not config.sparse_reward:
        warnings.warn(
            f"the QGF paper trains {domain} with sparse rewards; set sparse_reward=true to reproduce it "
            "(dense rewards define a different task and change the value scale)",
            UserWarning,
            stacklevel=3,
        )
    transitions = getattr(dataset, "num_transitions", None)
    if transitions is not None and config.batch_size > transitions:
        warnings.warn(
            f"batch_size={config.batch_size} exceeds the dataset's {transitions} transitions; "
            "every batch repeats chunks",
            UserWarning,
            stacklevel=3,
        )
    widest = max(config.actor_hidden_dims + config.critic_hidden_dims)
    if jax.default_backend() == "cpu" and widest >= 1024 and config.batch_size >= 1024:
        warnings.warn(
            f"width {widest} x batch {config.batch_size} on CPU takes about a second per step "
            f"({config.steps} steps would take days); this scale is GPU work, use --preset cpu here",
            UserWarning,
            stacklevel=3,
        )


def load_training_data(config: TrainConfig, env: str | None, data_dir: str | Path | None):
    if env is None:
        raise QGFError("no dataset: pass env (a dataset name such as cube-single-play-singletask-task1-v0)")
    from qgf.data import load_dataset

    return load_dataset(env, data_dir, sparse=config.sparse_reward, action_clip_eps=config.action_clip_eps)


def _chunk_length(step: int, total: int, config: TrainConfig) -> int:
    """Steps until the next log line, checkpoint or the end, whichever comes first."""
    to_log = config.log_every - step % config.log_every
    to_checkpoint = config.ckpt_every - step % config.ckpt_every
    return min(to_log, to_checkpoint, total - step)


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    env: str | None = None,
    data_dir: str | Path | None = None,
    dataset: Any = None,
    progress: bool = True,
    tensorboard: bool = False,
    wandb: bool = False,
    sample_fn: Callable | None = None,
    device_data: Any = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train (or resume) the run in `out_dir` up to `config.steps` steps.

    Data comes from `dataset` (a `qgf.data.Dataset` or any object with numpy `observations`,
    `actions`, `rewards`, `masks`, `terminals`) or is loaded as `env` from `data_dir`. Advanced:
    `device_data` + `sample_fn` bypass `qgf.data.chunks` (bring your own on-device sampler; the
    `dataset` is then used only for its identity and sizes).

    If `out_dir` already holds a run, its config must equal `config` except for the schedule
    fields (steps, log_every, ckpt_every, keep_checkpoints) and its dataset must have the same
    identity; training then continues from the latest checkpoint. `on_log(record)` is called
    after each log line (after the checkpoint of that step, if any).
    """
    run_dir = Path(out_dir)
    check_sinks(tensorboard, wandb)
    if dataset is None:
        dataset = load_training_data(config, env, data_dir)
    identity = dataset_identity(dataset)
    obs_dim = int(dataset.observations.shape[1])
    action_dim = int(dataset.actions.shape[1])

    agent = None
    resumed_from = None
    if ckpt.is_run_dir(run_dir):
        _check_same_config(run_dir, ckpt.read_config(run_dir), config)
        meta = ckpt.read_meta(run_dir)
        _check_same_dataset(run_dir, meta.get("dataset", {}), identity)
        if (meta["obs_dim"], meta["action_dim"]) != (obs_dim, action_dim):
            raise QGFError(
                f"run {run_dir} has obs/action dims {meta['obs_dim']}/{meta['action_dim']}, "
                f"the data has {obs_dim}/{action_dim}"
            )
        ckpt.atomic_write_json(run_dir / ckpt.CONFIG_FILE, config.to_dict())  # schedule may have changed
        resumed_from = ckpt.latest_step(run_dir)
        if resumed_from is not None:
            agent = ckpt.read_checkpoint(
                ckpt.checkpoint_path(run_dir, resumed_from), ckpt.agent_template(config, meta)
            )
    else:
        ckpt.create_run(
            run_dir,
            config,
            obs_dim=obs_dim,
            action_dim=action_dim,
            dataset=identity,
            extra={"env": env or identity.get("name"), "agent": config.agent},
        )
    _warn_about_setup(config, dataset, env)
    if agent is None:
        agent = agent_class(config.agent).create(config.seed, obs_dim, action_dim, config)

    if device_data is None:
        from qgf.data.chunks import to_device

        device_data = to_device(dataset)

    step = int(agent.step)
    log = MetricLog(run_dir, step, tensorboard=tensorboard, wandb=wandb)
    record: dict[str, Any] = {}
    window: list[
        tuple[int, float, dict[str, float]]
    ] = []  # (steps, seconds, metrics) since the last log line
    last_saved = resumed_from
    bar = progress_bar(progress, config.steps, initial=step, unit="step", smoothing=0.1)
    try:
        while step < config.steps:
            length = _chunk_length(step, config.steps, config)
            started = time.perf_counter()
            agent, metrics = agent.update_many(device_data, length, sample_fn=sample_fn, donate=True)
            metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
            window.append((length, time.perf_counter() - started, metrics))
            step += length
            bar.update(length)
            if step % config.ckpt_every == 0 or step == config.steps:
                ckpt.save_checkpoint(run_dir, agent, metrics=metrics, keep=config.keep_checkpoints)
                last_saved = step
            if step % config.log_every == 0 or step == config.steps:
                record = {"step": step, **combine_metrics(window), "time": time.time()}
                window = []
                bar.set_postfix(
                    {
                        key: f"{record[key]:.3g}"
                        for key in ("bc_loss", "q_mean", "steps_per_s")
                        if key in record
                    }
                )
                log.write(record)
                if on_log is not None:
                    on_log(record)
    except KeyboardInterrupt:
        # Keep the finished steps: the agent after a completed compiled call is a consistent state.
        if last_saved != step:
            _save_on_interrupt(run_dir, agent, config)
        raise
    finally:
        bar.close()
        log.close()
    return TrainResult(run_dir=run_dir, agent=agent, step=step, resumed_from=resumed_from, metrics=record)


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


def _save_on_interrupt(run_dir: Path, agent: Agent, config: TrainConfig) -> None:
    try:
        ckpt.save_checkpoint(run_dir, agent, keep=config.keep_checkpoints)
    except RuntimeError:
        pass  # the interrupt hit while the agent's buffers were handed to the next call


def resume(
    run_dir: str | Path,
    *,
    steps: int | None = None,
    data_dir: str | Path | None = None,
    dataset: Any = None,
    progress: bool = True,
    **kwargs: Any,
) -> TrainResult:
    """Continue the run in `run_dir` with its stored config (optionally to a new total `steps`)."""
    run_dir = Path(run_dir)
    config = ckpt.read_config(run_dir)
    meta = ckpt.read_meta(run_dir)
    if steps is not None:
        config = config.replace(steps=steps)
    env = meta.get("env") or meta.get("dataset", {}).get("name")
    if dataset is None and data_dir is None:
        stored_path = meta.get("dataset", {}).get("path")
        data_dir = str(Path(stored_path).parent) if stored_path else None
    return train(config, run_dir, env=env, data_dir=data_dir, dataset=dataset, progress=progress, **kwargs)
