"""Add-ons: extra networks trained against a frozen run, stored inside its directory.

Some test-time methods need one more network than a run has: RobustQ a critic of noisy actions,
CFGRL an optimality-conditioned flow, QGF-Distill a learned denoiser. An add-on trains that network
with the run's BC flow (`agent.behavior_velocity_fn`), critic (`agent.q_fn`) and value
(`agent.value`) held fixed, and hands the samplers of `qgf.guidance` its callables as ``extras``.
One base run, many extractors; the run's own files are never written.

Layout (inside the run directory, next to its own files)::

    RUN/addons/NAME/addon.json                  what it is: name, resolved AddonConfig, the base
                                                checkpoint it was trained against (step, sha256),
                                                package versions, creation time
    RUN/addons/NAME/checkpoints/step_N.msgpack  AddonState (+ .json sidecar), as qgf.checkpoint
    RUN/addons/NAME/log.jsonl (+ log.csv)       as a run's (qgf.training.log; optionally
                                                TensorBoard in tensorboard/, and W&B)

An add-on is trained by the same loop as an agent (`qgf.training.loop.run_schedule`, its steps by
`qgf.training.steps.run_steps`): `AddonTrainer` is the add-on's `Trainable`. So writes are atomic,
calls end at every log line and checkpoint, Ctrl-C keeps the finished steps, and training resumes
exactly from the latest checkpoint (the RNG is in the state, split once per step). An add-on
refuses to load against a different base checkpoint than the one it was trained on. Settings
(`AddonConfig`) are parsed and type-checked by `qgf.config`'s rules.

Imports `qgf.checkpoint`, `qgf.config`, `qgf.flow`, `qgf.training`; `qgf.addons` (the registry),
`qgf.data.chunks` inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import flax
import jax
import jax.numpy as jnp
import optax

from qgf import checkpoint as ckpt
from qgf.config import SCHEDULE_FIELDS, TrainConfig
from qgf.errors import QGFError
from qgf.fileio import atomic_write_json
from qgf.flow import VelocityField, sample_flow_times
from qgf.nets import mlp_style, policy_layer_norm
from qgf.sections import check_setting_keys, coerce_settings, parse_settings
from qgf.training.log import MetricLog, WandbRun, check_sinks
from qgf.training.loop import run_schedule
from qgf.training.steps import run_steps
from qgf.versions import package_versions

ADDONS_DIR = "addons"
RECORD_FILE = "addon.json"
FORMAT_VERSION = 1
Params = Any


@dataclasses.dataclass(frozen=True)
class AddonConfig:
    """Settings of one add-on's training. Defaults train in a few minutes on 2 CPU cores for a
    `cpu`-preset run (4x256 networks); hashable, so an `Addon` can be a static jit argument."""

    steps: int = 5000
    batch_size: int = 256
    learning_rate: float = 3e-4
    # Hidden widths; () = the run's own (actor widths for flows and the denoiser, critic widths for
    # RobustQ), which is what lets a flow add-on start from the run's BC flow parameters.
    hidden_dims: tuple[int, ...] = ()
    # cfgrl, distill: start from the run's BC flow parameters instead of a fresh initialisation.
    init_from_actor: bool = True
    seed: int = 0
    log_every: int = 250
    ckpt_every: int = 1000
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        coerce_settings(self)  # each field as its type, by the config settings' rules (qgf.sections)
        if not all(width > 0 for width in self.hidden_dims):
            raise QGFError(f"add-on hidden_dims must be positive integers, got {self.hidden_dims!r}")
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise QGFError(f"add-on {name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise QGFError(f"add-on learning_rate must be > 0, got {self.learning_rate}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AddonConfig:
        """Build from a (possibly partial) dict; unknown keys are an error with close matches."""
        check_setting_keys(cls, values, "add-on setting")
        return cls(**dict(values))

    @classmethod
    def parse(cls, items: Iterable[str]) -> dict[str, Any]:
        """``["steps=2000", "hidden_dims=64,64", "init_from_actor=false"]`` -> typed values."""
        return parse_settings(cls, items, "add-on setting")

    def identity_diff(self, other: AddonConfig) -> dict[str, tuple[Any, Any]]:
        """Settings other than the schedule (`qgf.config.SCHEDULE_FIELDS`, which a resumed
        training may change) that differ: {name: (self value, other value)}."""
        return {
            field.name: (getattr(self, field.name), getattr(other, field.name))
            for field in dataclasses.fields(self)
            if field.name not in SCHEDULE_FIELDS and getattr(self, field.name) != getattr(other, field.name)
        }


class AddonState(flax.struct.PyTreeNode):
    """What an add-on checkpoint holds: trained `params`, their optimiser state, fixed `constants`
    (set once at initialisation, never trained), the RNG and the step counter."""

    params: Params
    opt_state: Params
    constants: Params
    rng: jax.Array
    step: jax.Array


@dataclasses.dataclass(frozen=True)
class Addon:
    """One add-on method. Subclasses set the class attributes and the four methods below.

    Frozen and hashable (a static argument of the compiled training loop). `run_config` is the
    base run's `learner_config()`, `chunk_dim` its flattened chunk size h * A.
    """

    config: AddonConfig
    run_config: TrainConfig
    action_dim: int

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    samplers: ClassVar[tuple[str, ...]] = ()  # the qgf.guidance estimators that use it
    provides: ClassVar[tuple[str, ...]] = ()  # the names of qgf.guidance.EXTRA_CALLABLES it fills
    # The run's field whose widths the network takes when `hidden_dims` is unset: a flow shaped
    # like the actor (so it can start from the BC flow's parameters), a critic like the critic.
    widths_from: ClassVar[str] = "actor_hidden_dims"

    @classmethod
    def default_hidden_dims(cls, run_config: TrainConfig) -> tuple[int, ...]:
        """The hidden widths the add-on takes from a run whose settings leave them unset."""
        return tuple(getattr(run_config, cls.widths_from))

    @property
    def chunk_dim(self) -> int:
        return self.run_config.horizon * self.action_dim

    @property
    def hidden_dims(self) -> tuple[int, ...]:
        return self.config.hidden_dims or self.default_hidden_dims(self.run_config)

    def velocity_network(self, output_dim: int | None = None) -> VelocityField:
        """An MLP on [s, a_t, features(t)] shaped like the run's actor (output `output_dim`), in the
        run's network style for its role (`widths_from`: a critic's or a policy's)."""
        role = "critic" if self.widths_from == "critic_hidden_dims" else "policy"
        return VelocityField(
            hidden_dims=self.hidden_dims,
            chunk_dim=self.chunk_dim if output_dim is None else output_dim,
            time_embedding=self.run_config.time_embedding,
            time_embedding_dim=self.run_config.time_embedding_dim,
            # shaped like the actor's network (so it can start from its parameters), or a critic's
            layer_norm=self.run_config.layer_norm if role == "critic" else policy_layer_norm(self.run_config),
            style=mlp_style(self.run_config, role),
        )

    def flow_times(self, key: jax.Array, batch_size: int) -> jax.Array:
        """Training times t, drawn as the run's BC flow draws them (`time_sampling`)."""
        return sample_flow_times(key, batch_size, self.run_config.time_sampling, self.run_config.flow_steps)

    def init_from_actor(self, base, key: jax.Array, observations, actions) -> tuple[Params, bool]:
        """A velocity-shaped network: the run's BC flow parameters when `init_from_actor` is set
        and their shapes fit, else a fresh initialisation. Returns (params, copied)."""
        network = self.velocity_network()
        fresh = network.init(key, observations, actions, jnp.zeros((actions.shape[0],), jnp.float32))
        actor = base.params.get("actor") if self.config.init_from_actor else None
        if actor is not None and jax.tree.structure(actor) == jax.tree.structure(fresh):
            shapes_fit = all(
                a.shape == f.shape
                for a, f in zip(jax.tree.leaves(actor), jax.tree.leaves(fresh), strict=True)
            )
            if shapes_fit:
                return jax.tree.map(jnp.array, jax.lax.stop_gradient(actor)), True
        return fresh, False

    # ------------------------------------------------------------------ what a method provides

    def init(self, base, key: jax.Array, batch: dict) -> tuple[Params, Params]:
        """(trainable params, fixed constants) from the frozen base agent and a data batch."""
        raise NotImplementedError

    def loss(self, params: Params, constants: Params, base, batch: dict, key: jax.Array):
        """(scalar loss, metrics) at `params`; every base quantity is held fixed."""
        raise NotImplementedError

    def extras(self, params: Params, constants: Params, base) -> dict[str, Callable]:
        """The named callables for `qgf.guidance` (keys: `provides`)."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------
# Training


def _optimizer(addon: Addon) -> optax.GradientTransformation:
    return optax.adam(addon.config.learning_rate)


def _sample_batch(addon: Addon, device_data, key: jax.Array, batch_size: int, sample_fn=None) -> dict:
    if sample_fn is None:
        from qgf.data.chunks import sample_chunks as sample_fn
    config = addon.run_config
    return sample_fn(device_data, key, batch_size, config.horizon, config.discount)


# Large statistics batch for the constants an add-on fixes at initialisation (RobustQ's Q scale).
INIT_BATCH_SIZE = 2048


@functools.partial(jax.jit, static_argnums=(0,))
def init_state(addon: Addon, base, device_data) -> AddonState:
    """A fresh AddonState (seeded by `addon.config.seed`)."""
    rng, data_key, init_key = jax.random.split(jax.random.PRNGKey(addon.config.seed), 3)
    batch = _sample_batch(addon, device_data, data_key, max(INIT_BATCH_SIZE, addon.config.batch_size))
    params, constants = addon.init(base, init_key, batch)
    return AddonState(
        params=params,
        opt_state=_optimizer(addon).init(params),
        constants=constants,
        rng=rng,
        step=jnp.zeros((), jnp.int32),
    )


def _train_steps(
    addon: Addon, state: AddonState, base, device_data, num_steps, sample_fn=None
) -> tuple[AddonState, dict]:
    """`num_steps` (traced) updates in one compiled loop (`qgf.training.steps.run_steps`); returns
    the state and the metrics over the steps."""
    # The base run is frozen: only the add-on's params are differentiated (argument 0 of the loss),
    # and each loss also wraps its base-run targets in stop_gradient.

    def one_step(state: AddonState) -> tuple[AddonState, dict]:
        rng, batch_key, loss_key = jax.random.split(state.rng, 3)
        batch = _sample_batch(addon, device_data, batch_key, addon.config.batch_size, sample_fn)
        (loss, metrics), grads = jax.value_and_grad(addon.loss, has_aux=True)(
            state.params, state.constants, base, batch, loss_key
        )
        updates, opt_state = _optimizer(addon).update(grads, state.opt_state, state.params)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        new_state = state.replace(
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            rng=rng,
            step=state.step + 1,
        )
        return new_state, metrics

    return run_steps(one_step, state, num_steps)


train_steps = jax.jit(_train_steps, static_argnums=(0, 5))


class AddonTrainer(flax.struct.PyTreeNode):
    """An add-on's state with the frozen run it trains against: the `qgf.training.loop.Trainable`
    that the training loop advances. Checkpoints hold only `state`."""

    addon: Addon = flax.struct.field(pytree_node=False)
    state: AddonState
    base: Any  # the run's agent, never changed

    @property
    def step(self) -> jax.Array:
        return self.state.step

    def update_many(
        self, device_data: Any, num_steps: int, sample_fn: Callable | None = None, donate: bool = False
    ) -> tuple[AddonTrainer, dict]:
        """`num_steps` updates in one compiled call, each on a batch that `sample_fn` (default
        `qgf.data.chunks.sample_chunks`) draws on the device. The state is never donated (a fresh
        one may share its first parameters with the run's actor, `init_from_actor`)."""
        del donate
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        steps = jnp.asarray(num_steps, jnp.int32)
        state, metrics = train_steps(self.addon, self.state, self.base, device_data, steps, sample_fn)
        return self.replace(state=state), metrics

    def checkpoints(self) -> list[AddonState]:
        return [self.state]


# --------------------------------------------------------------------------------------------------
# Storage


def addon_dir(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / ADDONS_DIR / name


def read_record(directory: Path) -> dict[str, Any] | None:
    path = directory / RECORD_FILE
    if not path.is_file():
        return None
    return ckpt.read_json(path, "add-on record")


def base_identity(run) -> dict[str, Any]:
    """The base checkpoint an add-on is trained against: step, file and sha256 (from its sidecar)."""
    path = ckpt.checkpoint_path(run.path, run.step)
    sidecar = ckpt.read_json(path.with_suffix(".json"), "checkpoint sidecar")
    return {"step": run.step, "checkpoint": path.name, "sha256": sidecar.get("sha256")}


def build_addon(name: str, config: AddonConfig, run) -> Addon:
    from qgf.addons import addon_class

    cls = addon_class(name)
    if run.config.goal_conditioned:
        raise QGFError(
            f"add-on {name!r} trains on single-task chunk batches; goal-conditioned runs have no add-ons yet"
        )
    if run.agent.behavior_velocity_fn is None:
        raise QGFError(
            f"add-on {name!r} is trained on a run's behaviour-cloning flow, and a {run.config.agent!r} run "
            "has none; train a qgf run (or another agent with a BC flow) first"
        )
    return cls(config=config, run_config=run.agent.config, action_dim=run.agent.action_dim)


@dataclasses.dataclass
class LoadedAddon:
    """A trained add-on of a loaded run: the method, its state and its addon.json record."""

    addon: Addon
    state: AddonState
    record: dict[str, Any]
    path: Path

    def extras(self, base, state: AddonState | None = None) -> dict[str, Callable]:
        """The named callables for `qgf.guidance` (``extras=``), with `state` (default its own)."""
        state = self.state if state is None else state
        return self.addon.extras(state.params, state.constants, base)


def _missing_message(run, name: str, why: str) -> str:
    return f"run {run.path} {why}; train it with `qgf addon train {run.path} {name}`"


def load_addon(run, name: str) -> LoadedAddon:
    """The run's trained add-on `name` at its latest checkpoint; a one-line QGFError naming the
    command that trains it when it is missing, unfinished or trained against another checkpoint."""
    if run.config.goal_conditioned:  # `qgf addon train` refuses such runs: do not point to it
        from qgf.guidance.estimators import estimators_of_addon

        raise QGFError(
            f"run {run.path} is goal-conditioned, and add-on {name!r} (needed by "
            f"{', '.join(estimators_of_addon(name))}) trains on single-task runs only; evaluate it with a "
            "sampler that needs no add-on (none, qgf, qgf-jacobian, ...)"
        )
    directory = addon_dir(run.path, name)
    record = read_record(directory)
    if record is None:
        raise QGFError(_missing_message(run, name, f"has no {name!r} add-on"))
    latest = ckpt.latest_step(directory)
    if latest is None:
        raise QGFError(_missing_message(run, name, f"has an unfinished {name!r} add-on (no checkpoint yet)"))
    base = record.get("base", {})
    if base.get("step") != run.step:
        raise QGFError(
            f"add-on {name!r} of {run.path} was trained against the run's step {base.get('step')}, and step "
            f"{run.step} is loaded; use --step {base.get('step')}, or retrain it with "
            f"`qgf addon train {run.path} {name} --restart`"
        )
    if base.get("sha256") != base_identity(run)["sha256"]:
        raise QGFError(
            f"add-on {name!r} of {run.path} was trained against a different checkpoint at step {run.step} "
            f"(sha256 differs); retrain it with `qgf addon train {run.path} {name} --restart`"
        )
    addon = build_addon(name, AddonConfig.from_dict(record["config"]), run)
    template = jax.eval_shape(lambda: _template_from_record(addon, run.agent))
    state = ckpt.read_checkpoint(ckpt.checkpoint_path(directory, latest), template)
    return LoadedAddon(addon=addon, state=state, record=record, path=directory)


def _template_from_record(addon: Addon, base) -> AddonState:
    """An AddonState of the right structure without the dataset (shapes only)."""
    observations = jnp.zeros((INIT_BATCH_SIZE, base.obs_dim), jnp.float32)
    batch = {
        "observations": observations,
        "actions": jnp.zeros((INIT_BATCH_SIZE, addon.chunk_dim), jnp.float32),
        "valid": jnp.ones((INIT_BATCH_SIZE, addon.run_config.horizon), jnp.float32),
        "next_observations": observations,
        "rewards": jnp.zeros((INIT_BATCH_SIZE,), jnp.float32),
        "masks": jnp.ones((INIT_BATCH_SIZE,), jnp.float32),
    }
    params, constants = addon.init(base, jax.random.PRNGKey(0), batch)
    return AddonState(
        params=params,
        opt_state=_optimizer(addon).init(params),
        constants=constants,
        rng=jax.random.PRNGKey(0),
        step=jnp.zeros((), jnp.int32),
    )


def list_addons(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every add-on stored in a run directory: name, trained step, target steps, base checkpoint."""
    root = Path(run_dir) / ADDONS_DIR
    entries = []
    if not root.is_dir():
        return entries
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        record = read_record(directory)
        if record is None:
            continue
        entries.append(
            {
                "name": directory.name,
                "step": ckpt.latest_step(directory),
                "steps": record.get("config", {}).get("steps"),
                "base": record.get("base", {}),
                "summary": record.get("summary", ""),
                "path": str(directory),
            }
        )
    return entries


# --------------------------------------------------------------------------------------------------
# The training entry point


@dataclasses.dataclass
class AddonTrainResult:
    path: Path
    step: int
    resumed_from: int | None
    metrics: dict[str, float]


def _load_run_dataset(run, data_dir):
    from qgf.training.runs import dataset_identity, load_training_data

    recorded = run.meta.get("dataset") or {}
    name = run.meta.get("env") or recorded.get("name")
    if data_dir is None and recorded.get("path"):
        data_dir = str(Path(recorded["path"]).parent)
    dataset = load_training_data(run.config, name, data_dir)
    found = dataset_identity(dataset).get("fingerprint")
    if recorded.get("fingerprint") not in (None, found):
        raise QGFError(
            f"the dataset found for {run.path} differs from the one it was trained on (fingerprint); "
            "pass the original data directory (--data)"
        )
    return dataset


def _resolve_config(cls, name: str, run, record: dict | None, overrides: Mapping[str, Any]) -> AddonConfig:
    """The add-on's settings: a new one's from `overrides`, a stored one's with `overrides` applied
    (only the schedule may change, and only against the checkpoint it was trained on); unset
    widths become the run's own (`Addon.default_hidden_dims`)."""
    if record is not None:
        stored = AddonConfig.from_dict(record["config"])
        config = dataclasses.replace(stored, **overrides)
        changed = stored.identity_diff(config)
        if changed:
            raise QGFError(
                f"add-on {name!r} of {run.path} exists with other settings ({changed}); resume it with its "
                "own settings, or start over with --restart"
            )
        if record.get("base", {}).get("sha256") != base_identity(run)["sha256"]:
            raise QGFError(
                f"add-on {name!r} was trained against another checkpoint of {run.path}; "
                "start over with --restart"
            )
    else:
        config = AddonConfig.from_dict(overrides)
    if not config.hidden_dims:
        config = dataclasses.replace(config, hidden_dims=cls.default_hidden_dims(run.config))
    return config


def train_addon(
    run_dir: str | Path,
    name: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    step: int | None = None,
    dataset: Any = None,
    data_dir: str | Path | None = None,
    restart: bool = False,
    progress: bool = True,
    tensorboard: bool = False,
    wandb: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> AddonTrainResult:
    """Train (or resume) add-on `name` of the run in `run_dir` up to `config.steps` steps.

    The base run is loaded at `step` (default: the step an existing add-on was trained against,
    else the latest) and never written. `overrides` are AddonConfig fields; resuming allows only
    the schedule fields to change. `restart=True` deletes the add-on's directory first. Data:
    `dataset`, else the run's own dataset (from `data_dir` or the path recorded in the run).
    Logs, sinks (`tensorboard`, `wandb`) and `on_log(record)` are those of `qgf.training.train`.
    """
    from qgf.addons import addon_class
    from qgf.checkpoint import load_run
    from qgf.data.chunks import to_device

    check_sinks(tensorboard, wandb)
    cls = addon_class(name)  # unknown names fail before anything is loaded
    directory = addon_dir(run_dir, name)
    if restart and directory.exists():
        shutil.rmtree(directory)
    record = read_record(directory)
    if step is None and record is not None:
        step = record.get("base", {}).get("step")
    run = load_run(run_dir, step=step)
    config = _resolve_config(cls, name, run, record, dict(overrides or {}))
    addon = build_addon(name, config, run)

    if dataset is None:
        dataset = _load_run_dataset(run, data_dir)
    if int(dataset.observations.shape[1]) != run.agent.obs_dim:
        raise QGFError(
            f"the dataset's observations have {dataset.observations.shape[1]} dims, "
            f"the run's {run.agent.obs_dim}; pass the run's own dataset"
        )
    device_data = to_device(dataset)

    resumed_from = ckpt.latest_step(directory) if record is not None else None
    if resumed_from is not None:
        template = jax.eval_shape(lambda: _template_from_record(addon, run.agent))
        state = ckpt.read_checkpoint(ckpt.checkpoint_path(directory, resumed_from), template)
    else:
        state = init_state(addon, run.agent, device_data)
    record = {
        "format_version": FORMAT_VERSION,
        "addon": name,
        "summary": addon.summary,
        "samplers": list(addon.samplers),
        "config": config.to_dict(),
        "base": base_identity(run),
        "created": (record or {}).get("created")
        or datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }
    atomic_write_json(directory / RECORD_FILE, record)

    trainer = AddonTrainer(addon=addon, state=state, base=run.agent)
    wandb_run = None
    if wandb:
        wandb_run = WandbRun(
            name=f"{run.path.name}-{name}",
            id=WandbRun.stable_id(directory, record["created"]),
            config={**config.to_dict(), "addon": name, "base": record["base"]},
        )
    log = MetricLog(directory, int(trainer.step), tensorboard=tensorboard, wandb=wandb_run)
    trainer, current, records = run_schedule(
        config,
        trainer,
        device_data,
        [directory],
        [log],
        checkpoints=AddonTrainer.checkpoints,
        last_saved=resumed_from,
        progress=progress,
        description=f"addon {name}",
        postfix=("loss",),
        on_log=on_log,
    )
    return AddonTrainResult(path=directory, step=current, resumed_from=resumed_from, metrics=records[0])


def describe(entries: list[dict[str, Any]]) -> str:
    """A few lines for `qgf addon list`."""
    if not entries:
        return "no add-ons (train one with `qgf addon train RUN NAME`)"
    lines = []
    for entry in entries:
        trained = "not trained yet" if entry["step"] is None else f"{entry['step']}/{entry['steps']} steps"
        lines.append(
            f"{entry['name']:<10} {trained}, against base step {entry['base'].get('step')}"
            f"  {entry['summary']}"
        )
    return "\n".join(lines)


def dumps(entries: list[dict[str, Any]]) -> str:
    return json.dumps(entries, indent=2)
