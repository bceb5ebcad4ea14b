"""Training agents: one run (`train`), S seeds as one compiled program (`train_seeds`), and
continuing a stored run (`resume`).

    from qgf.config import load_preset
    from qgf.training import train
    result = train(load_preset("cpu"), "runs/cube1", env="cube-single-play-singletask-task1-v0",
                   data_dir="data")

Calling `train` again on an existing run directory resumes from its latest checkpoint; because
the RNG is part of the checkpointed agent and split once per step, the resumed run ends with
exactly the parameters of an uninterrupted one. The steps themselves run in
`qgf.training.loop.run_schedule`.

Imports `qgf.agents`, `qgf.checkpoint`, `qgf.config`, `qgf.errors` and the other modules of
`qgf.training`; `qgf.data.chunks` when it copies a dataset to the device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax

from qgf import checkpoint as ckpt
from qgf.agents import agent_class
from qgf.agents.base import Agent
from qgf.config import TrainConfig
from qgf.errors import QGFError
from qgf.training.log import MetricLog, check_sinks
from qgf.training.loop import run_schedule
from qgf.training.runs import (
    check_dataset_kind,
    dataset_identity,
    load_training_data,
    open_run,
    run_wandb,
    warn_about_setup,
)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the final agent and where it is stored."""

    run_dir: Path
    agent: Agent
    step: int
    resumed_from: int | None  # checkpoint step the run continued from; None for a fresh start
    metrics: dict[str, float]  # the last log line


def _training_data(config: TrainConfig, env: str | None, data_dir, dataset: Any):
    """(dataset, its identity, the networks' obs dim, the action dim): `dataset`, else `env` loaded
    from `data_dir`, after the dataset-kind check of the name."""
    check_dataset_kind(config, env)
    if dataset is None:
        dataset = load_training_data(config, env, data_dir)
    obs_dim = config.network_obs_dim(dataset.observations.shape[1])
    return dataset, dataset_identity(dataset), obs_dim, int(dataset.actions.shape[1])


def _device_data(dataset: Any, device_data: Any) -> Any:
    if device_data is not None:
        return device_data
    from qgf.data.chunks import to_device

    return to_device(dataset)


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
    curve: Any = None,
) -> TrainResult:
    """Train (or resume) the run in `out_dir` up to `config.steps` steps.

    Data comes from `dataset` (a `qgf.data.Dataset` or any object with numpy `observations`,
    `actions`, `rewards`, `masks`, `terminals`) or is loaded as `env` from `data_dir`. Advanced:
    `device_data` + `sample_fn` bypass `qgf.data.chunks` (bring your own on-device sampler; the
    `dataset` is then used only for its identity and sizes).

    If `out_dir` already holds a run, its config must equal `config` except for the schedule
    fields (steps, log_every, ckpt_every, keep_checkpoints) and its dataset must have the same
    identity; training then continues from the latest checkpoint. `on_log(record)` is called
    after each log line (after the checkpoint of that step, if any). `curve` (a
    `qgf.evaluation.curve.CurveEvaluator`, or any `qgf.training.loop.CurveHook`) evaluates the run
    during training: its points and their pinned checkpoints resume with the run.
    """
    run_dir = Path(out_dir)
    check_sinks(tensorboard, wandb)
    dataset, identity, obs_dim, action_dim = _training_data(config, env, data_dir, dataset)
    agent, resumed_from = open_run(run_dir, config, identity, obs_dim, action_dim, env)
    warn_about_setup(config, dataset, env)
    if agent is None:
        agent = agent_class(config.agent).create(config.seed, obs_dim, action_dim, config)
    device_data = _device_data(dataset, device_data)
    step = int(agent.step)
    log = MetricLog(run_dir, step, tensorboard=tensorboard, wandb=run_wandb(run_dir) if wandb else None)
    agent, step, records = run_schedule(
        config,
        agent,
        device_data,
        [run_dir],
        [log],
        step=step,
        sample_fn=sample_fn,
        last_saved=resumed_from,
        progress=progress,
        on_log=on_log,
        curve=curve,
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
    curve: Any = None,
) -> list[TrainResult]:
    """Train (or resume) S seeds of one config as ONE compiled program, writing S ordinary run
    directories (`out_dirs[i]` holds seed `seeds[i]`, with `config.seed = seeds[i]`).

    The S agents are stacked along a leading axis and `jax.vmap` maps the generic many-updates
    loop over them: each seed keeps its own parameters, optimiser states and RNG, and so samples
    its own batches; the dataset is shared. Each run directory equals what `train` would write for
    that seed, up to floating-point reassociation of the batched kernels. Runs that stopped at
    different steps are first brought to the furthest one separately (each with `train`). With
    `curve`, each seed's learning curve is written into its own run directory."""
    seeds = [int(seed) for seed in seeds]
    run_dirs = [Path(out_dir) for out_dir in out_dirs]
    if not seeds or len(set(seeds)) != len(seeds) or len(run_dirs) != len(seeds):
        raise QGFError(f"need distinct seeds and one run directory per seed, got seeds {seeds}")
    if len(set(run_dirs)) != len(run_dirs):
        raise QGFError("each seed needs its own run directory; use {seed} in the output path")
    dataset, identity, obs_dim, action_dim = _training_data(config, env, data_dir, dataset)
    configs = [config.replace(seed=seed) for seed in seeds]
    opened = [
        open_run(run_dir, seed_config, identity, obs_dim, action_dim, env)
        for run_dir, seed_config in zip(run_dirs, configs, strict=True)
    ]
    warn_about_setup(config, dataset, env)
    device_data = _device_data(dataset, device_data)
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
                curve=None if curve is None else curve.until(config.steps),
            )
            ckpt.atomic_write_json(run_dir / ckpt.CONFIG_FILE, seed_config.to_dict())
            opened[index] = open_run(run_dir, seed_config, identity, obs_dim, action_dim, env)
    cls = agent_class(config.agent)
    agents = [
        agent if agent is not None else cls.create(seed, obs_dim, action_dim, seed_config)
        for (agent, _), seed, seed_config in zip(opened, seeds, configs, strict=True)
    ]
    if sample_fn is None:
        from qgf.agents.base import training_sample_fn

        sample_fn = training_sample_fn(config)
    stack, step, records = run_schedule(
        config,
        SeedStack(stack_agents(agents), len(seeds)),
        device_data,
        run_dirs,
        [MetricLog(run_dir, common) for run_dir in run_dirs],
        step=common,
        sample_fn=sample_fn,
        checkpoints=SeedStack.unstack,
        last_saved=common if common else None,
        progress=progress,
        on_log=on_log,
        curve=curve,
    )
    finals = stack.unstack()
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


class SeedStack(flax.struct.PyTreeNode):
    """S agents of one config stacked along a leading axis (`stack_agents`), trained as one
    program: the `qgf.training.loop.Trainable` of `train_seeds`."""

    agents: Agent
    count: int = flax.struct.field(pytree_node=False)

    @property
    def step(self) -> jax.Array:
        return self.agents.step

    def update_many(
        self, device_data: Any, num_steps: int, sample_fn: Callable | None = None, donate: bool = True
    ) -> tuple[SeedStack, dict]:
        """`num_steps` updates of every seed in one compiled call (the stack is always donated);
        metrics have a leading seed axis."""
        if sample_fn is None:
            from qgf.agents.base import training_sample_fn

            sample_fn = training_sample_fn(self.agents.config)
        agents, metrics = _update_seeds(
            self.agents, device_data, jax.numpy.asarray(num_steps, jax.numpy.int32), sample_fn
        )
        return self.replace(agents=agents), metrics

    def unstack(self) -> list[Agent]:
        return unstack_agents(self.agents, self.count)


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
