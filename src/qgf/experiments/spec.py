"""Sweep specifications: a TOML file (read with the standard library's tomllib) validated into a
`SweepSpec`. The format is documented in docs/experiments.md; shipped examples live in
`qgf/experiments/specs/`.

    name = "cpu-study"
    preset = "cpu"                      # scale preset of every run (an agent may override it)
    seeds = [0, 1, 2]
    tasks = ["cube-single-play-singletask-task2-v0", "scene-play-singletask-task2-v0"]
    overrides = { steps = 20000 }       # config overrides of every run

    [data]                              # dir = existing datasets, or generation settings
    episodes = 200

    [[agents]]
    name = "qgf"                        # a registry name (qgf.agents.AGENT_NAMES)
    samplers = ["none", "qgf", "qgf-jacobian"]
    grid = { }                          # training-time hyperparameters: {field = [values]}

    [evaluation]
    episodes = 50
    weights = [0.0, 0.03, 0.1, 0.3]
    bfn = [1, 4]

    [protocol]                          # optional: the paper's protocol (QGF App. J)
    tune_tasks = [2, 4]

Every error is a `QGFError` naming the offending key and the fix.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from pathlib import Path
from typing import Any

from qgf.errors import QGFError
from qgf.experiments.online_sweep import online_labels, parse_online
from qgf.registry import suggest

TOP_KEYS = {"name", "description", "preset", "seeds", "tasks", "overrides", "data", "agents"}
TOP_KEYS |= {"evaluation", "protocol", "resources", "report", "addons", "online"}
DATA_KEYS = {"dir", "episodes", "val_episodes", "episode_length", "seed", "workers"}
AGENT_KEYS = {"name", "label", "preset", "overrides", "grid", "samplers", "bfn", "curve_samplers"}
EVALUATION_KEYS = {"episodes", "weights", "bfn", "seed", "workers", "num_envs", "groups", "max_episode_steps"}
PROTOCOL_KEYS = {"tune_tasks", "tune_seed", "final_seed", "tune_seeds", "tune_best_of_n"}
EVALUATION_KEYS |= {"eval_every", "curve_episodes", "curve_seed"}  # learning curves (qgf.evaluation.curve)
RESOURCE_KEYS = {"generate_cpus", "train_cpus", "train_gpus", "evaluate_cpus", "evaluate_gpus", "num_cpus"}
REPORT_KEYS = {"reference", "offline", "offline_tolerance", "offline_observations"}
# Plain BC is a method of its own in every table (QGF paper Fig. 5 "BC").
METHOD_RENAMES = {"none": "bc"}


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    name: str  # registry name
    label: str  # unique display name
    preset: str
    overrides: dict[str, Any]
    grid: dict[str, list[Any]]  # training-time hyperparameters
    samplers: tuple[Any, ...]  # names or SamplerSpec-field tables; empty = the run's default
    bfn: tuple[int, ...] | None  # per-agent best-of-N (default: the evaluation's)
    # What its learning curve evaluates (same syntax as samplers; default: its samplers)
    curve_samplers: tuple[Any, ...] = ()

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid ({} when there is none), in a fixed order."""
        keys = sorted(self.grid)
        return [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(self.grid[k] for k in keys))
        ]


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    name: str
    description: str
    preset: str
    seeds: tuple[int, ...]
    tasks: tuple[str, ...]
    overrides: dict[str, Any]
    data: dict[str, Any]
    agents: tuple[AgentSpec, ...]
    evaluation: dict[str, Any]
    protocol: dict[str, Any] | None
    resources: dict[str, Any]
    report: dict[str, Any]
    source: str = "<spec>"
    addons: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # add-on settings by name
    online: dict[str, Any] | None = None  # the [online] table (qgf.experiments.online_sweep)


SHIPPED_SPECS = Path(__file__).parent / "specs"


def shipped_spec_names() -> list[str]:
    return sorted(path.stem for path in SHIPPED_SPECS.glob("*.toml"))


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file, or a shipped spec by name (`cpu-study`, `paper-fig5`)."""
    path = Path(path)
    if not path.is_file() and path.suffix != ".toml" and (SHIPPED_SPECS / f"{path}.toml").is_file():
        path = SHIPPED_SPECS / f"{path}.toml"
    if not path.is_file():
        raise QGFError(
            f"sweep spec {path} does not exist; give a TOML file or a shipped spec name "
            f"({', '.join(shipped_spec_names())})"
        )
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise QGFError(f"{path}: not valid TOML ({exc})") from None
    return parse_spec(document, source=str(path))


def _fail(source: str, message: str) -> QGFError:
    return QGFError(f"{source}: {message}")


def _check_keys(source: str, where: str, table: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise _fail(source, f"{where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        said = ", ".join(f"{key!r}{suggest(key, sorted(allowed), n=1, cutoff=0.6)}" for key in unknown)
        raise _fail(source, f"unknown key(s) in {where}: {said}; allowed: {', '.join(sorted(allowed))}")
    return table


def _int_list(source: str, where: str, value: Any, minimum: int = 0) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(source, f"{where} must be a non-empty list of integers")
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or item < minimum:
            raise _fail(source, f"{where} must hold integers >= {minimum}, got {item!r}")
    if len(set(value)) != len(value):
        raise _fail(source, f"{where} has duplicates: {value}")
    return tuple(value)


def _positive_int(source: str, where: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _fail(source, f"{where} must be an integer >= 1, got {value!r}")
    return value


def parse_spec(document: dict[str, Any], source: str = "<spec>") -> SweepSpec:
    """Validate a parsed TOML document; a `QGFError` names the first problem and its fix."""
    from qgf.agents import AGENT_NAMES
    from qgf.config import available_presets
    from qgf.envs import parse_name

    _check_keys(source, "the spec", document, TOP_KEYS)
    for required in ("tasks", "agents", "seeds"):
        if required not in document:
            raise _fail(source, f"missing {required!r} (see docs/experiments.md)")
    presets = available_presets()
    preset = document.get("preset", "cpu")
    if preset not in presets:
        raise _fail(source, f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    seeds = _int_list(source, "seeds", document["seeds"])
    tasks = document["tasks"]
    if not isinstance(tasks, list) or not tasks:
        raise _fail(source, "tasks must be a non-empty list of single-task dataset names")
    for task in tasks:
        parsed = parse_name(task)
        if not (parsed.singletask and parsed.task is not None and parsed.dataset_type is not None):
            raise _fail(
                source,
                f"task {task!r} is not a single-task dataset name; write e.g. "
                f"{parsed.with_task(parsed.task or 1).singletask_dataset_name}",
            )
    if len(set(tasks)) != len(tasks):
        raise _fail(source, "tasks has duplicates")
    overrides = document.get("overrides", {})
    _check_config_keys(source, "overrides", overrides)

    data = _check_keys(source, "[data]", document.get("data", {}), DATA_KEYS)
    for key in ("episodes", "val_episodes", "episode_length", "workers"):
        if key in data:
            _positive_int(source, f"data.{key}", data[key])
    if "dir" in data and not isinstance(data["dir"], str):
        raise _fail(source, "data.dir must be a path string")
    generation = sorted(set(data) - {"dir"})
    if "dir" in data and generation:
        raise _fail(
            source,
            f"data.dir names existing datasets, so nothing is generated and "
            f"data.{', data.'.join(generation)} would be ignored; "
            "remove them, or remove data.dir to generate data with them",
        )

    raw_agents = document["agents"]
    if not isinstance(raw_agents, list) or not raw_agents:
        raise _fail(source, "agents must be a non-empty array of tables ([[agents]])")
    agents = []
    fine_tuned = online_labels(document) or set()  # these may train 0 offline steps
    for index, raw in enumerate(raw_agents):
        where = f"agents[{index}]"
        _check_keys(source, where, raw, AGENT_KEYS)
        name = raw.get("name")
        if name not in AGENT_NAMES:
            raise _fail(
                source,
                f"{where}.name {name!r} is not a registered agent; choose one of {', '.join(AGENT_NAMES)}",
            )
        agent_preset = raw.get("preset", preset)
        if agent_preset not in presets:
            raise _fail(
                source, f"{where}.preset {agent_preset!r} unknown; choose one of {', '.join(presets)}"
            )
        agent_overrides = raw.get("overrides", {})
        _check_config_keys(source, f"{where}.overrides", agent_overrides)
        grid = raw.get("grid", {})
        _check_config_keys(source, f"{where}.grid", grid)
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise _fail(source, f"{where}.grid.{key} must be a non-empty list of values")
        samplers = raw.get("samplers", [])
        if not isinstance(samplers, list):
            raise _fail(source, f"{where}.samplers must be a list of sampler names or tables")
        for sampler in samplers:
            _sampler_spec(source, where, sampler, steps=10, best_of_n=1)  # validates
        bfn = _int_list(source, f"{where}.bfn", raw["bfn"], 1) if "bfn" in raw else None
        curve_samplers = raw.get("curve_samplers", [])
        if not isinstance(curve_samplers, list):
            raise _fail(source, f"{where}.curve_samplers must be a list of sampler names or tables")
        for sampler in curve_samplers:
            curve_spec = _sampler_spec(source, where, sampler, steps=10, best_of_n=1)
            if curve_spec.needs:
                from qgf.guidance.estimators import ESTIMATOR_ADDONS

                raise _fail(
                    source,
                    f"{where}.curve_samplers: {curve_spec.label!r} needs the "
                    f"{ESTIMATOR_ADDONS[curve_spec.estimator]!r} add-on, "
                    "which is trained after the run; evaluate it along the curve afterwards "
                    "(qgf evaluate RUN --step S on the pinned checkpoints)",
                )
        agents.append(
            AgentSpec(
                name=name,
                label=str(raw.get("label", name)),
                preset=agent_preset,
                overrides=dict(agent_overrides),
                grid={key: list(values) for key, values in grid.items()},
                samplers=tuple(samplers),
                bfn=bfn,
                curve_samplers=tuple(curve_samplers),
            )
        )
        _check_configs(source, where, agents[-1], overrides, online_only_ok=agents[-1].label in fine_tuned)
    labels = [agent.label for agent in agents]
    if len(set(labels)) != len(labels):
        raise _fail(source, f"agent labels must be unique, got {labels}; give repeated agents a label")

    evaluation = _check_keys(source, "[evaluation]", document.get("evaluation", {}), EVALUATION_KEYS)
    # groups = 1: a sweep's jobs already fill every core, so ping-pong would only split each
    # policy call in two (docs/performance.md)
    evaluation = {"episodes": 50, "weights": [0.0], "bfn": [1], "seed": 1000, "groups": 1, **evaluation}
    _positive_int(source, "evaluation.episodes", evaluation["episodes"])
    _weight_list(source, "evaluation.weights", evaluation["weights"])
    evaluation["bfn"] = list(_int_list(source, "evaluation.bfn", evaluation["bfn"], 1))
    for key in ("num_envs", "groups"):
        if key in evaluation:
            _positive_int(source, f"evaluation.{key}", evaluation[key])

    protocol = None
    if "protocol" in document:
        protocol = _check_keys(source, "[protocol]", document["protocol"], PROTOCOL_KEYS)
        protocol = {
            "tune_tasks": [2, 4],
            "tune_seed": 1000,
            "final_seed": 2000,
            "tune_best_of_n": False,
            **protocol,
        }
        if not isinstance(protocol["tune_best_of_n"], bool):
            raise _fail(
                source, f"protocol.tune_best_of_n must be true or false, got {protocol['tune_best_of_n']!r}"
            )
        tune = _int_list(source, "protocol.tune_tasks", protocol["tune_tasks"], 1)
        task_ids = {parse_name(task).task for task in tasks}
        missing = sorted(set(tune) - task_ids)
        if missing:
            raise _fail(
                source, f"protocol.tune_tasks {missing} are not among the tasks' ids {sorted(task_ids)}"
            )
        if protocol["tune_seed"] == protocol["final_seed"]:
            raise _fail(source, "protocol.final_seed must differ from tune_seed (fresh evaluation seeds)")
        # Training seeds of the tuning stage (QGF App. J tunes, then "re-runs all seeds"): by default
        # the final seeds, whose tuning-task runs the final stage then reuses.
        tune_seeds = protocol.get("tune_seeds", list(seeds))
        protocol["tune_seeds"] = list(_int_list(source, "protocol.tune_seeds", tune_seeds))
        shared = sorted(set(protocol["tune_seeds"]) & set(seeds))
        if shared and set(protocol["tune_seeds"]) != set(seeds):
            raise _fail(
                source,
                f"protocol.tune_seeds shares {shared} with seeds but is not the same set; give fresh "
                "training seeds for tuning (seeds not reported) or leave tune_seeds out to reuse seeds",
            )

    _check_curve(source, evaluation, protocol)
    online = None
    if "online" in document:
        configs = [(a.label, a.name, run_config(a, overrides, p)) for a in agents for p in a.grid_points()]
        try:
            online = parse_online(document["online"], configs, evaluation, protocol)
        except QGFError as exc:
            raise _fail(source, str(exc)) from None
    resources = _check_keys(source, "[resources]", document.get("resources", {}), RESOURCE_KEYS)
    resources = {
        "generate_cpus": 1,
        "train_cpus": 1,
        "train_gpus": 0,
        "evaluate_cpus": 1,
        "evaluate_gpus": 0,
        **resources,
    }
    if "workers" not in evaluation:
        # One CPU per evaluation job: step the envs in the job's own process. Every core already
        # runs a job, so an env process adds only pipe traffic and a process per job (measured:
        # 2.6% of a CPU-study job, docs/performance.md). With more CPUs per job, one env process
        # per CPU.
        cpus = resources["evaluate_cpus"]
        evaluation["workers"] = int(cpus) if isinstance(cpus, int | float) and cpus >= 2 else 0
    workers = evaluation["workers"]
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise _fail(source, f"evaluation.workers must be an integer >= 0 (env processes), got {workers!r}")
    report = _check_keys(source, "[report]", document.get("report", {}), REPORT_KEYS)
    if "offline" in report and not isinstance(report["offline"], bool):
        raise _fail(source, f"report.offline must be true or false, got {report['offline']!r}")
    tolerance = report.get("offline_tolerance", 1.0)
    if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not tolerance > 0:
        raise _fail(source, f"report.offline_tolerance must be a number > 0, got {tolerance!r}")
    if "offline_observations" in report:
        _positive_int(source, "report.offline_observations", report["offline_observations"])
    spec = SweepSpec(
        name=str(document.get("name", Path(source).stem)),
        description=str(document.get("description", "")),
        preset=preset,
        seeds=seeds,
        tasks=tuple(tasks),
        overrides=dict(overrides),
        data=dict(data),
        agents=tuple(agents),
        evaluation=evaluation,
        protocol=protocol,
        resources=resources,
        report=dict(report),
        source=source,
        addons=_addon_settings(source, document.get("addons", {})),
        online=online,
    )
    check_plannable(spec)
    return spec


def _check_curve(source: str, evaluation: dict[str, Any], protocol: dict[str, Any] | None) -> None:
    """Learning-curve keys: eval_every (no curves without it), curve_episodes, curve_seed (never a
    seed a choice is made on); fills in the defaults when eval_every is set."""
    from qgf.evaluation.curve import DEFAULT_CURVE_EPISODES, DEFAULT_CURVE_SEED, check_curve_seed

    if "eval_every" not in evaluation:
        extra = sorted({"curve_episodes", "curve_seed"} & set(evaluation))
        if extra:
            raise _fail(
                source, f"evaluation.{extra[0]} needs evaluation.eval_every (the steps between points)"
            )
        return
    _positive_int(source, "evaluation.eval_every", evaluation["eval_every"])
    evaluation.setdefault("curve_episodes", DEFAULT_CURVE_EPISODES)
    _positive_int(source, "evaluation.curve_episodes", evaluation["curve_episodes"])
    evaluation.setdefault("curve_seed", DEFAULT_CURVE_SEED)
    taken = {evaluation["seed"]: "the sweep evaluation's seed"}
    if protocol is not None:
        taken |= {
            protocol["tune_seed"]: "the protocol's tune_seed",
            protocol["final_seed"]: "the protocol's final_seed",
        }
    try:
        check_curve_seed(evaluation["curve_seed"], taken)
    except QGFError as exc:
        raise _fail(source, f"evaluation.curve_seed: {exc}") from None


def _check_config_keys(source: str, where: str, table: Any) -> None:
    from qgf.config import field_names

    _check_keys(source, where, table, set(field_names()) - {"seed", "agent"})


def _check_configs(
    source: str, where: str, agent: AgentSpec, overrides: dict[str, Any], online_only_ok: bool = False
) -> None:
    """Build every grid point's config once, so a bad value fails now rather than in a job. A grid
    key of a config section that does not apply to the agent is refused: it is ignored (qgf.config),
    so every grid point would be the same run. `online_only_ok`: the agent is fine-tuned online,
    so 0 offline steps (online from a fresh agent) is allowed."""
    for point in agent.grid_points():
        try:
            config = run_config(agent, overrides, point)
        except QGFError as exc:
            raise _fail(source, f"{where} (grid point {point or 'default'}): {exc}") from None
        if config.steps < 1 and not (online_only_ok and config.steps == 0):
            raise _fail(
                source,
                f"{where} (grid point {point or 'default'}): steps = {config.steps} trains nothing, so every "
                "evaluation would fail with 'train it first'; set overrides.steps (or the grid's) to >= 1",
            )
        ignored = sorted(key for key in point if key not in config.to_dict())
        if ignored:
            raise _fail(
                source,
                f"{where}.grid: {', '.join(ignored)} does not apply to agent {agent.name} (a setting of "
                "another agent, critic or of goal-conditioned training; `qgf train --help` lists them by "
                "section), so every grid point would be the same run; remove it from this grid",
            )


def run_config(agent: AgentSpec, overrides: dict[str, Any], point: dict[str, Any]):
    """The TrainConfig of one agent at one grid point (seed 0; the sweep sets each seed)."""
    import warnings

    from qgf.config import load_preset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_preset(agent.preset, {**overrides, **agent.overrides, **point, "agent": agent.name})


# Keys of a sampler table that are not SamplerSpec fields: its own weight grid (instead of the
# evaluation's `weights`, e.g. CFGRL's tau_cfg range), and a list of best-of-N values to expand.
SAMPLER_TABLE_KEYS = {"weights"}


def _sampler_specs(source: str, where: str, sampler: Any, *, steps: int, best_of_n: int) -> list:
    """The SamplerSpecs of one `samplers` entry: a name, or a table of SamplerSpec fields whose
    `best_of_n` may be a list (one spec per N) and which may carry its own `weights`."""
    from qgf.guidance import SamplerSpec

    if isinstance(sampler, dict):
        fields = {key: value for key, value in sampler.items() if key not in SAMPLER_TABLE_KEYS}
        if "weights" in sampler:
            _weight_list(
                source, f"{where}.samplers[{sampler.get('estimator')!r}].weights", sampler["weights"]
            )
        counts = fields.pop("best_of_n", 1)
        if isinstance(counts, list):
            counts = _int_list(source, f"{where}.samplers[{sampler.get('estimator')!r}].best_of_n", counts, 1)
        else:
            counts = [counts]
        try:
            return [SamplerSpec(**{"steps": steps, **fields, "best_of_n": n}) for n in counts]
        except (QGFError, TypeError) as exc:
            raise _fail(source, f"{where}.samplers: {exc}") from None
    if isinstance(sampler, str):
        try:
            return [SamplerSpec(estimator=sampler, steps=steps, best_of_n=best_of_n)]
        except (QGFError, TypeError) as exc:
            raise _fail(source, f"{where}.samplers: {exc}") from None
    raise _fail(source, f"{where}.samplers entries must be names or tables, got {sampler!r}")


def _sampler_spec(source: str, where: str, sampler: Any, *, steps: int, best_of_n: int):
    """The first SamplerSpec of one `samplers` entry (validates the whole entry)."""
    return _sampler_specs(source, where, sampler, steps=steps, best_of_n=best_of_n)[0]


def _weight_list(source: str, where: str, weights: Any) -> list[float]:
    if not isinstance(weights, list) or not weights:
        raise _fail(source, f"{where} must be a non-empty list of numbers >= 0")
    for weight in weights:
        if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
            raise _fail(source, f"{where} must be numbers >= 0, got {weight!r}")
    return [float(weight) for weight in weights]


def agent_conditions(
    spec: SweepSpec, agent: AgentSpec, flow_steps: int, has_behavior_flow: bool, *, curve: bool = False
):
    """The (SamplerSpec, weight) conditions evaluated for one agent: samplers x best-of-N x weights
    (`qgf.evaluation.conditions.sweep_conditions`; BC and a policy are evaluated once, at weight 0).
    `curve`: those of its learning curve (`curve_samplers`, default its samplers)."""
    from qgf.evaluation.conditions import sweep_conditions

    samplers = list(agent.curve_samplers) if curve and agent.curve_samplers else list(agent.samplers)
    samplers = samplers or (["none", "qgf"] if has_behavior_flow else ["policy"])
    bfn = list(agent.bfn or spec.evaluation["bfn"])
    names = [s for s in samplers if isinstance(s, str)]
    conditions = []
    if names:
        conditions += sweep_conditions(names, spec.evaluation["weights"], bfn, flow_steps)
    for table in (s for s in samplers if not isinstance(s, str)):
        specs = _sampler_specs(spec.source, agent.label, table, steps=flow_steps, best_of_n=1)
        weights = table.get("weights", spec.evaluation["weights"])
        conditions += [c for c in sweep_conditions(specs, weights, [1], flow_steps) if c not in conditions]
    return conditions


def method_name(agent: AgentSpec, sampler_label: str, tune_best_of_n: bool = False) -> str:
    """A method's display name: the reference agent's samplers by their own names (BC, QGF, BFN-4),
    another agent's own policy by the agent's label, anything else as label/sampler. With
    `tune_best_of_n` (the protocol tunes N like a weight) best-of-N is one method: BFN, QGF+BFN."""
    if tune_best_of_n:
        sampler_label = re.sub(r"bfn-\d+$", "bfn", sampler_label)
    sampler_label = METHOD_RENAMES.get(sampler_label, sampler_label)
    if agent.name == "qgf" and agent.label == "qgf":
        return sampler_label
    if sampler_label == "policy":
        return agent.label
    return f"{agent.label}/{sampler_label}"


# ------------------------------------------------------------------ plan-time checks


def has_behavior_flow(agent_name: str) -> bool:
    """Whether the agent trains a behaviour-cloning flow (what every sampler but 'policy' guides)."""
    from qgf.agents import agent_class
    from qgf.agents.base import Agent

    return agent_class(agent_name).behavior_velocity_fn is not Agent.behavior_velocity_fn


def _addon_settings(source: str, table: Any) -> dict[str, dict[str, Any]]:
    """[addons]: settings of the add-ons that add-on samplers need, by add-on name
    (`robustq = { steps = 2000 }`; `qgf addon train --help` lists the settings)."""
    if not table:
        return {}
    from qgf.addons import ADDON_NAMES
    from qgf.addons.base import AddonConfig

    _check_keys(source, "[addons]", table, set(ADDON_NAMES))
    settings = {}
    for name, values in table.items():
        _check_keys(source, f"addons.{name}", values, set(AddonConfig.__dataclass_fields__))
        try:
            AddonConfig.from_dict(values)
        except QGFError as exc:
            raise _fail(source, f"addons.{name}: {exc}") from None
        settings[name] = dict(values)
    return settings


def check_plannable(spec: SweepSpec) -> None:
    """What would otherwise fail only after training: seeds, episode limits, resources, each
    sampler against its agent (a guided sampler needs a BC flow), the report's reference."""
    source = spec.source
    for key in ("seed",):
        value = spec.evaluation[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _fail(source, f"evaluation.{key} must be an integer >= 0 (a numpy seed), got {value!r}")
    if spec.protocol:
        for key in ("tune_seed", "final_seed"):
            value = spec.protocol[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _fail(source, f"protocol.{key} must be an integer >= 0 (a numpy seed), got {value!r}")
    if spec.evaluation.get("max_episode_steps") is not None:
        steps = spec.evaluation["max_episode_steps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise _fail(
                source,
                f"evaluation.max_episode_steps must be an integer >= 1, got {steps!r}; leave it out for the "
                "env's own limit",
            )
    for key, value in spec.resources.items():
        minimum = 1 if key == "num_cpus" else 0
        if not isinstance(value, int | float) or isinstance(value, bool) or value < minimum:
            raise _fail(
                source, f"resources.{key} must be a number >= {minimum}, got {value!r} (docs/experiments.md)"
            )
    methods = []
    for agent in spec.agents:
        flow = has_behavior_flow(agent.name)
        for sampler in agent.samplers + agent.curve_samplers:
            sampler_spec = _sampler_spec(source, agent.label, sampler, steps=10, best_of_n=1)
            if sampler_spec.estimator != "policy" and not flow:
                raise _fail(
                    source,
                    f"agent {agent.label!r}: sampler {sampler_spec.label!r} guides a behaviour-cloning flow, "
                    f"and agent {agent.name!r} trains none; use samplers = ['policy'] (its own policy) or an "
                    "agent with a BC flow (qgf)",
                )
        flow_steps = run_config(agent, spec.overrides, {}).flow_steps
        for condition in agent_conditions(spec, agent, flow_steps, flow):
            methods.append(method_name(agent, condition.spec.label))
    reference = spec.report.get("reference")
    if reference is not None and reference not in methods:
        raise _fail(
            source,
            f"report.reference {reference!r} is not a method of this sweep, so the probability of "
            f"improvement would be dropped; choose one of {', '.join(dict.fromkeys(methods))}",
        )
