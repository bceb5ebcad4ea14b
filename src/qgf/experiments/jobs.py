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
import os
from pathlib import Path
from typing import Any

from qgf.errors import QGFError
from qgf.experiments.costs import (
    addon_costs,
    curve_cost,
    evaluation_cost,
    generate_cost,
    gpu_train_cost,
    online_cost,
    online_gpu_cost,
    train_cost,
)
from qgf.experiments.naming import RunGroup, domain_dataset, run_groups, settings_hash, task_id
from qgf.experiments.online_sweep import online_done, online_job_fields
from qgf.experiments.protocol import protocol_choices
from qgf.experiments.spec import (
    AgentSpec,
    SweepSpec,
    agent_conditions,
    has_behavior_flow,
    method_name,
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
    gpu_cost: float = 0.0  # rough estimate in GPU-seconds (jobs with gpus > 0)

    @property
    def work(self) -> float:
        """The estimate the progress bar and the scheduling order weigh: CPU- plus GPU-seconds."""
        return self.cost + self.gpu_cost

    @property
    def log_name(self) -> str:
        return self.id.replace("/", "_") + ".log"


def data_dir(spec: SweepSpec, sweep_dir: Path) -> Path:
    if "dir" in spec.data:
        return Path(os.path.expanduser(spec.data["dir"]))
    settings = {k: spec.data.get(k) for k in ("episodes", "val_episodes", "episode_length", "seed")}
    return sweep_dir / "data" / settings_hash(settings)


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


def _condition_key(condition) -> list[Any]:
    return [repr(condition.spec), float(condition.weight)]


def plan(
    spec: SweepSpec, sweep_dir: str | Path, *, record_protocol: bool = True
) -> tuple[list[Job], dict[str, Any]]:
    """Every job determinable now (the protocol's second phase appears once its tuning is done)
    and a note of what is still waiting: {'waiting': text or ''}, with 'unplanned_cost' (CPU-s,
    GPU-s) forecast for a final stage still waiting on its tuning. `record_protocol`: write the
    protocol's choices to SWEEP_DIR/protocol.json (a reader such as `qgf report` passes False)."""
    sweep_dir = Path(sweep_dir)
    jobs: list[Job] = []
    resources = spec.resources
    on_gpu = resources["train_gpus"] > 0  # training, add-ons and online phases hold a GPU
    data = data_dir(spec, sweep_dir)
    generate_ids: dict[str, str] = {}
    if "dir" not in spec.data:
        for dataset in dict.fromkeys(domain_dataset(task) for task in spec.tasks):
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
                    cost=generate_cost(episodes, length),
                )
            )
    groups = run_groups(spec)
    tune_ids = set(spec.protocol["tune_tasks"]) if spec.protocol else None
    tune_best_of_n = bool(spec.protocol and spec.protocol.get("tune_best_of_n"))
    planned_addons: set[str] = set()  # a run evaluated at two stages trains its add-ons once

    def train_job(group: RunGroup, task: str, seeds: tuple[int, ...] = spec.seeds) -> Job:
        out = sweep_dir / "runs" / group.name / task
        dataset = domain_dataset(task)
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
        cpu_train = 0.0 if on_gpu else train_cost(group.config, len(seeds))
        return Job(
            id=f"train/{group.name}/{task}{suffix}",
            kind="train",
            stage="train",
            out=str(out),
            params=params,
            deps=(generate_ids[dataset],) if dataset in generate_ids else (),
            cpus=resources["train_cpus"],
            gpus=resources["train_gpus"],
            cost=cpu_train + curve_cost(task, group.config, params),
            gpu_cost=gpu_train_cost(group.config, len(seeds)) if on_gpu else 0.0,
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
                        "run_step": int(group.config.steps),  # the checkpoint it evaluates
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
                    cost=evaluation_cost(task, episodes, spec.evaluation.get("max_episode_steps")),
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
        cost = online_cost(train.params["task"], group.config, spec.online, gpu=on_gpu)
        gpu_cost = online_gpu_cost(group.config, spec.online) if on_gpu else 0.0
        return [
            Job(kind="online", stage="online", deps=(train.id,), cpus=resources["train_cpus"],
                gpus=resources["train_gpus"], cost=cost, gpu_cost=gpu_cost,
                **online_job_fields(spec.online, group.config.agent, group.name, train, seed, sweep_dir))
            for seed in spec.seeds
        ]  # fmt: skip

    def final_forecast(labels: list[str]) -> tuple[float, float]:
        """(CPU-s, GPU-s) of the final stage of agents not yet chosen: each agent's first grid point
        stands for its choice, one condition per method, every task and final seed."""
        cpu = gpu = 0.0
        for label in labels:
            group = next(group for group in groups if group.agent.label == label)
            conditions = conditions_of(group)
            methods = len({method_name(group.agent, c.spec.label, tune_best_of_n) for c in conditions})
            for task in spec.tasks:
                train = train_job(group, task)
                episodes = spec.evaluation["episodes"] * methods
                evaluation = evaluation_cost(task, episodes, spec.evaluation.get("max_episode_steps"))
                online = online_jobs(group, train)
                cpu += train.cost + len(spec.seeds) * evaluation + sum(job.cost for job in online)
                gpu += train.gpu_cost + sum(job.gpu_cost for job in online)
        return cpu, gpu

    note: dict[str, Any] = {"waiting": ""}
    untuned = [group for group in groups if spec.protocol is None or not group.config.steps]
    for group in untuned:  # with a protocol: the online-only runs (0 offline steps: nothing to tune)
        for task in spec.tasks:
            jobs.append(train_job(group, task))
            jobs += evaluate_jobs(group, task, "sweep", spec.evaluation["seed"], conditions_of(group))
            jobs += online_jobs(group, train_job(group, task))
    if spec.protocol is None:
        return jobs, note
    groups = [group for group in groups if group.config.steps]

    tune_tasks = [task for task in spec.tasks if task_id(task) in tune_ids]
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
        note["waiting"] = (
            f"the final stage of {', '.join(pending)} is planned once its tuning evaluations "
            "(protocol) have finished"
        )
        note["unplanned_cost"] = final_forecast(pending)
    finished = [job for job in tune_evaluations if job.params["agent"] not in pending]
    if not finished:
        return jobs, note
    choices = protocol_choices(spec, groups, finished)
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
    return jobs, note


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
        cost, gpu_cost = addon_costs(steps, gpu=spec.resources["train_gpus"] > 0)
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
                cost=cost,
                gpu_cost=gpu_cost,
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
        return evaluation_current(job)
    if job.kind == "online":
        return online_done(out, job.params)
    if job.kind == "addon":
        from qgf import checkpoint as ckpt

        return ckpt.latest_step(out) == int(job.params["steps"])
    raise QGFError(f"unknown job kind {job.kind!r}")


def evaluation_current(job: Job) -> bool:
    """Whether an evaluate job's results.json exists and evaluated the checkpoint the job names:
    a spec that trains its runs longer (steps do not rename runs, so they resume) makes the
    evaluations of the shorter runs stale, and they run again (results that record no run step
    are accepted as they are)."""
    path = Path(job.out) / "results.json"
    if not path.is_file():
        return False
    import json

    try:
        recorded = json.loads(path.read_text()).get("extra", {}).get("run_step")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded is None or recorded == job.params["run_step"]


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
