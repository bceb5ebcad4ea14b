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
import numpy as np

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


def check_dataset_kind(config: TrainConfig, env: str | None) -> None:
    """A one-line error when a goal-conditioned run is given a single-task dataset name, or a
    single-task run a dataset name without a task (whose rewards are all 0). Names that are not
    OGBench names (a label for an in-memory dataset) pass."""
    if env is None:
        return
    from qgf.envs import parse_name

    try:
        parsed = parse_name(env)
    except QGFError:
        return
    if parsed.dataset_type is None:
        return  # an environment name: the loader says what to pass instead
    if config.goal_conditioned and parsed.singletask:
        raise QGFError(
            f"{env} is a single-task dataset, and a goal-conditioned run trains on the play data without "
            f"a task: use --env {parsed.dataset_name}, or train single-task (no --goal-conditioned, no goal/ "
            "preset)"
        )
    if not config.goal_conditioned and not parsed.singletask:
        raise QGFError(
            f"{env} has no task, so its rewards are all 0: add --goal-conditioned to train on its goals, "
            f"or name a task, e.g. --env {parsed.with_task(1).singletask_dataset_name}"
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


def _open_run(
    run_dir: Path,
    config: TrainConfig,
    identity: dict[str, Any],
    obs_dim: int,
    action_dim: int,
    env: str | None,
) -> tuple[Agent | None, int | None]:
    """Create the run directory, or check an existing one against `config` and the data and load
    its latest checkpoint. Returns (agent or None for a fresh start, resumed checkpoint step)."""
    if not ckpt.is_run_dir(run_dir):
        extra = {"env": env or identity.get("name"), "agent": config.agent}
        if config.goal_conditioned:
            # The networks see [observation, goal]; evaluation concatenates the env's goal.
            extra.update(goal_conditioned=True, observation_dim=obs_dim // 2, goal_dim=obs_dim // 2)
        ckpt.create_run(
            run_dir,
            config,
            obs_dim=obs_dim,
            action_dim=action_dim,
            dataset=identity,
            extra=extra,
        )
        return None, None
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
    if resumed_from is None:
        return None, None
    agent = ckpt.read_checkpoint(
        ckpt.checkpoint_path(run_dir, resumed_from), ckpt.agent_template(config, meta)
    )
    return agent, resumed_from


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
    check_dataset_kind(config, env)
    if dataset is None:
        dataset = load_training_data(config, env, data_dir)
    identity = dataset_identity(dataset)
    obs_dim = config.network_obs_dim(dataset.observations.shape[1])
    action_dim = int(dataset.actions.shape[1])
    agent, resumed_from = _open_run(run_dir, config, identity, obs_dim, action_dim, env)
    _warn_about_setup(config, dataset, env)
    if agent is None:
        agent = agent_class(config.agent).create(config.seed, obs_dim, action_dim, config)
    if device_data is None:
        from qgf.data.chunks import to_device

        device_data = to_device(dataset)

    def advance(agent: Agent, length: int) -> tuple[Agent, dict]:
        return agent.update_many(device_data, length, sample_fn=sample_fn, donate=True)

    agent, step, records = _training_loop(
        config,
        [run_dir],
        agent,
        int(agent.step),
        advance,
        lambda agent: [agent],
        last_saved=resumed_from,
        progress=progress,
        tensorboard=tensorboard,
        wandb=wandb,
        on_log=on_log,
    )
    return TrainResult(run_dir=run_dir, agent=agent, step=step, resumed_from=resumed_from, metrics=records[0])


def seed_run_dirs(out: str | Path, seeds: list[int]) -> list[Path]:
    """One run directory per seed: `out` with `{seed}` filled in, else `out/seed<S>`."""
    out = str(out)
    if "{seed}" in out:
        return [Path(out.replace("{seed}", str(seed))) for seed in seeds]
    return [Path(out) / f"seed{seed}" for seed in seeds]


def train_seeds(
    config: TrainConfig,
    seeds: list[int],
    out_dirs: list[str | Path],
    *,
    env: str | None = None,
    data_dir: str | Path | None = None,
    dataset: Any = None,
    progress: bool = True,
    sample_fn: Callable | None = None,
    device_data: Any = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> list[TrainResult]:
    """Train (or resume) S seeds of one config as ONE compiled program, writing S ordinary run
    directories (`out_dirs[i]` holds seed `seeds[i]`, with `config.seed = seeds[i]`).

    The S agents are stacked along a leading axis and `jax.vmap` maps the generic many-updates
    loop over them: each seed keeps its own parameters, optimiser states and RNG, and so samples
    its own batches; the dataset is shared. Each run directory equals what `train` would write for
    that seed, up to floating-point reassociation of the batched kernels. Runs that stopped at
    different steps are first brought to the furthest one separately (each with `train`)."""
    seeds = [int(seed) for seed in seeds]
    run_dirs = [Path(out_dir) for out_dir in out_dirs]
    if not seeds or len(set(seeds)) != len(seeds) or len(run_dirs) != len(seeds):
        raise QGFError(f"need distinct seeds and one run directory per seed, got seeds {seeds}")
    if len(set(run_dirs)) != len(run_dirs):
        raise QGFError("each seed needs its own run directory; use {seed} in the output path")
    check_dataset_kind(config, env)
    if dataset is None:
        dataset = load_training_data(config, env, data_dir)
    identity = dataset_identity(dataset)
    obs_dim = config.network_obs_dim(dataset.observations.shape[1])
    action_dim = int(dataset.actions.shape[1])
    configs = [config.replace(seed=seed) for seed in seeds]
    opened = [
        _open_run(run_dir, seed_config, identity, obs_dim, action_dim, env)
        for run_dir, seed_config in zip(run_dirs, configs, strict=True)
    ]
    _warn_about_setup(config, dataset, env)
    if device_data is None:
        from qgf.data.chunks import to_device

        device_data = to_device(dataset)
    resumed = [resumed_from for _, resumed_from in opened]
    common = min(max(step or 0 for step in resumed), config.steps)
    for index, (run_dir, seed_config) in enumerate(zip(run_dirs, configs, strict=True)):
        if (resumed[index] or 0) < common:  # a straggler: bring it level on its own first
            train(
                seed_config.replace(steps=common),
                run_dir,
                env=env,
                dataset=dataset,
                progress=False,
                sample_fn=sample_fn,
                device_data=device_data,
            )
            ckpt.atomic_write_json(run_dir / ckpt.CONFIG_FILE, seed_config.to_dict())
            opened[index] = _open_run(run_dir, seed_config, identity, obs_dim, action_dim, env)
    cls = agent_class(config.agent)
    agents = [
        agent if agent is not None else cls.create(seed, obs_dim, action_dim, seed_config)
        for (agent, _), seed, seed_config in zip(opened, seeds, configs, strict=True)
    ]
    stacked = stack_agents(agents)
    if sample_fn is None:
        from qgf.agents.base import training_sample_fn

        sample_fn = training_sample_fn(config)

    def advance(stacked: Agent, length: int) -> tuple[Agent, dict]:
        return _update_seeds(stacked, device_data, jax.numpy.asarray(length, jax.numpy.int32), sample_fn)

    stacked, step, records = _training_loop(
        config,
        run_dirs,
        stacked,
        common,
        advance,
        lambda stacked: unstack_agents(stacked, len(seeds)),
        last_saved=common if common else None,
        progress=progress,
        on_log=on_log,
    )
    finals = unstack_agents(stacked, len(seeds))
    return [
        TrainResult(run_dir=run_dir, agent=agent, step=step, resumed_from=resumed_from, metrics=record)
        for run_dir, agent, resumed_from, record in zip(run_dirs, finals, resumed, records, strict=True)
    ]


def stack_agents(agents: list[Agent]) -> Agent:
    """S agents of one config as one agent whose every array has a leading seed axis."""
    return jax.tree.map(lambda *leaves: jax.numpy.stack(leaves), *agents)


def unstack_agents(stacked: Agent, count: int) -> list[Agent]:
    """The inverse of `stack_agents`."""
    return [jax.tree.map(lambda leaf, i=index: leaf[i], stacked) for index in range(count)]


def _run_updates_per_seed(stacked: Agent, device_data: Any, num_steps: jax.Array, sample_fn: Callable):
    from qgf.agents.base import _run_updates

    # The data and the step count are shared; everything the agent carries is mapped.
    return jax.vmap(lambda agent: _run_updates(agent, device_data, num_steps, sample_fn))(stacked)


_update_seeds = jax.jit(_run_updates_per_seed, static_argnums=(3,), donate_argnums=(0,))


def _training_loop(
    config: TrainConfig,
    run_dirs: list[Path],
    agent: Any,
    step: int,
    advance: Callable[[Any, int], tuple[Any, dict]],
    unstack: Callable[[Any], list[Agent]],
    *,
    last_saved: int | None,
    progress: bool,
    tensorboard: bool = False,
    wandb: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Any, int, list[dict[str, Any]]]:
    """The loop shared by one run and by S seeds trained as one program: `advance(agent, n)` runs
    n steps of `agent` (one agent, or S stacked) and returns per-run metrics (scalars, or (S,)
    arrays); `unstack(agent)` gives one `Agent` per entry of `run_dirs`, for checkpoints. All runs
    share the step counter, so their log lines and checkpoints land on the same steps."""
    logs = [MetricLog(run_dir, step, tensorboard=tensorboard, wandb=wandb) for run_dir in run_dirs]
    records: list[dict[str, Any]] = [{} for _ in run_dirs]
    # per run: (steps, seconds, metrics) since the last log line
    windows: list[list[tuple[int, float, dict[str, float]]]] = [[] for _ in run_dirs]
    bar = progress_bar(progress, config.steps, initial=step, unit="step", smoothing=0.1)
    try:
        while step < config.steps:
            length = _chunk_length(step, config.steps, config)
            started = time.perf_counter()
            agent, metrics = advance(agent, length)
            metrics = {name: np.reshape(value, -1) for name, value in jax.device_get(metrics).items()}
            seconds = time.perf_counter() - started
            for index, window in enumerate(windows):
                window.append(
                    (length, seconds, {name: float(value[index]) for name, value in metrics.items()})
                )
            step += length
            bar.update(length)
            if step % config.ckpt_every == 0 or step == config.steps:
                for run_dir, run_agent, window in zip(run_dirs, unstack(agent), windows, strict=True):
                    ckpt.save_checkpoint(
                        run_dir, run_agent, metrics=window[-1][2], keep=config.keep_checkpoints
                    )
                last_saved = step
            if step % config.log_every == 0 or step == config.steps:
                for index, (log, window) in enumerate(zip(logs, windows, strict=True)):
                    records[index] = {"step": step, **combine_metrics(window), "time": time.time()}
                    window.clear()
                    log.write(records[index])
                bar.set_postfix(
                    {
                        key: f"{records[0][key]:.3g}"
                        for key in ("bc_loss", "q_mean", "steps_per_s")
                        if key in records[0]
                    }
                )
                if on_log is not None:
                    for record in records:
                        on_log(record)
    except KeyboardInterrupt:
        # Keep the finished steps: the agent after a completed compiled call is a consistent state.
        if last_saved != step:
            _save_on_interrupt(run_dirs, agent, unstack, config)
        raise
    finally:
        bar.close()
        for log in logs:
            log.close()
    return agent, step, records


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


def _save_on_interrupt(run_dirs: list[Path], agent: Any, unstack: Callable, config: TrainConfig) -> None:
    try:
        for run_dir, run_agent in zip(run_dirs, unstack(agent), strict=True):
            ckpt.save_checkpoint(run_dir, run_agent, keep=config.keep_checkpoints)
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
