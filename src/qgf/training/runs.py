"""Opening a run directory for training: creating it, or checking an existing one against the
config and the data and loading its latest checkpoint; the dataset checks and warnings that come
before any step; loading the training data by name.

Imports `qgf.checkpoint`, `qgf.config`, `qgf.errors`, `qgf.training.log`; `qgf.envs` and
`qgf.data` when a dataset is named (inside the functions that need them).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax

from qgf import checkpoint as ckpt
from qgf.config import TrainConfig, known_bad_combinations
from qgf.errors import QGFError
from qgf.training.log import WandbRun

if TYPE_CHECKING:
    from qgf.agents.base import Agent

# Domains the QGF paper trains with sparse rewards (Section 5: "a challenging sparse reward setting
# for the harder puzzles environments").
PAPER_SPARSE_DOMAINS = ("puzzle-4x5", "puzzle-4x6")


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """Name, path, size and fingerprint of a dataset (its `metadata()` when it has one)."""
    if hasattr(dataset, "metadata"):
        return dict(dataset.metadata())
    return {key: getattr(dataset, key, None) for key in ("name", "path", "size", "fingerprint")}


def check_same_dataset(run_dir: Path, stored: dict[str, Any], current: dict[str, Any]) -> None:
    keys = ("name", "size", "fingerprint", "split", "sparse", "action_clip_eps")
    differing = [key for key in keys if key in stored and key in current and stored[key] != current[key]]
    if differing:
        details = ", ".join(f"{key}: {stored[key]!r} (run) vs {current[key]!r} (now)" for key in differing)
        raise QGFError(
            f"run {run_dir} was trained on different data ({details}); "
            "resume with the original dataset or start a new run with a different --out"
        )


def check_same_config(run_dir: Path, stored: TrainConfig, config: TrainConfig) -> None:
    differing = stored.identity_diff(config)
    if differing:
        details = ", ".join(f"{key}={old!r} (run) vs {new!r} (now)" for key, (old, new) in differing.items())
        raise QGFError(
            f"run {run_dir} exists with a different config ({details}); re-run with the run's settings "
            "to resume it (see its config.json), or choose a new --out"
        )


def warn_about_setup(config: TrainConfig, dataset: Any, env: str | None) -> None:
    """Warnings (attributed to the caller of `train`) for legal settings known to hurt."""
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
    """The dataset named `env` from `data_dir`, read as `config` says (sparse rewards, clipping)."""
    if env is None:
        raise QGFError("no dataset: pass env (a dataset name such as cube-single-play-singletask-task1-v0)")
    from qgf.data import load_dataset

    return load_dataset(env, data_dir, sparse=config.sparse_reward, action_clip_eps=config.action_clip_eps)


def open_run(
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
    check_same_config(run_dir, ckpt.read_config(run_dir), config)
    meta = ckpt.read_meta(run_dir)
    check_same_dataset(run_dir, meta.get("dataset", {}), identity)
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


def run_wandb(run_dir: Path) -> WandbRun:
    """The W&B identity of a run directory: its name, an id stable over resumptions, its config."""
    meta = ckpt.read_meta(run_dir)
    return WandbRun(
        name=run_dir.name,
        id=WandbRun.stable_id(run_dir, meta["created"]),
        config=ckpt.read_config(run_dir).to_dict(),
    )
