"""A sweep as a graph of jobs (generate -> train [-> addon] -> evaluate; train -> online), each
writing to a directory derived from its settings, so re-planning after any interruption finds the
same jobs and skips the finished ones.

Layout of a sweep directory:

    data/<generation-hash>/<dataset>.npz          generate jobs (one per domain), unless data.dir is set
    runs/<agent>-<config-hash>/<task>/seed<S>/    train jobs (one per agent x grid point x task; its
                                                  seeds are trained as ONE vmapped program)
    runs/.../seed<S>/addons/<name>/               addon jobs: the add-on an add-on sampler (robustq,
                                                  cfgrl, qgf-distill, ...) needs, per run
    evals/<stage>/<agent>-<config-hash>/<task>/seed<S>-<hash>/results.json
                                                  evaluate jobs; partial/ holds finished conditions
    online/<agent>-<config-hash>/<task>/seed<S>-<hash>/   online jobs ([online]: a fine-tuned copy of
                                                  the run, qgf.experiments.online_sweep)
    protocol.json                                 the protocol's choices and their evidence
    logs/<job>.log                                one log per job

With a [protocol] the graph grows in two phases (QGF App. J): runs on the tuning tasks are
evaluated at every candidate (stage 'tune', evaluation seed tune_seed); once those finish, the
choice per (method, domain) is recorded and the chosen configuration is trained on every task
and evaluated at the chosen weight on fresh evaluation seeds (stage 'final'). Without a protocol
every run is evaluated at every condition (stage 'sweep').
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from qgf.errors import QGFError
from qgf.experiments.online_sweep import online_done, online_job_fields
from qgf.experiments.spec import (
    AgentSpec,
    SweepSpec,
    agent_conditions,
    has_behavior_flow,
    method_name,
    run_config,
)

PROTOCOL_FILE = "protocol.json"


@dataclasses.dataclass(frozen=True)
class Job:
    id: str  # unique, filesystem-safe
    kind: str  # generate | train | addon | evaluate | online
    stage: str  # data | train | addon | tune | final | sweep | online
    out: str  # the directory it writes
    params: dict[str, Any]
    deps: tuple[str, ...]
    cpus: float
    gpus: float
    cost: float  # rough estimate in CPU-seconds, for --plan and the ETA

    @property
    def log_name(self) -> str:
        return self.id.replace("/", "_") + ".log"


def settings_hash(settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]


# The keys that became config sections (qgf.sections) with the values they had by default when
# every config held all of them (qgf before sections, commit a5bea95). A run directory's name hashes
# the config's identity with these filled in wherever the config does not hold the key, which
# reproduces the names of the directories written before sections (their runs are not retrained),
# while a key added later (a new agent's section) enters only the names of the runs it applies to.
# Frozen: never edit or extend it, whatever the sections' defaults become.
LEGACY_SECTION_VALUES: dict[str, Any] = {
    "critic_pessimism": 0.5,
    "dqc_horizon": 25,
    "distill_expectile": 0.8,
    "value_goal_p_cur": 0.2,
    "value_goal_p_traj": 0.5,
    "value_goal_p_rand": 0.3,
    "value_goal_geometric": True,
    "actor_goal_p_cur": 0.0,
    "actor_goal_p_traj": 1.0,
    "actor_goal_p_rand": 0.0,
    "actor_goal_geometric": False,
    "fql_alpha": 300.0,
    "edp_bc_weight": 30.0,
    "normalize_q_loss": True,
    "dac_alpha": 100.0,
    "qsm_inv_temperature": 0.1,
    "qsm_bc_weight": 10.0,
    "actor_grad_clip": 0.0,
    "qam_inv_temperature": 0.1,
    "qam_time_offset": 0.5,
    "qam_fql_alpha": 30.0,
    "qam_edit_sigma": 0.1,
    "qam_edit_target_entropy": -0.5,
}


# Shared config fields added after sections, with their defaults. A run's name leaves such a field
# out while it holds its default (the runs named before it existed keep their names) and hashes it
# once it is set to anything else. Append a field here when you add one to TrainConfig.
LATER_SHARED_DEFAULTS: dict[str, Any] = {
    "matmul_precision": "default",
    "actor_layer_norm": True,
    "network_style": "qgf",
}

# The same for keys added to an existing config section after sections (the runs of the agents it
# applies to keep their names while the key holds its default). Append a key here when you add one.
LATER_SECTION_DEFAULTS: dict[str, Any] = {
    "q_term_critic": "guidance",
    "dac_gradient_scale": "none",
}
_LATER_DEFAULTS = {**LATER_SHARED_DEFAULTS, **LATER_SECTION_DEFAULTS}


def _config_identity(config) -> dict[str, Any]:
    """What names a run directory: the config's identity (its shared fields and the sections that
    apply) without seed and schedule (so more steps resume it), over LEGACY_SECTION_VALUES."""
    from qgf.config import SCHEDULE_FIELDS

    identity = {
        k: v
        for k, v in config.to_dict().items()
        if k not in SCHEDULE_FIELDS and k != "seed" and not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])
    }
    return {**LEGACY_SECTION_VALUES, **identity}


@dataclasses.dataclass(frozen=True)
class RunGroup:
    """One agent at one grid point: the unit the protocol chooses among for training-time values."""

    agent: AgentSpec
    point: dict[str, Any]
    config: Any  # TrainConfig

    @property
    def name(self) -> str:
        return f"{self.agent.label}-{settings_hash(_config_identity(self.config))}"

    @property
    def point_label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.point.items())) or "default"


def run_groups(spec: SweepSpec) -> list[RunGroup]:
    return [
        RunGroup(agent, point, run_config(agent, spec.overrides, point))
        for agent in spec.agents
        for point in agent.grid_points()
    ]


def data_dir(spec: SweepSpec, sweep_dir: Path) -> Path:
    if "dir" in spec.data:
        return Path(os.path.expanduser(spec.data["dir"]))
    settings = {k: spec.data.get(k) for k in ("episodes", "val_episodes", "episode_length", "seed")}
    return sweep_dir / "data" / settings_hash(settings)


def _domain_dataset(task: str) -> str:
    from qgf.envs import parse_name

    return parse_name(task).dataset_name


def _domain(task: str) -> str:
    from qgf.envs import parse_name

    return parse_name(task).domain


def _task_id(task: str) -> int:
    from qgf.envs import parse_name

    return int(parse_name(task).task)


def _train_cost(config, seeds: int) -> float:
    width = max(config.actor_hidden_dims + config.critic_hidden_dims)
    # CPU-seconds per seed-step: 9.5 ms fixed plus 4e-10 s per (batch row x width^2 x layer), fitted
    # to sweep training jobs (one CPU each, two side by side on 2 cores, seeds vmapped; the
    # calibration and domains sweeps of docs/results.md): 10.5-12.3 ms at cpu-small, 34-44 ms at
    # cpu. Other agents run 1-2x that (docs/agents.md).
    depth = len(config.actor_hidden_dims)
    return config.steps * seeds * (0.0095 + 4e-10 * config.batch_size * width * width * depth)


@functools.cache
def _episode_limit(task: str) -> int:
    """The env's own episode limit, from the gymnasium registry OGBench fills (500 if unknown)."""
    import gymnasium
    import ogbench  # noqa: F401  (registers the envs)

    from qgf.envs import parse_name

    name = parse_name(task).env_name
    limit = gymnasium.registry[name].max_episode_steps if name in gymnasium.registry else None
    return int(limit or 500)


# CPU-seconds per env step of an evaluation: MuJoCo with OGBench's wrappers (~1.5 ms) plus the
# policy's share (one chunk query per h steps), measured order of magnitude on 2 cores.
_EVAL_SECONDS_PER_STEP = 2.5e-3


def _evaluation_cost(task: str, episodes: int, max_episode_steps: int | None) -> float:
    limit = max_episode_steps or _episode_limit(task)
    return episodes * limit * _EVAL_SECONDS_PER_STEP


def _curve_params(spec: SweepSpec, conditions) -> dict[str, Any]:
    """What a train job's learning curve evaluates (`qgf.evaluation.curve.CurveEvaluator`): the
    agent's evaluation conditions at every point, curve_episodes each, on curve_seed."""
    evaluation = spec.evaluation
    return {
        "every": evaluation["eval_every"],
        "episodes": evaluation["curve_episodes"],
        "seed": evaluation["curve_seed"],
        "conditions": [{"spec": dataclasses.asdict(c.spec), "weight": float(c.weight)} for c in conditions],
        "max_episode_steps": evaluation.get("max_episode_steps"),
    }


def _curve_cost(spec: SweepSpec, task: str, config, params: dict[str, Any]) -> float:
    curve = params.get("curve")
    if curve is None:
        return 0.0
    points = -(-config.steps // curve["every"])
    episodes = points * curve["episodes"] * len(curve["conditions"]) * len(params["seeds"])
    return _evaluation_cost(task, episodes, curve["max_episode_steps"])


def _online_cost(task: str, config, online: dict[str, Any]) -> float:
    """Per env step: the env and the policy's share, plus `utd` updates; plus the curve's points."""
    per_step = _EVAL_SECONDS_PER_STEP + online["utd"] * _train_cost(config.replace(steps=1), 1)
    points = online["steps"] // online["eval_every"] + 2  # env step 0 and the last step too
    episodes = points * online["eval_episodes"]
    return online["steps"] * per_step + _evaluation_cost(task, episodes, online["max_episode_steps"])


def _condition_key(condition) -> list[Any]:
    return [repr(condition.spec), float(condition.weight)]


def plan(
    spec: SweepSpec, sweep_dir: str | Path, *, record_protocol: bool = True
) -> tuple[list[Job], dict[str, Any]]:
    """Every job determinable now (the protocol's second phase appears once its tuning is done)
    and a note of what is still waiting: {'waiting': text or ''}. `record_protocol`: write the
    protocol's choices to SWEEP_DIR/protocol.json (a reader such as `qgf report` passes False)."""
    sweep_dir = Path(sweep_dir)
    jobs: list[Job] = []
    resources = spec.resources
    data = data_dir(spec, sweep_dir)
    generate_ids: dict[str, str] = {}
    if "dir" not in spec.data:
        for dataset in dict.fromkeys(_domain_dataset(task) for task in spec.tasks):
            job_id = f"generate/{dataset}"
            generate_ids[dataset] = job_id
            episodes = spec.data.get("episodes", 1000)
            length = spec.data.get("episode_length", 1001)
            jobs.append(
                Job(
                    id=job_id,
                    kind="generate",
                    stage="data",
                    out=str(data),
                    params={"env": dataset, **{k: spec.data[k] for k in spec.data if k != "dir"}},
                    deps=(),
                    cpus=resources["generate_cpus"],
                    gpus=0,
                    cost=episodes * length * 3e-3,  # ~300 oracle rollout steps per CPU-second
                )
            )
    groups = run_groups(spec)
    tune_ids = set(spec.protocol["tune_tasks"]) if spec.protocol else None
    tune_best_of_n = bool(spec.protocol and spec.protocol.get("tune_best_of_n"))
    planned_addons: set[str] = set()  # a run evaluated at two stages trains its add-ons once

    def train_job(group: RunGroup, task: str, seeds: tuple[int, ...] = spec.seeds) -> Job:
        out = sweep_dir / "runs" / group.name / task
        dataset = _domain_dataset(task)
        # The protocol's fresh tuning seeds train as a job of their own beside the final seeds
        suffix = "" if set(seeds) == set(spec.seeds) else "/tune-seeds"
        params = {
            "config": group.config.to_dict(),
            "seeds": list(seeds),
            "task": task,
            "data_dir": str(data),
            "agent": group.agent.label,
        }
        if "eval_every" in spec.evaluation and group.config.steps:  # curves: not in the run's name or id
            params["curve"] = _curve_params(spec, conditions_of(group, curve=True))
        return Job(
            id=f"train/{group.name}/{task}{suffix}",
            kind="train",
            stage="train",
            out=str(out),
            params=params,
            deps=(generate_ids[dataset],) if dataset in generate_ids else (),
            cpus=resources["train_cpus"],
            gpus=resources["train_gpus"],
            cost=_train_cost(group.config, len(seeds)) + _curve_cost(spec, task, group.config, params),
        )

    def evaluate_jobs(
        group: RunGroup, task: str, stage: str, seed: int, conditions, seeds: tuple[int, ...] = spec.seeds
    ) -> list[Job]:
        train = train_job(group, task, seeds)
        if not group.config.steps:  # online only: nothing trained offline to evaluate
            return []
        settings = {
            "conditions": [_condition_key(c) for c in conditions],
            "episodes": spec.evaluation["episodes"],
            "seed": seed,
            "max_episode_steps": spec.evaluation.get("max_episode_steps"),
        }
        out = []
        for run_seed in seeds:
            run_dir = Path(train.out) / f"seed{run_seed}"
            addons = addon_jobs(spec, train, run_dir, conditions)
            out += [job for job in addons if job.id not in planned_addons]
            planned_addons.update(job.id for job in addons)
            eval_dir = (
                sweep_dir / "evals" / stage / group.name / task / f"seed{run_seed}-{settings_hash(settings)}"
            )
            episodes = spec.evaluation["episodes"] * len(conditions)
            out.append(
                Job(
                    id=f"evaluate/{stage}/{group.name}/{task}/seed{run_seed}",
                    kind="evaluate",
                    stage=stage,
                    out=str(eval_dir),
                    params={
                        "run": str(run_dir),
                        "conditions": [
                            {"spec": dataclasses.asdict(c.spec), "weight": float(c.weight)}
                            for c in conditions
                        ],
                        "methods": [
                            method_name(group.agent, c.spec.label, tune_best_of_n) for c in conditions
                        ],
                        "episodes": spec.evaluation["episodes"],
                        "seed": seed,
                        "workers": spec.evaluation["workers"],
                        "num_envs": spec.evaluation.get("num_envs"),
                        "groups": spec.evaluation["groups"],
                        "max_episode_steps": spec.evaluation.get("max_episode_steps"),
                        "group": group.name,
                        "agent": group.agent.label,
                        "point": group.point,
                        "task": task,
                        "run_seed": run_seed,
                        "stage": stage,
                    },
                    deps=(train.id, *(job.id for job in addons)),
                    cpus=resources["evaluate_cpus"],
                    gpus=resources["evaluate_gpus"],
                    cost=_evaluation_cost(task, episodes, spec.evaluation.get("max_episode_steps")),
                )
            )
        return out

    def conditions_of(group: RunGroup, curve: bool = False):
        return agent_conditions(
            spec, group.agent, group.config.flow_steps, has_behavior_flow(group.agent.name), curve=curve
        )

    def online_jobs(group: RunGroup, train: Job) -> list[Job]:
        """The online phase of each seed of `train` ([online]; its agents only)."""
        if spec.online is None or group.agent.label not in spec.online["agents"]:
            return []
        cost = _online_cost(train.params["task"], group.config, spec.online)
        return [
            Job(kind="online", stage="online", deps=(train.id,), cpus=resources["train_cpus"],
                gpus=resources["train_gpus"], cost=cost,
                **online_job_fields(spec.online, group.config.agent, group.name, train, seed, sweep_dir))
            for seed in spec.seeds
        ]  # fmt: skip

    waiting = ""
    untuned = [group for group in groups if spec.protocol is None or not group.config.steps]
    for group in untuned:  # with a protocol: the online-only runs (0 offline steps: nothing to tune)
        for task in spec.tasks:
            jobs.append(train_job(group, task))
            jobs += evaluate_jobs(group, task, "sweep", spec.evaluation["seed"], conditions_of(group))
            jobs += online_jobs(group, train_job(group, task))
    if spec.protocol is None:
        return jobs, {"waiting": waiting}
    groups = [group for group in groups if group.config.steps]

    tune_tasks = [task for task in spec.tasks if _task_id(task) in tune_ids]
    tune_jobs = []
    tune_seeds = tuple(spec.protocol.get("tune_seeds", spec.seeds))  # spec.json of older sweeps: none
    for group in groups:
        for task in tune_tasks:
            jobs.append(train_job(group, task, tune_seeds))
            tune_jobs += evaluate_jobs(
                group, task, "tune", spec.protocol["tune_seed"], conditions_of(group), tune_seeds
            )
    jobs += tune_jobs
    # Each agent's final stage is planned once ITS tuning evaluations have finished, so a slow
    # method's tuning does not hold back the others' final runs.
    tune_evaluations = [job for job in tune_jobs if job.kind == "evaluate"]  # not the add-on jobs
    pending = sorted(
        {job.params["agent"] for job in tune_evaluations if not job_done(job)},
        key=[agent.label for agent in spec.agents].index,
    )
    if pending:
        waiting = (
            f"the final stage of {', '.join(pending)} is planned once its tuning evaluations "
            "(protocol) have finished"
        )
    finished = [job for job in tune_evaluations if job.params["agent"] not in pending]
    if not finished:
        return jobs, {"waiting": waiting}
    choices = protocol_choices(spec, sweep_dir, groups, finished, conditions_of)
    choices["pending"] = pending
    from qgf.fileio import atomic_write_json

    if record_protocol:
        atomic_write_json(sweep_dir / PROTOCOL_FILE, choices)
    by_group: dict[str, list[Any]] = {}
    from qgf.evaluation.conditions import Condition
    from qgf.guidance import SamplerSpec

    for choice in choices["choices"]:
        for domain_task in choice["tasks"]:
            key = (choice["group"], domain_task)
            condition = Condition(SamplerSpec(**choice["spec"]), float(choice["weight"]))
            by_group.setdefault(key, [])
            if condition not in by_group[key]:
                by_group[key].append(condition)
    known = {job.id for job in jobs}
    group_by_name = {group.name: group for group in groups}
    for (group_name, task), conditions in sorted(by_group.items(), key=lambda item: item[0]):
        group = group_by_name[group_name]
        train = train_job(group, task)
        if train.id not in known:
            jobs.append(train)
            known.add(train.id)
        jobs += evaluate_jobs(group, task, "final", spec.protocol["final_seed"], conditions)
        jobs += online_jobs(group, train)  # the chosen configuration's runs
    return jobs, {"waiting": waiting}


def spec_from_json(document: dict[str, Any]) -> SweepSpec:
    """The `SweepSpec` a sweep recorded in SWEEP_DIR/spec.json (`dataclasses.asdict` of it)."""
    agents = tuple(
        AgentSpec(
            **{
                **agent,
                "samplers": tuple(agent["samplers"]),
                "curve_samplers": tuple(agent.get("curve_samplers", ())),
                "bfn": None if agent.get("bfn") is None else tuple(agent["bfn"]),
            }
        )
        for agent in document["agents"]
    )
    names = {field.name for field in dataclasses.fields(SweepSpec)}
    fields = {key: value for key, value in document.items() if key in names}
    fields.update(agents=agents, seeds=tuple(document["seeds"]), tasks=tuple(document["tasks"]))
    return SweepSpec(**fields)


def protocol_choices(spec: SweepSpec, sweep_dir: Path, groups, tune_jobs: list[Job], conditions_of) -> dict:
    """The paper's choice (QGF App. J): per method and domain, the candidate (grid point, weight)
    with the highest success averaged over the tuning tasks and seeds; ties go to the earlier
    candidate (smaller weight, earlier grid point). Evidence: every candidate's mean per task."""
    from qgf.evaluation.results import read_results

    scores: dict[tuple[str, str], dict[tuple[str, str, float], dict[str, list[float]]]] = {}
    specs: dict[tuple[str, str, float], dict] = {}
    for job in tune_jobs:
        results = read_results(Path(job.out) / "results.json")
        group = job.params["group"]
        agent = next(g.agent for g in groups if g.name == group)
        domain = _domain(job.params["task"])
        for index, condition in enumerate(results.results):
            methods = job.params.get("methods")
            method = methods[index] if methods else method_name(agent, condition.label)
            candidate = (group, condition.label, float(condition.weight))
            specs[candidate] = job.params["conditions"][index]["spec"]
            bucket = scores.setdefault((method, domain), {}).setdefault(candidate, {})
            bucket.setdefault(job.params["task"], []).append(condition.success_rate)
    choices = []
    for (method, domain), candidates in sorted(scores.items()):
        evidence = []
        for (group, label, weight), per_task in candidates.items():
            means = {task: sum(v) / len(v) for task, v in per_task.items()}
            evidence.append(
                {
                    "group": group,
                    "sampler": label,
                    "point": next(g.point_label for g in groups if g.name == group),
                    "weight": weight,
                    "success_per_task": means,
                    "success": sum(means.values()) / len(means),
                }
            )
        best = max(evidence, key=lambda e: e["success"])  # max keeps the first of equals
        domain_tasks = [task for task in spec.tasks if _domain(task) == domain]
        # A choice on the edge of its grid may lie beyond it (issue 20: grids wide enough that the
        # choice is interior): the report flags it.
        edge = []
        weights = sorted({e["weight"] for e in evidence if e["group"] == best["group"]})
        if len(weights) > 1 and best["weight"] in (weights[0], weights[-1]):
            edge.append("weight")
        chosen = next(g for g in groups if g.name == best["group"])
        for key, values in chosen.agent.grid.items():
            if len(values) > 1 and chosen.point[key] in (min(values), max(values)):
                edge.append(key)
        choices.append(
            {
                "method": method,
                "domain": domain,
                "group": best["group"],
                "point": best["point"],
                "weight": best["weight"],
                "spec": specs[(best["group"], best["sampler"], best["weight"])],
                "tune_success": best["success"],
                "on_grid_edge": edge,
                "tasks": domain_tasks,
                "evidence": evidence,
            }
        )
    return {
        "rule": "argmax over candidates of mean success on the tuning tasks (ties: first candidate)",
        "tune_tasks": spec.protocol["tune_tasks"],
        "tune_seed": spec.protocol["tune_seed"],
        "final_seed": spec.protocol["final_seed"],
        "tune_seeds": list(spec.protocol.get("tune_seeds", spec.seeds)),
        "choices": choices,
    }


def addon_jobs(spec: SweepSpec, train: Job, run_dir: Path, conditions) -> list[Job]:
    """The add-on training (`qgf addon train RUN NAME`) that the add-on samplers among
    `conditions` need on one run: a job of kind 'addon' between its train and evaluate jobs, with
    the spec's [addons] settings."""
    from qgf.addons import addons_for_samplers
    from qgf.addons.base import ADDONS_DIR, AddonConfig

    jobs = []
    for name in addons_for_samplers([condition.spec for condition in conditions]):
        settings = spec.addons.get(name, {})
        steps = AddonConfig.from_dict(settings).steps
        jobs.append(
            Job(
                id=f"addon/{Path(train.id).relative_to('train')}/{run_dir.name}/{name}",
                kind="addon",
                stage="addon",
                out=str(run_dir / ADDONS_DIR / name),
                params={
                    "run": str(run_dir),
                    "name": name,
                    "settings": settings,
                    "steps": steps,
                    "data_dir": train.params["data_dir"],
                },
                deps=(train.id,),
                cpus=spec.resources["train_cpus"],
                gpus=spec.resources["train_gpus"],
                cost=steps * 0.01,  # order of magnitude: one small network's update on a CPU
            )
        )
    return jobs


# ------------------------------------------------------------------ finished?


def job_done(job: Job) -> bool:
    """Whether `job`'s outputs are complete on disk (so a re-run skips it)."""
    out = Path(job.out)
    if job.kind == "generate":
        from qgf.envs import parse_name

        parsed = parse_name(job.params["env"])
        return (out / parsed.train_filename).is_file() and (out / parsed.val_filename).is_file()
    if job.kind == "train":
        from qgf import checkpoint as ckpt

        steps = int(job.params["config"]["steps"])
        if steps == 0:  # online only: the run directories, which the online jobs start from
            return all(ckpt.is_run_dir(out / f"seed{seed}") for seed in job.params["seeds"])
        trained = all(ckpt.latest_step(out / f"seed{seed}") == steps for seed in job.params["seeds"])
        return trained and ("curve" not in job.params or _curves_done(job))
    if job.kind == "evaluate":
        return (out / "results.json").is_file()
    if job.kind == "online":
        return online_done(out, job.params)
    if job.kind == "addon":
        from qgf import checkpoint as ckpt

        return ckpt.latest_step(out) == int(job.params["steps"])
    raise QGFError(f"unknown job kind {job.kind!r}")


def _curves_done(job: Job) -> bool:
    """Whether every seed's learning curve has its last point (a sweep given eval_every after its
    runs finished re-runs their train jobs, which evaluate the kept checkpoints)."""
    from qgf.evaluation.curve import read_curve

    steps = int(job.params["config"]["steps"])
    for seed in job.params["seeds"]:
        document = read_curve(Path(job.out) / f"seed{seed}")
        if document is None or not document["points"] or document["points"][-1]["step"] != steps:
            return False
    return True
