"""Typed training configuration: shared fields plus config sections, and presets stored as data
(`qgf/presets/*.json`).

`TrainConfig` holds every setting that shapes a training run; defaults are the paper's values (QGF
Appendix J, Table 1). Its fields are the settings every run has (networks, flow, the chunked
critic's common part, which agent / critic, optimisation, data, bookkeeping); the settings that
only one component reads live in *config sections* declared next to that component's code
(`qgf.sections`): each agent's in its module of `qgf.agents`, the td and dqc critics' in
their modules in `qgf.critics`, goal-conditioned training's in `qgf.data.goal_settings`.

- Keys stay flat everywhere: `TrainConfig(agent="fql", fql_alpha=100.0)`, `config.fql_alpha`,
  `qgf train fql_alpha=100`, preset files, sweep specs and config.json.
- A config holds only the sections that apply to it (`config.sections`), so its equality and hash
  (a static jit argument), `to_dict()` (config.json), the resume check and the sweep's run names
  cover the shared fields and those sections only: a new agent's section renames no other run,
  and a qgf run resumes when an FQL-only value changed.
- A key of a section that does not apply (fql_alpha on a qgf run) is accepted and ignored: its
  value is type- and bounds-checked (a bad value is still an error), then dropped, so it changes
  neither the config nor its identity and sweep grids may set it for every agent. Reading it
  (`config.fql_alpha` on a qgf run) raises AttributeError naming the section and whom it applies to.

A preset is a JSON object of flat key values (plus an optional `"description"`); missing keys take
the defaults. Overrides come either as Python values (`load_preset("cpu", {"batch_size": 128})`)
or as `key=value` strings from the command line (`parse_overrides(["batch_size=128"])`); both are
type-checked and unknown keys fail with the closest valid names.

Imports `qgf.errors`, `qgf.registry`, `qgf.sections` and `qgf.agents` (its light registry only).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
import warnings
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from qgf.critics import CRITICS
from qgf.errors import QGFError
from qgf.precision import PRECISIONS
from qgf.registry import suggest
from qgf.sections import Section, coerce, format_value, module_sections, parse_assignments, type_name

# Fields that only schedule a run (how long, how often to log and save). Changing them between a
# run and its resumption does not change the parameters a step produces, so resuming allows it.
SCHEDULE_FIELDS = frozenset({"steps", "log_every", "ckpt_every", "keep_checkpoints"})
# Fields that never enter a gradient step: the schedule, the seed (the agent carries its RNG state)
# and how the dataset is read. `learner_config` resets them so that agents differing only in these
# share compiled code (the agent's config is static under jit).
RUN_ONLY_FIELDS = SCHEDULE_FIELDS | {"seed", "sparse_reward", "action_clip_eps"}
# Modules outside qgf.agents that declare config sections (the agents' own are found by qgf.agents).
SECTION_MODULES = ("qgf.critics.td", "qgf.critics.dqc", "qgf.data.goal_settings")


def _field(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class TrainConfig:
    """Every setting of a training run. Defaults = QGF paper, Appendix J, Table 1.

    Build with flat keys, `TrainConfig(agent="fql", fql_alpha=100.0)` (unknown keys fail with close
    matches). Frozen and hashable, so an agent can carry it as static (non-traced) data; equality
    covers the fields below and `sections`, the values of the config sections that apply.
    """

    # --- networks
    actor_hidden_dims: tuple[int, ...] = _field(
        (1024, 1024, 1024, 1024), "hidden layer widths of the velocity field v(s, a_t, t)"
    )
    critic_hidden_dims: tuple[int, ...] = _field(
        (1024, 1024, 1024, 1024), "hidden layer widths of each Q head and of V"
    )
    layer_norm: bool = _field(True, "LayerNorm after every hidden Dense layer (before GELU)")
    actor_layer_norm: bool = _field(
        True, "LayerNorm in the policy networks too (with layer_norm); the authors' FQL turns it off"
    )
    network_style: str = _field(
        "qgf",
        "MLPs: 'qgf' (LayerNorm on every hidden layer, lecun-normal init) or 'authors' (the QGF authors' "
        "networks: fan-avg uniform init, policies without LayerNorm on the last hidden layer; "
        "docs/fidelity.md)",
        choices=("qgf", "authors"),
    )
    time_embedding: str = _field(
        "sinusoidal",
        "how the velocity field sees t: 'sinusoidal' features or the 'raw' scalar",
        choices=("sinusoidal", "raw"),
    )
    time_embedding_dim: int = _field(16, "number of sinusoidal time features (even)")

    # --- flow policy (QGF Eq. 2)
    flow_steps: int = _field(10, "Euler steps T used by default at inference (and by 'grid' time sampling)")
    time_sampling: str = _field(
        "uniform",
        "BC training times: 'uniform' t ~ U[0,1] (paper) or 'grid' t in {0, 1/T, ..., 1} (authors' code)",
        choices=("uniform", "grid"),
    )
    bc_mask_invalid: bool = _field(
        True, "drop the chunk steps that lie past a trajectory end from the BC loss"
    )

    # --- chunked critic (QGF Eqs. 11, 12); the td and dqc critics' own settings are sections
    horizon: int = _field(5, "action chunk length h")
    discount: float = _field(0.999, "discount gamma per environment step")
    expectile: float = _field(0.9, "IQL expectile tau of the value loss")
    num_critics: int = _field(2, "number K of Q heads in the ensemble")
    critic_aggregation: str = _field("min", "how the K heads combine into one Q", choices=("min", "mean"))
    target_update_rate: float = _field(0.005, "EMA rate of the target critic (1 = copy)")
    guidance_critic: str = _field(
        "target",
        "critic used by q_fn / sample_actions: the EMA 'target' critic (authors' code) or the 'online' one",
        choices=("target", "online"),
    )
    matmul_precision: str = _field(
        "default",
        "float32 matmul precision on GPUs/TPUs: 'default' (JAX's: TF32 on recent NVIDIA GPUs, fastest), "
        "'high' or 'highest' (full float32); CPUs compute in float32 whatever it says (qgf.precision)",
        choices=PRECISIONS,
    )

    # --- which method (qgf.agents), which critic (qgf.critics), goal-conditioned or not
    agent: str = _field("qgf", "training method: one of the registered agents (qgf.agents.AGENT_NAMES)")
    critic: str = _field(
        "iql",
        "critic: 'iql' (in-sample chunked IQL, QGF App. F), 'td' (TD backups on the agent's own policy "
        "samples with pessimistic ensemble target, QAM Eq. 26) or 'dqc' (goal-conditioned Decoupled "
        "Q-Chunking, QGF App. F Eqs. 13-16; needs goal_conditioned=true)",
        choices=CRITICS.names,
    )
    goal_conditioned: bool = _field(
        False,
        "train on hindsight goals (qgf.data.goals): every network sees [observation, goal], so the run's "
        "obs_dim is twice the env's; needs critic=dqc and a dataset name without a task (qgf train "
        "--goal-conditioned)",
    )

    # --- optimisation
    learning_rate: float = _field(3e-4, "Adam learning rate of all three networks")
    batch_size: int = _field(1024, "chunks per gradient step")
    steps: int = _field(500_000, "total gradient steps")
    seed: int = _field(0, "seed of parameters, batches and flow noise")

    # --- data
    sparse_reward: bool = _field(False, "use sparse (success-only) rewards instead of dense ones")
    action_clip_eps: float = _field(1e-5, "dataset actions are clipped to [-1 + eps, 1 - eps]")

    # --- run bookkeeping
    log_every: int = _field(1000, "steps per compiled call and per log line")
    ckpt_every: int = _field(50_000, "steps between checkpoints")
    keep_checkpoints: int = _field(3, "number of most recent checkpoints kept on disk")

    # --- the values of the config sections that apply to this run (qgf.sections), in schema order
    sections: tuple[Any, ...] = dataclasses.field(default=(), metadata={"help": "internal"})

    def __init__(self, **values: Any) -> None:
        _build(self, values)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not fields: the keys of the sections.
        settings = self.__dict__.get("_settings")
        if settings is not None and name in settings:
            return settings[name]
        section = None if name.startswith("_") else _schema().owner.get(name)
        if section is not None:
            raise AttributeError(
                f"config key {name!r} belongs to section {section.name!r}, which applies to "
                f"{section.selector} only; this run has agent={self.agent}, critic={self.critic}, "
                f"goal_conditioned={str(self.goal_conditioned).lower()}"
            )
        raise AttributeError(f"'TrainConfig' object has no attribute {name!r}")

    def __repr__(self) -> str:
        values = {**{name: getattr(self, name) for name in _shared_names()}, **self.__dict__["_settings"]}
        return f"TrainConfig({', '.join(f'{key}={value!r}' for key, value in values.items())})"

    def __reduce__(self):
        return _rebuild, (self.to_dict(),)

    def section(self, name: str) -> Any:
        """The values of section `name` (a frozen dataclass); QGFError if it does not apply."""
        for section, values in zip(self.applied_sections, self.sections, strict=True):
            if section.name == name:
                return values
        known = [section.name for section in _schema().sections]
        if name not in known:
            raise QGFError(
                f"unknown config section {name!r}{suggest(name, known)}; choose one of {', '.join(known)}"
            )
        raise QGFError(
            f"config section {name!r} does not apply to this run (agent={self.agent}, critic={self.critic})"
        )

    @property
    def applied_sections(self) -> tuple[Section, ...]:
        """The declarations (`qgf.sections.Section`) of the sections this config holds, in order."""
        return tuple(section for section in _schema().sections if section.applies_to(self))

    @property
    def chunk_discount(self) -> float:
        """gamma^h: the bootstrap discount of one chunk."""
        return self.discount**self.horizon

    def network_obs_dim(self, env_obs_dim: int) -> int:
        """The networks' input size for an env observation of `env_obs_dim`: [observation, goal] (goals
        are full observations) in a goal-conditioned run, the observation otherwise."""
        return 2 * int(env_obs_dim) if self.goal_conditioned else int(env_obs_dim)

    @property
    def value_goal_sampling(self):
        """The `qgf.data.goals.GoalSampling` of the critics' (value) goals (goal-conditioned runs)."""
        from qgf.data.goals import GoalSampling

        goals = self.section("goals")
        return GoalSampling(
            goals.value_goal_p_cur,
            goals.value_goal_p_traj,
            goals.value_goal_p_rand,
            goals.value_goal_geometric,
        )

    @property
    def actor_goal_sampling(self):
        """The `qgf.data.goals.GoalSampling` of the policy's (actor) goals (goal-conditioned runs)."""
        from qgf.data.goals import GoalSampling

        goals = self.section("goals")
        return GoalSampling(
            goals.actor_goal_p_cur,
            goals.actor_goal_p_traj,
            goals.actor_goal_p_rand,
            goals.actor_goal_geometric,
        )

    def learner_config(self) -> TrainConfig:
        """This config with RUN_ONLY_FIELDS at their defaults: what an agent keeps."""
        fields = dataclasses.fields(self)
        return self.replace(
            **{field.name: field.default for field in fields if field.name in RUN_ONLY_FIELDS}
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready flat dict of the shared fields and the applying sections' keys (tuples become
        lists): what config.json holds."""
        values = {**{name: getattr(self, name) for name in _shared_names()}, **self.__dict__["_settings"]}
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a (possibly partial) flat dict, e.g. a config.json of any qgf version (keys of
        sections that do not apply are ignored); unknown keys are an error with close matches."""
        _check_keys(values.keys())
        return cls(**dict(values))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` (flat keys). Changing agent, critic or goal_conditioned brings the
        new sections at their defaults unless `changes` sets their keys too."""
        _check_keys(changes.keys())
        return TrainConfig(**{**self.to_dict(), **changes})

    def identity_diff(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Keys (other than scheduling ones) that differ: {name: (self value, other value)}. Only the
        shared fields and the sections that apply count (a section's keys appear only when both
        configs hold it; otherwise the agent, critic or goal_conditioned differ and are listed)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {
            name: (getattr(self, name), getattr(other, name))
            for name in mine
            if name in theirs and name not in SCHEDULE_FIELDS and mine[name] != theirs[name]
        }


def _rebuild(values: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**values)


def field_names() -> tuple[str, ...]:
    """Every flat key: the shared fields, then every section's keys (applying or not)."""
    return (*_shared_names(), *_schema().owner)


def field_help() -> dict[str, str]:
    """{key: 'help (type, default)'} for every key, used by the docs; `help_sections` groups them."""
    return {key: text for _, entries in help_sections() for key, text in entries.items()}


def help_sections() -> list[tuple[str, dict[str, str]]]:
    """[(heading, {key: 'help (type; default X)'})]: the shared fields, then one entry per section
    with what it is and which runs it applies to (`qgf train --help`)."""
    hints = _type_hints()
    shared = {}
    for field in _shared_fields():
        choices = field.metadata.get("choices")
        kind = "|".join(choices) if choices else type_name(hints[field.name])
        shared[field.name] = f"{field.metadata['help']} ({kind}; default {format_value(field.default)})"
    groups = [("shared by every run", shared)]
    for section in _schema().sections:
        heading = f"{section.name}: {section.title} [{section.selector}]"
        groups.append((heading, {setting.name: setting.describe() for setting in section.settings}))
    return groups


# Folders of presets/ whose files are scale presets too, named "<folder>/<file stem>" (the goal-
# conditioned presets of QGF Table 4: `--preset goal/puzzle-3x3-cpu`). presets/agents and
# presets/critics hold layers, not presets.
PRESET_FOLDERS = ("goal",)
# Keys of a preset file that are not TrainConfig fields: its description, and (goal presets) facts
# about the benchmark it reproduces (dataset, evaluation env and goals, the paper's guidance weights).
PRESET_INFO_KEYS = ("description", "benchmark")


def available_presets() -> list[str]:
    def stems(folder) -> list[str]:
        return sorted(f.name[: -len(".json")] for f in folder.iterdir() if f.name.endswith(".json"))

    names = stems(_preset_dir())
    for folder in PRESET_FOLDERS:
        names += [f"{folder}/{stem}" for stem in stems(_preset_dir().joinpath(folder))]
    return names


def _preset_document(name: str) -> dict[str, Any]:
    names = available_presets()
    if name not in names:
        raise QGFError(f"unknown preset {name!r}{suggest(name, names)}; available: {', '.join(names)}")
    text = _preset_dir().joinpath(*f"{name}.json".split("/")).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise QGFError(f"preset {name!r} is not valid JSON: {exc}") from exc


def preset_values(name: str) -> dict[str, Any]:
    """The raw field values stored in preset `name` (without its description and benchmark facts)."""
    values = _preset_document(name)
    for key in PRESET_INFO_KEYS:
        values.pop(key, None)
    return values


def preset_benchmark(name: str) -> dict[str, Any]:
    """The benchmark facts of preset `name` (goal presets: domain, dataset, evaluation env and goals,
    episodes per goal, the paper's guidance weights); {} for presets without them."""
    return dict(_preset_document(name).get("benchmark", {}))


def _layer_file(*parts: str) -> dict[str, Any] | None:
    """A preset layer (presets/agents/NAME.json, presets/critics/NAME.json) or None if absent."""
    path = _preset_dir().joinpath(*parts)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise QGFError(f"preset file {'/'.join(parts)} is not valid JSON: {exc}") from exc


def preset_layers(name: str, overrides: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The (source, values) layers that make preset `name` for the agent and critic that the
    overrides (or the preset) choose, lowest priority first: the scale preset, the critic's
    defaults (`presets/critics/<critic>.json`), the agent's defaults and its values for this scale
    (`presets/agents/<agent>.json`: "defaults", "presets": {scale: ...}), then the overrides.
    When no layer names a critic, it is 'iql', or 'dqc' when goal_conditioned is true."""
    base = preset_values(name)
    agent = overrides.get("agent", base.get("agent", "qgf"))
    agent_file = _layer_file("agents", f"{agent}.json") or {}
    agent_layers = [agent_file.get("defaults", {}), agent_file.get("presets", {}).get(name, {})]
    critic = overrides.get("critic")
    goal_conditioned = overrides.get("goal_conditioned")
    for layer in [base, *agent_layers]:
        critic = critic or layer.get("critic")
        if goal_conditioned is None:
            goal_conditioned = layer.get("goal_conditioned")
    critic_defaults: dict[str, Any] = {}
    if critic is None and goal_conditioned is not None:
        # goal_conditioned=true without a named critic selects the goal-conditioned one
        if coerce("goal_conditioned", goal_conditioned, bool):
            critic, critic_defaults = "dqc", {"critic": "dqc"}
    critic = critic or "iql"
    critic_file = _layer_file("critics", f"{critic}.json") or {}
    critic_defaults.update(critic_file.get("defaults", {}))
    layers = [
        (f"preset {name!r}", base),
        (f"critic {critic!r} defaults", critic_defaults),
        (f"agent {agent!r} defaults", agent_layers[0]),
        (f"agent {agent!r} preset {name!r}", agent_layers[1]),
        ("overrides", dict(overrides)),
    ]
    return layers


def load_preset(name: str, overrides: Mapping[str, Any] | None = None, *, warn: bool = True) -> TrainConfig:
    """Preset `name` with `overrides` applied (values may be typed or `key=value`-style strings).

    The agent and critic named in the overrides (default: qgf with the iql critic) bring their
    own preset layers, so `load_preset("cpu", {"agent": "fql"})` is FQL at CPU scale with its
    documented alpha. Raises QGFError for an unknown preset, unknown keys or bad values; warns
    (UserWarning) about known-bad combinations unless `warn=False`.
    """
    overrides = dict(overrides or {})
    _check_keys(overrides.keys())
    values: dict[str, Any] = {}
    for source, layer in preset_layers(name, overrides):
        _check_keys(layer.keys(), source=source)
        values.update(layer)
    config = TrainConfig(**values)
    if warn:
        for message in known_bad_combinations(config):
            warnings.warn(message, UserWarning, stacklevel=2)
    return config


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse `key=value` strings into typed values; errors name the key and the expected type."""
    return parse_assignments(items, "override", lambda key: _check_keys([key]), _hint)


def known_bad_combinations(config: TrainConfig) -> list[str]:
    """Settings that are legal but known to hurt; each message says why and what to use."""
    messages = []
    if config.expectile <= 0.5:
        messages.append(
            f"expectile={config.expectile} <= 0.5: V then estimates the behaviour value or less, so the "
            "critic is no better than SARSA and guidance has nothing to improve on; the paper uses 0.9"
        )
    if config.time_sampling == "grid":
        messages.append(
            "time_sampling='grid' trains the velocity field only at t in "
            f"{{0, 1/{config.flow_steps}, ..., 1}}; inference must then use exactly "
            f"flow_steps={config.flow_steps} Euler steps"
        )
    if not config.layer_norm and config.discount >= 0.99:
        messages.append(
            f"layer_norm=False with discount={config.discount}: critics without LayerNorm diverge easily "
            "at long horizons; keep layer_norm=True"
        )
    if config.log_every < 10:
        messages.append(
            f"log_every={config.log_every}: each log line ends a compiled call and syncs with the host; "
            "values below ~100 slow training down"
        )
    return messages


# --------------------------------------------------------------------------- internals


def _preset_dir():
    # presets/ is package data of `qgf` (pyproject: package-data), not a package of its own
    return resources.files("qgf").joinpath("presets")


@functools.cache
def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


@functools.cache
def _shared_fields() -> tuple[dataclasses.Field, ...]:
    return tuple(field for field in dataclasses.fields(TrainConfig) if field.name != "sections")


def _shared_names() -> tuple[str, ...]:
    return tuple(field.name for field in _shared_fields())


def _hint(key: str) -> Any:
    """The type of flat key `key` (a shared field's annotation or a section setting's type)."""
    if key in _shared_names():
        return _type_hints()[key]
    return next(setting.hint for setting in _schema().owner[key].settings if setting.name == key)


@dataclasses.dataclass(frozen=True, eq=False)
class _Schema:
    sections: tuple[Section, ...]  # every declared section, in help and `config.sections` order
    owner: dict[str, Section]  # section key -> its section


def _schema() -> _Schema:
    from qgf.agents import discovery

    return _schema_of(discovery())


@functools.cache
def _fixed_sections() -> tuple[Section, ...]:
    return tuple(section for module in SECTION_MODULES for section in module_sections(module))


@functools.cache
def _schema_of(found) -> _Schema:
    sections = (*_fixed_sections(), *found.sections)
    owner: dict[str, Section] = {}
    for section in sections:
        for key in section.keys:
            if key in _shared_names() or key in owner:
                other = (
                    f"section {owner[key].name!r} ({owner[key].module})" if key in owner else "a shared field"
                )
                raise QGFError(
                    f"config key {key!r} of section {section.name!r} ({section.module}) is also {other}"
                )
            owner[key] = section
    return _Schema(sections, owner)


def _check_keys(keys: Iterable[str], source: str = "config") -> None:
    names = field_names()
    for key in keys:
        if key not in names and key != "sections":
            raise QGFError(
                f"unknown {source} key {key!r}{suggest(key, names)}; valid keys: {', '.join(names)}"
            )


def _build(config: TrainConfig, values: dict[str, Any]) -> None:
    """Fill `config` from flat `values`: shared fields, then the sections (see the module docstring)."""
    schema = _schema()
    flat: dict[str, Any] = {}
    for packed in values.pop("sections", None) or ():  # dataclasses.replace passes the current ones
        flat.update(dataclasses.asdict(packed))
    flat.update(values)
    _check_keys(flat.keys())
    hints = _type_hints()
    for field in _shared_fields():
        value = flat.get(field.name, field.default)
        object.__setattr__(config, field.name, coerce(field.name, value, hints[field.name]))
    _validate(config)
    applied = []
    for section in schema.sections:
        given = {key: flat[key] for key in section.keys if key in flat}
        applies = section.applies_to(config)
        if given or applies:
            built = section.build(given)  # checked even where it is then ignored
            if applies:
                applied.append((section, built))
    object.__setattr__(config, "sections", tuple(built for _, built in applied))
    settings = {key: getattr(built, key) for section, built in applied for key in section.keys}
    object.__setattr__(config, "_settings", settings)
    for section, built in applied:
        section.run_check(built, config)


def _validate(config: TrainConfig) -> None:
    """The shared fields' rules (each section checks its own values, `qgf.sections`)."""

    def require(condition: bool, message: str) -> None:
        if not condition:
            raise QGFError(message)

    for field in _shared_fields():
        choices = field.metadata.get("choices")
        value = getattr(config, field.name)
        if choices and value not in choices:
            raise QGFError(
                f"bad value {value!r} for {field.name}{suggest(value, choices)}; "
                f"choose one of {', '.join(choices)}"
            )
    for name in ("actor_hidden_dims", "critic_hidden_dims"):
        dims = getattr(config, name)
        require(len(dims) >= 1 and all(d > 0 for d in dims), f"{name} must be one or more positive widths")
    require(
        config.time_embedding_dim >= 2 and config.time_embedding_dim % 2 == 0,
        f"time_embedding_dim must be an even number >= 2, got {config.time_embedding_dim}",
    )
    require(config.flow_steps >= 1, f"flow_steps must be >= 1, got {config.flow_steps}")
    require(config.horizon >= 1, f"horizon must be >= 1, got {config.horizon}")
    require(0.0 < config.discount <= 1.0, f"discount must be in (0, 1], got {config.discount}")
    require(0.0 < config.expectile < 1.0, f"expectile must be in (0, 1), got {config.expectile}")
    require(config.num_critics >= 1, f"num_critics must be >= 1, got {config.num_critics}")
    require(
        0.0 < config.target_update_rate <= 1.0,
        f"target_update_rate must be in (0, 1], got {config.target_update_rate}",
    )
    from qgf.agents import discovery

    discovery().registry.check(config.agent)
    require(config.learning_rate > 0.0, f"learning_rate must be > 0, got {config.learning_rate}")
    require(config.batch_size >= 1, f"batch_size must be >= 1, got {config.batch_size}")
    require(config.steps >= 0, f"steps must be >= 0, got {config.steps}")
    require(config.seed >= 0, f"seed must be >= 0, got {config.seed}")
    require(
        0.0 <= config.action_clip_eps < 1.0,
        f"action_clip_eps must be in [0, 1), got {config.action_clip_eps}",
    )
    require(config.log_every >= 1, f"log_every must be >= 1, got {config.log_every}")
    require(config.ckpt_every >= 1, f"ckpt_every must be >= 1, got {config.ckpt_every}")
    require(config.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {config.keep_checkpoints}")
