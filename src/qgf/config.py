"""Typed training configuration and presets stored as data (`qgf/presets/*.json`).

`TrainConfig` holds every setting that shapes a training run; its field defaults are the paper's
values (QGF Appendix J, Table 1). A preset is a JSON object of field values (plus an optional
`"description"`); missing fields take the defaults. Overrides come either as Python values
(`load_preset("cpu", {"batch_size": 128})`) or as `key=value` strings from the command line
(`parse_overrides(["batch_size=128", "critic_hidden_dims=256,256"])`); both are type-checked and
unknown keys fail with the closest valid names.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
import warnings
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from qgf.errors import QGFError

# Fields that only schedule a run (how long, how often to log and save). Changing them between a
# run and its resumption does not change the parameters a step produces, so resuming allows it.
SCHEDULE_FIELDS = frozenset({"steps", "log_every", "ckpt_every", "keep_checkpoints"})
# Fields that never enter a gradient step: the schedule, the seed (the agent carries its RNG state)
# and how the dataset is read. `learner_config` resets them so that agents differing only in these
# share compiled code (the agent's config is static under jit).
RUN_ONLY_FIELDS = SCHEDULE_FIELDS | {"seed", "sparse_reward", "action_clip_eps"}


def _field(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. Defaults = QGF paper, Appendix J, Table 1.

    Frozen and hashable, so an agent can carry it as static (non-traced) data.
    """

    # --- networks
    actor_hidden_dims: tuple[int, ...] = _field(
        (1024, 1024, 1024, 1024), "hidden layer widths of the velocity field v(s, a_t, t)"
    )
    critic_hidden_dims: tuple[int, ...] = _field(
        (1024, 1024, 1024, 1024), "hidden layer widths of each Q head and of V"
    )
    layer_norm: bool = _field(True, "LayerNorm after every hidden Dense layer (before GELU)")
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

    # --- chunked IQL critic (QGF Eqs. 11, 12)
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

    # --- which method (qgf.agents) and which critic (qgf.critics)
    agent: str = _field("qgf", "training method: one of the registered agents (qgf.agents.AGENT_NAMES)")
    critic: str = _field(
        "iql",
        "critic: 'iql' (in-sample chunked IQL, QGF App. F), 'td' (TD backups on the agent's own policy "
        "samples with pessimistic ensemble target, QAM Eq. 26) or 'dqc' (goal-conditioned Decoupled "
        "Q-Chunking, QGF App. F Eqs. 13-16; needs goal_conditioned=true)",
        choices=("iql", "td", "dqc"),
    )
    critic_pessimism: float = _field(
        0.5, "rho of the td critic's target mean_K Qbar - rho * std_K Qbar (QAM Eq. 26)"
    )

    # --- goal-conditioned RL with the DQC critic (QGF §6.4, App. F, Table 4; docs/training.md)
    goal_conditioned: bool = _field(
        False,
        "train on hindsight goals (qgf.data.goals): every network sees [observation, goal], so the run's "
        "obs_dim is twice the env's; needs critic=dqc and a dataset name without a task (qgf train "
        "--goal-conditioned)",
    )
    dqc_horizon: int = _field(
        25, "dqc: chunk length h_c of the long critic Q_c (Eq. 13); `horizon` is h_a, the policy's and Q_a's"
    )
    distill_expectile: float = _field(
        0.8, "dqc: expectile kappa_d distilling Q_c into Q_a (Eq. 15); 0.5 = mean over completions"
    )
    value_goal_p_cur: float = _field(0.2, "goal_conditioned: P(value goal = the current state)")
    value_goal_p_traj: float = _field(
        0.5, "goal_conditioned: P(value goal = a future state of the same trajectory)"
    )
    value_goal_p_rand: float = _field(0.3, "goal_conditioned: P(value goal = a random dataset state)")
    value_goal_geometric: bool = _field(
        True, "goal_conditioned: future value goals at a Geometric(1 - discount) offset (else uniform)"
    )
    actor_goal_p_cur: float = _field(0.0, "goal_conditioned: P(actor goal = the current state)")
    actor_goal_p_traj: float = _field(
        1.0, "goal_conditioned: P(actor goal = a future state of the same trajectory)"
    )
    actor_goal_p_rand: float = _field(0.0, "goal_conditioned: P(actor goal = a random dataset state)")
    actor_goal_geometric: bool = _field(
        False, "goal_conditioned: future actor goals at a Geometric(1 - discount) offset (else uniform)"
    )

    # --- training-time policy extraction (QGF App. I; QAM App. C); each used only by its agent
    fql_alpha: float = _field(300.0, "fql: weight of the distillation term (Eq. 23's alpha)")
    edp_bc_weight: float = _field(30.0, "edp: weight w_BC of the flow-matching term against -Q")
    normalize_q_loss: bool = _field(
        True, "fql / edp: divide the -Q term by the batch's mean |Q| (held fixed), so alpha is scale-free"
    )
    dac_alpha: float = _field(
        100.0, "dac: behaviour weight; Eq. 22's 1/beta = 1/(2 alpha) (QAM Eq. 53/54's eta)"
    )
    qsm_inv_temperature: float = _field(0.1, "qsm-bc: tau_inv = 1/beta of Eq. 21")
    qsm_bc_weight: float = _field(10.0, "qsm-bc: weight eta (the paper's alpha) of the DDPM term; 0 is QSM")
    actor_grad_clip: float = _field(
        0.0, "element-wise clip of the policy network's gradient (0 = off; QAM uses 1 for QSM, DAC, QAM)"
    )
    qam_inv_temperature: float = _field(
        0.1, "qam family: inverse temperature tau of the adjoint boundary -tau grad Q (Alg. 1; QGF's tau_inv)"
    )
    qam_time_offset: float = _field(
        0.5,
        "qam family: Eq. 24's 1/u and sigma_u are evaluated at u + offset * h (offset in (0, 1)), since "
        "1/u diverges at u = 0; the last step is the deterministic Euler step",
    )
    qam_fql_alpha: float = _field(30.0, "qam-fql: weight alpha of the distillation term of Eq. 29")
    qam_edit_sigma: float = _field(0.1, "qam-edit: sigma_a, the L-infinity radius of the edit (Eq. 30)")
    qam_edit_target_entropy: float = _field(
        -0.5, "qam-edit: the edit policy's target entropy per chunk coordinate (SAC temperature tuning)"
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

    def __post_init__(self) -> None:
        hints = _type_hints()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            object.__setattr__(self, field.name, _coerce(field.name, value, hints[field.name]))
        _validate(self)

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
        """The `qgf.data.goals.GoalSampling` of the critics' (value) goals."""
        from qgf.data.goals import GoalSampling

        return GoalSampling(
            self.value_goal_p_cur, self.value_goal_p_traj, self.value_goal_p_rand, self.value_goal_geometric
        )

    @property
    def actor_goal_sampling(self):
        """The `qgf.data.goals.GoalSampling` of the policy's (actor) goals."""
        from qgf.data.goals import GoalSampling

        return GoalSampling(
            self.actor_goal_p_cur, self.actor_goal_p_traj, self.actor_goal_p_rand, self.actor_goal_geometric
        )

    def learner_config(self) -> TrainConfig:
        """This config with RUN_ONLY_FIELDS at their defaults: what an agent keeps."""
        defaults = {
            field.name: field.default for field in dataclasses.fields(self) if field.name in RUN_ONLY_FIELDS
        }
        return dataclasses.replace(self, **defaults)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a (possibly partial) dict; unknown keys are an error with close matches."""
        _check_keys(values.keys())
        return cls(**dict(values))

    def replace(self, **changes: Any) -> TrainConfig:
        _check_keys(changes.keys())
        return dataclasses.replace(self, **changes)

    def identity_diff(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields (other than scheduling ones) that differ: {name: (self value, other value)}."""
        return {
            name: (getattr(self, name), getattr(other, name))
            for name in field_names()
            if name not in SCHEDULE_FIELDS and getattr(self, name) != getattr(other, name)
        }


def field_names() -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(TrainConfig))


def field_help() -> dict[str, str]:
    """{field: 'help (type, default)'}, used by `qgf train --help` and the docs."""
    hints = _type_hints()
    out = {}
    for field in dataclasses.fields(TrainConfig):
        kind = _type_name(hints[field.name])
        choices = field.metadata.get("choices")
        if choices:
            kind = "|".join(choices)
        out[field.name] = f"{field.metadata['help']} ({kind}; default {_format_value(field.default)})"
    return out


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
        raise QGFError(f"unknown preset {name!r}{_suggest(name, names)}; available: {', '.join(names)}")
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
        if _coerce("goal_conditioned", goal_conditioned, bool):
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
    hints = _type_hints()
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise QGFError(f"override {item!r} is not of the form key=value")
        _check_keys([key])
        parsed[key] = _coerce(key, raw.strip(), hints[key])
    return parsed


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


def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _check_keys(keys: Iterable[str], source: str = "config") -> None:
    names = field_names()
    for key in keys:
        if key not in names:
            raise QGFError(
                f"unknown {source} key {key!r}{_suggest(key, names)}; valid keys: {', '.join(names)}"
            )


def _suggest(word: str, options: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)" if matches else ""


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "comma-separated ints"
    return getattr(hint, "__name__", str(hint))


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Return `value` as the field's type; strings are parsed, other types are checked strictly."""
    bad = QGFError(
        f"bad value {value!r} for {name}: expected {_type_name(hint)}"
        + (f" (e.g. {name}=256,256,256)" if typing.get_origin(hint) is tuple else "")
    )
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            parts = [p for p in text.replace(" ", ",").split(",") if p]
            try:
                value = [int(p) for p in parts]
            except ValueError:
                raise bad from None
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise bad
        return tuple(value)
    if hint is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise bad
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))  # accepts 5e5 and 500_000
            except ValueError:
                raise bad from None
            if not number.is_integer():
                raise bad
            return int(number)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config field type {hint!r} for {name}")


def _validate(config: TrainConfig) -> None:
    def require(condition: bool, message: str) -> None:
        if not condition:
            raise QGFError(message)

    for field in dataclasses.fields(config):
        choices = field.metadata.get("choices")
        value = getattr(config, field.name)
        if choices and value not in choices:
            raise QGFError(
                f"bad value {value!r} for {field.name}{_suggest(value, choices)}; "
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
    from qgf.agents import AGENT_NAMES

    require(
        config.agent in AGENT_NAMES,
        f"unknown agent {config.agent!r}{_suggest(config.agent, AGENT_NAMES)}; "
        f"choose one of {', '.join(AGENT_NAMES)}",
    )
    require(config.critic_pessimism >= 0.0, f"critic_pessimism must be >= 0, got {config.critic_pessimism}")
    _validate_goal_settings(config)
    for name in ("fql_alpha", "edp_bc_weight", "dac_alpha", "qsm_inv_temperature", "qsm_bc_weight"):
        require(getattr(config, name) >= 0.0, f"{name} must be >= 0, got {getattr(config, name)}")
    require(config.dac_alpha > 0.0, f"dac_alpha must be > 0, got {config.dac_alpha}")
    require(config.actor_grad_clip >= 0.0, f"actor_grad_clip must be >= 0, got {config.actor_grad_clip}")
    for name in ("qam_inv_temperature", "qam_fql_alpha", "qam_edit_sigma"):
        require(getattr(config, name) >= 0.0, f"{name} must be >= 0, got {getattr(config, name)}")
    require(
        0.0 < config.qam_time_offset < 1.0,
        f"qam_time_offset must be in (0, 1) (a fraction of one flow step), got {config.qam_time_offset}",
    )
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


_GOAL_SUM_TOLERANCE = 1e-6


def _validate_goal_settings(config: TrainConfig) -> None:
    """Goal-conditioned training and the DQC critic go together; goal probabilities are a mixture."""
    if config.critic == "dqc" and not config.goal_conditioned:
        raise QGFError(
            "critic=dqc is the goal-conditioned critic: set goal_conditioned=true "
            "(qgf train --goal-conditioned) or use critic=iql or td"
        )
    if config.goal_conditioned and config.critic != "dqc":
        raise QGFError(
            f"goal_conditioned=true needs critic=dqc (critic={config.critic} is single-task only); "
            "drop the critic override or set critic=dqc"
        )
    if config.dqc_horizon < 1:
        raise QGFError(f"dqc_horizon must be >= 1, got {config.dqc_horizon}")
    if config.critic == "dqc" and config.dqc_horizon < config.horizon:
        raise QGFError(
            f"critic=dqc needs dqc_horizon (h_c) >= horizon (h_a), got dqc_horizon={config.dqc_horizon} "
            f"< horizon={config.horizon}"
        )
    if not 0.0 < config.distill_expectile < 1.0:
        raise QGFError(f"distill_expectile must be in (0, 1), got {config.distill_expectile}")
    for who in ("value_goal", "actor_goal"):
        names = [f"{who}_p_{kind}" for kind in ("cur", "traj", "rand")]
        values = [getattr(config, name) for name in names]
        for name, value in zip(names, values, strict=True):
            if not 0.0 <= value <= 1.0:
                raise QGFError(f"{name} must be in [0, 1], got {value}")
        if abs(sum(values) - 1.0) > _GOAL_SUM_TOLERANCE:
            raise QGFError(
                f"{' + '.join(names)} must sum to 1, got "
                f"{' + '.join(f'{value:g}' for value in values)} = {sum(values):g}"
            )


# --------------------------------------------------------------------------- any settings dataclass
# The rules above, for other frozen dataclasses of settings (e.g. `qgf.addons.base.AddonConfig`).


def check_setting_keys(settings_class: type, keys: Iterable[str], what: str = "setting") -> None:
    """A one-line QGFError, naming the closest fields, for a key that is no field of `settings_class`."""
    from qgf.registry import suggest

    names = [field.name for field in dataclasses.fields(settings_class)]
    for key in keys:
        if key not in names:
            raise QGFError(f"unknown {what} {key!r}{suggest(key, names)}; valid: {', '.join(names)}")


def parse_settings(settings_class: type, items: Iterable[str], what: str = "setting") -> dict[str, Any]:
    """`key=value` strings -> {field: typed value} for any settings dataclass, parsed as
    `parse_overrides` parses TrainConfig's (ints accept 5e5 and 500_000, bools true/false/1/0,
    tuples comma-separated ints); unknown keys fail with the closest field names."""
    hints = typing.get_type_hints(settings_class)
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise QGFError(f"{what} {item!r} is not of the form key=value")
        check_setting_keys(settings_class, [key], what)
        parsed[key] = _coerce(key, raw.strip(), hints[key])
    return parsed


def coerce_settings(settings: Any) -> None:
    """Give every field of a (frozen) settings dataclass its declared type, in its `__post_init__`:
    strings are parsed, other values checked strictly (as TrainConfig's fields are)."""
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        value = _coerce(field.name, getattr(settings, field.name), hints[field.name])
        object.__setattr__(settings, field.name, value)
