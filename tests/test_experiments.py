"""Experiments at scale: spec validation, the job graph, seeds trained as one vmapped program, and a
tiny sweep on a local Ray instance (a failed job, idempotent re-runs, a killed-and-resumed
evaluation), and the rliable report."""

import dataclasses
import json
import os
import re
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from helpers import equal_trees, make_dataset, small_config
from qgf import checkpoint as ckpt
from qgf.errors import QGFError
from qgf.experiments.jobs import job_done, plan
from qgf.experiments.spec import parse_spec

TASK1 = "cube-single-play-singletask-task1-v0"
TASK2 = "cube-single-play-singletask-task2-v0"
MISSING = "scene-play-singletask-task1-v0"  # no data for it in the sweep test: its training fails
TOY_OVERRIDES = {
    "steps": 4,
    "log_every": 2,
    "ckpt_every": 4,
    "horizon": 2,
    "batch_size": 16,
    "actor_hidden_dims": [16, 16],
    "critic_hidden_dims": [16, 16],
    "flow_steps": 2,
}


def toy_spec(**changes):
    document = {
        "name": "toy",
        "preset": "tiny",
        "seeds": [0],
        "tasks": [TASK1, TASK2],
        "overrides": dict(TOY_OVERRIDES),
        "data": {"episodes": 2, "val_episodes": 1, "episode_length": 30},
        "agents": [{"name": "qgf", "samplers": ["qgf"]}],
        "evaluation": {
            "episodes": 1,
            "weights": [0.0, 0.1],
            "workers": 0,
            "num_envs": 1,
            "max_episode_steps": 8,
        },
    }
    document.update(changes)
    return document


# ------------------------------------------------------------------ spec validation


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sedes": [0]}, "did you mean 'seeds'"),
        ({"agents": [{"name": "fqll"}]}, "not a registered agent"),
        ({"tasks": ["cube-single-play-v0"]}, "not a single-task dataset name"),
        ({"seeds": [0, 0]}, "duplicates"),
        ({"overrides": {"batch_sise": 3}}, "did you mean 'batch_size'"),
        ({"overrides": {"batch_size": 0}}, "batch_size"),
        ({"protocol": {"tune_tasks": [4]}}, "not among the tasks"),
        ({"protocol": {"tune_tasks": [2], "tune_seed": 3, "final_seed": 3}}, "fresh evaluation seeds"),
        ({"protocol": {"tune_tasks": [2], "tune_seeds": [0, 7]}}, "fresh training seeds"),
        ({"protocol": {"tune_tasks": [2], "tune_seeds": []}}, "protocol.tune_seeds"),
        ({"evaluation": {"weights": [-1.0]}}, "numbers >= 0"),
        ({"agents": [{"name": "qgf", "samplers": ["qgff"]}]}, "samplers"),
        ({"agents": [{"name": "qgf"}, {"name": "qgf"}]}, "labels must be unique"),
        ({"preset": "huge"}, "unknown preset"),
        ({"evaluation": {"groups": 0}}, "evaluation.groups must be an integer >= 1"),
        ({"evaluation": {"num_envs": 2.5}}, "evaluation.num_envs must be an integer >= 1"),
        ({"evaluation": {"workers": -1}}, "evaluation.workers must be an integer >= 0"),
    ],
)
def test_spec_errors_name_the_problem(changes, message):
    with pytest.raises(QGFError, match=message):
        parse_spec(toy_spec(**changes), source="toy.toml")


def test_plan_directories_follow_the_settings(tmp_path):
    spec = parse_spec(toy_spec(seeds=[0, 1]))
    jobs, note = plan(spec, tmp_path)
    kinds = [job.kind for job in jobs]
    assert kinds.count("generate") == 1 and kinds.count("train") == 2 and kinds.count("evaluate") == 4
    assert note["waiting"] == ""
    again, _ = plan(parse_spec(toy_spec(seeds=[0, 1])), tmp_path)
    assert [job.out for job in again] == [job.out for job in jobs]
    changed, _ = plan(
        parse_spec(toy_spec(seeds=[0, 1], overrides={**TOY_OVERRIDES, "expectile": 0.8})), tmp_path
    )
    train_dirs = {job.out for job in jobs if job.kind == "train"}
    assert not train_dirs & {job.out for job in changed if job.kind == "train"}
    more_steps, _ = plan(
        parse_spec(toy_spec(seeds=[0, 1], overrides={**TOY_OVERRIDES, "steps": 8})), tmp_path
    )
    assert train_dirs == {job.out for job in more_steps if job.kind == "train"}  # more steps resume the runs
    train = next(job for job in jobs if job.kind == "train")
    assert train.params["seeds"] == [0, 1] and train.deps == ("generate/cube-single-play-v0",)
    assert not any(job_done(job) for job in jobs)
    # evaluation jobs step their envs as one group unless the spec says otherwise; the grouping
    # does not change results, so it is not part of the evaluation directory
    assert {job.params["groups"] for job in jobs if job.kind == "evaluate"} == {1}
    evaluation = {**toy_spec()["evaluation"], "groups": 2}
    grouped, _ = plan(parse_spec(toy_spec(seeds=[0, 1], evaluation=evaluation)), tmp_path)
    assert {job.params["groups"] for job in grouped if job.kind == "evaluate"} == {2}
    assert [job.out for job in grouped] == [job.out for job in jobs]
    # env workers: in the job's process with one CPU per job, one per CPU otherwise, or as given;
    # like the grouping, not part of the evaluation directory
    without = {key: value for key, value in toy_spec()["evaluation"].items() if key != "workers"}
    for cpus, given, expected in ((1, None, 0), (4, None, 4), (1, 2, 2)):
        evaluation = without if given is None else {**without, "workers": given}
        spec = parse_spec(toy_spec(seeds=[0, 1], evaluation=evaluation, resources={"evaluate_cpus": cpus}))
        planned, _ = plan(spec, tmp_path)
        assert {job.params["workers"] for job in planned if job.kind == "evaluate"} == {expected}
        assert [job.out for job in planned] == [job.out for job in jobs]


def test_protocol_plans_tuning_first(tmp_path):
    spec = parse_spec(toy_spec(protocol={"tune_tasks": [2]}))
    jobs, note = plan(spec, tmp_path)
    assert {job.stage for job in jobs} == {"data", "train", "tune"}
    assert all(TASK2 in job.id for job in jobs if job.kind != "generate")
    assert "tuning" in note["waiting"]
    assert {tuple(job.params["seeds"]) for job in jobs if job.kind == "train"} == {(0,)}


def test_plan_costs_gpu_training_by_the_qam_papers_table6(tmp_path):
    """A job on a GPU is costed in GPU-seconds from QAM Table 6's ms/step (FQL 3.58; QGF trains what
    IFQL trains, 2.66), seeds counted linearly; on CPUs nothing is; --plan totals both, and the
    final stage not yet planned is forecast from the first grid point."""
    from qgf.experiments.runner import format_plan

    steps = TOY_OVERRIDES["steps"]
    agents = [{"name": "qgf", "samplers": ["qgf"]}, {"name": "fql", "samplers": ["policy"]}]
    cpu_jobs, _ = plan(parse_spec(toy_spec(seeds=[0, 1], agents=agents)), tmp_path / "cpu")
    assert all(job.gpu_cost == 0 for job in cpu_jobs) and "GPU-hours" not in format_plan(cpu_jobs, {})
    gpu = {"train_gpus": 1}
    jobs, _ = plan(parse_spec(toy_spec(seeds=[0, 1], agents=agents, resources=gpu)), tmp_path / "gpu")
    trains = {job.params["agent"]: job for job in jobs if job.kind == "train" and TASK1 in job.id}
    assert trains["fql"].gpu_cost == pytest.approx(steps * 2 * 3.58e-3)
    assert trains["qgf"].gpu_cost == pytest.approx(steps * 2 * 2.66e-3)
    assert trains["fql"].cost == 0  # no curve: nothing of it runs on the CPUs
    total = sum(job.gpu_cost for job in jobs) / 3600
    assert f"{total:.2f} GPU-hours" in format_plan(jobs, {})

    protocol = {"tune_tasks": [2], "tune_seeds": [100]}
    spec = parse_spec(toy_spec(seeds=[0, 1], agents=agents, resources=gpu, protocol=protocol))
    _, note = plan(spec, tmp_path / "tuned")
    cpu, gpu_s = note["unplanned_cost"]  # two tasks x two final seeds, each agent once
    assert gpu_s == pytest.approx(2 * steps * 2 * (3.58e-3 + 2.66e-3))
    assert cpu > 0  # the final evaluations' env steps
    assert "that final stage" in format_plan([], note)


def test_protocol_tunes_on_fresh_training_seeds(tmp_path):
    """tune_seeds: the tuning stage trains and evaluates its own seeds; the final seeds are not
    trained until the choice is made, so no reported run took part in choosing."""
    spec = parse_spec(toy_spec(seeds=[0, 1], protocol={"tune_tasks": [2], "tune_seeds": [100]}))
    jobs, _ = plan(spec, tmp_path)
    (train,) = [job for job in jobs if job.kind == "train"]
    assert train.params["seeds"] == [100] and train.id.endswith("/tune-seeds")
    evaluations = [job for job in jobs if job.kind == "evaluate"]
    assert evaluations and {job.params["run_seed"] for job in evaluations} == {100}
    assert all(job.deps == (train.id,) and job.params["run"].endswith("seed100") for job in evaluations)


def test_curves_of_a_report_are_the_planned_runs_of_its_reported_seeds(tmp_path):
    """The report's learning curves read the runs spec.json plans, for the reported seeds only:
    the protocol's tuning seeds, and runs of other specs, are left out."""
    import dataclasses
    import json

    from qgf.experiments.report.rows import planned_runs

    def record(sweep_dir, **changes):
        document = toy_spec(seeds=[0, 1], **changes)
        document["evaluation"]["eval_every"] = 4
        spec = parse_spec(document)
        sweep_dir.mkdir()
        (sweep_dir / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), default=str))
        return spec

    record(tmp_path / "plain")
    runs = planned_runs(tmp_path / "plain")
    assert {(run.parent.name, run.name) for run in runs} == {
        (task, f"seed{seed}") for task in (TASK1, TASK2) for seed in (0, 1)
    }
    spec = record(tmp_path / "tuned", protocol={"tune_tasks": [2], "tune_seeds": [100]})
    (train,) = [job for job in plan(spec, tmp_path / "tuned")[0] if job.kind == "train"]
    assert "curve" in train.params and train.params["seeds"] == [100]
    assert planned_runs(tmp_path / "tuned") == []  # the tuning seeds' curves are not reported
    assert planned_runs(tmp_path / "elsewhere") is None


def test_curve_samplers_choose_what_the_curve_evaluates(tmp_path):
    """An agent's curve_samplers replace its samplers in its train jobs' curves (the evaluations
    keep every sampler); an add-on sampler, which exists only after training, is refused."""
    document = toy_spec()
    document["evaluation"]["eval_every"] = 4
    document["agents"] = [{"name": "qgf", "samplers": ["none", "qgf", "bptt"], "curve_samplers": ["none"]}]
    jobs, _ = plan(parse_spec(document), tmp_path)
    train = next(job for job in jobs if job.kind == "train")
    assert [c["spec"]["estimator"] for c in train.params["curve"]["conditions"]] == ["none"]
    evaluations = [job for job in jobs if job.kind == "evaluate"]
    evaluated = {c["spec"]["estimator"] for job in evaluations for c in job.params["conditions"]}
    assert evaluated == {"bptt", "qgf", "none"}
    document["agents"][0]["curve_samplers"] = ["robustq"]
    with pytest.raises(QGFError, match="curve_samplers.*robustq.*add-on"):
        parse_spec(document)


def test_a_second_sweep_on_one_directory_is_refused(tmp_path):
    from qgf.experiments.runner import SweepLock, run_sweep

    lock = SweepLock(tmp_path)
    try:
        with pytest.raises(QGFError, match="another sweep"):
            run_sweep(parse_spec(toy_spec()), tmp_path, num_cpus=1, progress=False)
    finally:
        lock.release()


# ------------------------------------------------------------------ seeds in one program


def test_seeds_in_one_program_equal_separate_runs(tmp_path):
    from qgf.training import train, train_seeds

    config = small_config(steps=4, log_every=2, ckpt_every=4)
    dataset = make_dataset()
    results = train_seeds(config, [3, 5], [tmp_path / "a3", tmp_path / "a5"], dataset=dataset, progress=False)
    assert [r.step for r in results] == [4, 4]
    for seed, result in zip([3, 5], results, strict=True):
        assert equal_trees(result.agent, ckpt.load_run(result.run_dir).agent)
        alone = train(config.replace(seed=seed), tmp_path / f"b{seed}", dataset=dataset, progress=False)
        loaded = ckpt.load_run(tmp_path / f"a{seed}")
        assert loaded.config.seed == seed and loaded.step == 4
        for ours, theirs in zip(jax.tree.leaves(loaded.agent), jax.tree.leaves(alone.agent), strict=True):
            np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-4, atol=1e-5)
        log = [json.loads(line) for line in (tmp_path / f"a{seed}" / "log.jsonl").read_text().splitlines()]
        assert [record["step"] for record in log] == [2, 4]
    # the two seeds really are different runs
    first, second = (jax.tree.leaves(r.agent.params) for r in results)
    assert not np.allclose(np.asarray(first[0]), np.asarray(second[0]))


# ------------------------------------------------------------------ a tiny sweep on Ray


@pytest.mark.slow
def test_tiny_sweep_on_ray_with_a_failure_and_a_resumed_evaluation(tmp_path):
    import ray

    from qgf.data import generate
    from qgf.experiments.report import write_report

    data = tmp_path / "data"
    generate(
        "cube-single-play-v0", data, episodes=2, val_episodes=1, episode_length=30, workers=1, progress=False
    )
    spec = parse_spec(toy_spec(tasks=[TASK1, TASK2, MISSING], data={"dir": str(data)}))
    sweep_dir = tmp_path / "sweep"

    # One local Ray instance for both sweeps (run_sweep starts one itself when none is running).
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    try:
        sweep_twice(spec, sweep_dir)
    finally:
        ray.shutdown()
    paths = write_report(sweep_dir, reps=50)
    names = {path.name for path in paths}
    assert {"report.md", "per_task.csv", "aggregate.csv", "fig5_methods.png"} <= names
    assert "qgf@0.1" in (sweep_dir / "report" / "aggregate.csv").read_text()
    restored_from_records(spec, sweep_dir, tmp_path)


def restored_from_records(spec, sweep_dir, tmp_path):
    """The sweep's records, copied away and back into an empty directory, leave nothing to run
    and report the same numbers, with no checkpoint carried."""
    from qgf.experiments.records import copy_records, superseded
    from qgf.experiments.report import write_report
    from qgf.experiments.runner import _keep_sweep_files

    records, restored = tmp_path / "records", tmp_path / "restored"
    for job in plan(spec, sweep_dir)[0]:  # what the runner keeps: each finished job's records
        copy_records(sweep_dir, records, under=job.out)
    _keep_sweep_files(sweep_dir, records)
    assert not list(records.rglob("*.msgpack")) and not (records / "logs").exists()
    copy_records(records, restored, overwrite=False)
    jobs, _ = plan(spec, restored)
    finished = {job.id for job in jobs if job_done(job)}
    assert {job.kind for job in jobs if job.id in finished} == {"evaluate"}
    assert finished | superseded(jobs, finished) == {job.id for job in jobs if MISSING not in job.id}
    write_report(restored, reps=50)
    for name in ("aggregate.csv", "per_task.csv"):
        assert (restored / "report" / name).read_text() == (sweep_dir / "report" / name).read_text()


def sweep_twice(spec, sweep_dir):
    """A first sweep with one failed job; a second after one evaluation was killed midway."""
    from qgf.evaluation.conditions import Condition
    from qgf.evaluation.results import read_results
    from qgf.evaluation.resume import condition_identity, save_partial
    from qgf.evaluation.rollout import EpisodeRecord
    from qgf.evaluation.workers import EnvDescription
    from qgf.experiments.runner import run_sweep
    from qgf.guidance import SamplerSpec

    first = run_sweep(spec, sweep_dir, num_cpus=1, progress=False)
    assert list(first.failed) == [f"train/{job_group(sweep_dir)}/{MISSING}"]
    error, log_path = first.failed[f"train/{job_group(sweep_dir)}/{MISSING}"]
    assert "dataset file not found" in error and "dataset file not found" in open(log_path).read()
    assert first.blocked == [f"evaluate/sweep/{job_group(sweep_dir)}/{MISSING}/seed0"]
    assert len(first.ran) == 4 and not first.ok  # 2 trainings, 2 evaluations finished despite the failure
    # Each job ran in a process of its own (a reused worker accumulates every job's memory).
    pids = [
        re.search(r"\(pid (\d+) ", (sweep_dir / "logs").joinpath(name).read_text()).group(1)
        for name in sorted(os.listdir(sweep_dir / "logs"))
    ]
    assert len(pids) == 5 and len(set(pids)) == 5, pids

    # Kill an evaluation after its first condition: its results are gone, one condition is saved.
    jobs, _ = plan(spec, sweep_dir)
    job = next(j for j in jobs if j.kind == "evaluate" and TASK1 in j.id)
    results_path = Path(job.out) / "results.json"
    before = read_results(results_path)
    results_path.unlink()
    condition = Condition(
        SamplerSpec(**job.params["conditions"][0]["spec"]), job.params["conditions"][0]["weight"]
    )
    run = types.SimpleNamespace(step=4)
    identity = condition_identity(run, before.env, job.params["seed"], job.params["episodes"], condition)
    marked = [EpisodeRecord(0, 0, episode_return=123.0, length=8)]  # a mark: resumed, not re-run
    description = EnvDescription(28, 5, before.max_episode_steps, before.success_timing)
    save_partial(results_path.parent / "partial", identity, marked, description, before.action_horizon, 1.0)

    second = run_sweep(spec, sweep_dir, num_cpus=1, progress=False)
    assert second.ran == [job.id] and len(second.skipped) == 3  # two trainings, the other evaluation
    after = read_results(results_path)
    assert after.results[0].return_mean == 123.0  # the saved condition was kept
    fresh, old = after.results[1], before.results[1]
    assert (fresh.episode_return, fresh.episode_success) == (old.episode_return, old.episode_success)
    assert not (results_path.parent / "partial").exists()


def job_group(sweep_dir):
    return next((sweep_dir / "runs").iterdir()).name


def test_sweep_spec_as_dataclass_is_json_ready():
    spec = parse_spec(toy_spec())
    json.dumps(dataclasses.asdict(spec), default=str)


def test_shipped_specs_load_by_name_and_unknown_names_are_one_line_errors(tmp_path):
    from qgf.experiments.spec import SHIPPED_SPECS, load_spec, shipped_spec_names

    shipped = {"baselines-demo", "cpu-study", "domains-cpu", "domains4-cpu", "paper-fig5"}
    assert shipped <= set(shipped_spec_names())
    by_name = load_spec("cpu-study")
    assert by_name == load_spec(SHIPPED_SPECS / "cpu-study.toml") and by_name.name == "cpu-study"
    for name in shipped_spec_names():  # every shipped spec is valid (its configs build at load time)
        assert load_spec(name).name == name
    listed = "cpu-study, domains-cpu, domains4-cpu, fair-cube, online-cube, paper-fig5"
    with pytest.raises(QGFError, match=listed):
        load_spec(tmp_path / "missing.toml")


def test_the_documented_plan_function_is_not_shadowed_by_a_submodule():
    import qgf.experiments.runner  # noqa: F401 - imports the job-graph module, as a sweep does
    from qgf.experiments import plan, run_sweep, write_report

    assert callable(plan) and plan.__name__ == "plan" and not isinstance(plan, type(qgf))
    assert run_sweep.__name__ == "run_sweep" and write_report.__name__ == "write_report"


# ------------------------------------------------------------------ per-sampler grids, N tuned as a weight


def test_sampler_tables_carry_their_own_weights_and_best_of_n_lists(tmp_path):
    from qgf.experiments.spec import agent_conditions, method_name

    samplers = [
        "none",
        "qgf",
        {"estimator": "none", "best_of_n": [4, 8]},
        {"estimator": "qgf", "weights": [2.5]},
    ]
    spec = parse_spec(toy_spec(agents=[{"name": "qgf", "samplers": samplers}]))
    conditions = agent_conditions(spec, spec.agents[0], 2, True)
    got = [(c.spec.label, c.weight) for c in conditions]
    # the evaluation's weights (0, 0.1) for the named qgf, its own for the table; BC and BFN once
    assert got == [("none", 0.0), ("qgf", 0.0), ("qgf", 0.1), ("bfn-4", 0.0), ("bfn-8", 0.0), ("qgf", 2.5)]
    agent = spec.agents[0]
    assert method_name(agent, "bfn-8") == "bfn-8" and method_name(agent, "bfn-8", True) == "bfn"
    assert method_name(agent, "qgf+bfn-16", True) == "qgf+bfn" and method_name(agent, "none", True) == "bc"
    for bad, message in (
        ({"estimator": "qgf", "weights": [-1]}, "numbers >= 0"),
        ({"estimator": "qgf", "weights": []}, "non-empty list"),
        ({"estimator": "none", "best_of_n": [0]}, "integers >= 1"),
    ):
        with pytest.raises(QGFError, match=message):
            parse_spec(toy_spec(agents=[{"name": "qgf", "samplers": [bad]}]))


def test_protocol_tunes_best_of_n_as_one_method(tmp_path, monkeypatch):
    """With tune_best_of_n the protocol chooses N like a weight: BFN's candidates are its N values
    and the final stage evaluates the chosen N under the method name 'bfn'."""
    from qgf.evaluation import results as results_module
    from qgf.experiments import jobs as jobs_module
    from qgf.guidance import SamplerSpec

    samplers = ["none", {"estimator": "none", "best_of_n": [2, 4]}]
    document = toy_spec(
        agents=[{"name": "qgf", "samplers": samplers}], protocol={"tune_tasks": [2], "tune_best_of_n": True}
    )
    spec = parse_spec(document)
    jobs, _ = plan(spec, tmp_path)
    tune = [job for job in jobs if job.stage == "tune"]
    assert [job.params["methods"] for job in tune] == [["bc", "bfn", "bfn"]]
    # fake finished tuning evaluations: N = 4 wins
    success = {"none": 0.1, "bfn-2": 0.2, "bfn-4": 0.6}

    def fake_read(path):
        job = next(job for job in tune if str(path).startswith(job.out))
        labels = [SamplerSpec(**c["spec"]).label for c in job.params["conditions"]]
        return types.SimpleNamespace(
            results=[
                types.SimpleNamespace(label=label, weight=c["weight"], success_rate=success[label])
                for label, c in zip(labels, job.params["conditions"], strict=True)
            ]
        )

    monkeypatch.setattr(results_module, "read_results", fake_read)
    monkeypatch.setattr(jobs_module, "job_done", lambda job: job.stage == "tune" or job.kind == "generate")
    jobs, _ = plan(spec, tmp_path)
    choices = json.loads((tmp_path / "protocol.json").read_text())["choices"]
    assert {c["method"]: c["spec"]["best_of_n"] for c in choices} == {"bc": 1, "bfn": 4}
    final = [job for job in jobs if job.stage == "final"]
    assert final and all(job.params["methods"] == ["bc", "bfn"] for job in final)
    assert all([c["spec"]["best_of_n"] for c in job.params["conditions"]] == [1, 4] for job in final)


def test_protocol_keeps_apart_samplers_that_share_a_label(tmp_path, monkeypatch):
    """GradStep's K (QGF Table 5 tunes (eta, K)) is not in the sampler's label: its candidates are
    told apart by their whole spec, so K = 1 and K = 3 are not pooled into one mean and the final
    stage evaluates the K that won."""
    from qgf.evaluation import results as results_module
    from qgf.experiments import jobs as jobs_module

    samplers = [{"estimator": "gradstep", "gradstep_steps": k, "weights": [0.01, 0.03]} for k in (1, 3)]
    spec = parse_spec(toy_spec(agents=[{"name": "qgf", "samplers": samplers}], protocol={"tune_tasks": [2]}))
    tune = [job for job in plan(spec, tmp_path)[0] if job.stage == "tune"]
    # K = 1 is better on average over its weights (0.5 against 0.35); K = 3 at 0.03 is the best candidate
    success = {(1, 0.01): 0.5, (1, 0.03): 0.5, (3, 0.01): 0.1, (3, 0.03): 0.6}

    def fake_read(path):
        job = next(job for job in tune if str(path).startswith(job.out))
        return types.SimpleNamespace(
            results=[
                types.SimpleNamespace(
                    label="gradstep",
                    weight=c["weight"],
                    success_rate=success[(c["spec"]["gradstep_steps"], c["weight"])],
                )
                for c in job.params["conditions"]
            ]
        )

    monkeypatch.setattr(results_module, "read_results", fake_read)
    monkeypatch.setattr(jobs_module, "job_done", lambda job: job.stage == "tune" or job.kind == "generate")
    jobs, _ = plan(spec, tmp_path)
    (choice,) = json.loads((tmp_path / "protocol.json").read_text())["choices"]
    assert choice["method"] == "gradstep" and len(choice["evidence"]) == 4
    assert (choice["spec"]["gradstep_steps"], choice["weight"]) == (3, 0.03)
    assert choice["tune_success"] == pytest.approx(0.6)
    final = [job for job in jobs if job.stage == "final"]
    assert final and all(
        [(c["spec"]["gradstep_steps"], c["weight"]) for c in job.params["conditions"]] == [(3, 0.03)]
        for job in final
    )


def test_each_agent_reaches_its_final_stage_when_its_own_tuning_is_done(tmp_path, monkeypatch):
    """A slow agent's tuning does not hold back another's final stage; a choice on the edge of its
    grid (here fql_alpha = 3, the grid's top, and qgf's weight 0.1, its top weight) is flagged."""
    from qgf.evaluation import results as results_module
    from qgf.experiments import jobs as jobs_module

    agents = [
        {"name": "qgf", "samplers": ["none", "qgf", "robustq"]},  # an add-on job among the tuning jobs
        {"name": "fql", "samplers": ["policy"], "grid": {"fql_alpha": [1, 3]}},
        {"name": "edp", "samplers": ["policy"]},
    ]
    spec = parse_spec(toy_spec(agents=agents, protocol={"tune_tasks": [2]}))
    tune = [job for job in plan(spec, tmp_path)[0] if job.stage == "tune"]
    assert any(job.kind == "addon" for job in plan(spec, tmp_path)[0])
    success = {("fql", 3.0): 0.5, ("fql", 1.0): 0.2, ("qgf", 0.1): 0.4}

    def fake_read(path):
        job = next(job for job in tune if str(path).startswith(job.out))
        alpha = job.params["point"].get("fql_alpha") if job.params["agent"] == "fql" else None
        rows = []
        for condition in job.params["conditions"]:
            label = "policy" if job.params["agent"] != "qgf" else condition["spec"]["estimator"]
            key = (job.params["agent"], float(alpha) if alpha is not None else condition["weight"])
            score = success.get(key, 0)
            rows.append(types.SimpleNamespace(label=label, weight=condition["weight"], success_rate=score))
        return types.SimpleNamespace(results=rows)

    monkeypatch.setattr(results_module, "read_results", fake_read)
    monkeypatch.setattr(
        jobs_module,
        "job_done",
        lambda job: (
            job.kind in ("generate", "addon") or (job.stage == "tune" and job.params["agent"] != "edp")
        ),
    )
    jobs, note = plan(spec, tmp_path)
    assert "edp" in note["waiting"] and "fql" not in note["waiting"]
    final_agents = {job.params["agent"] for job in jobs if job.stage == "final"}
    assert final_agents == {"qgf", "fql"}
    protocol = json.loads((tmp_path / "protocol.json").read_text())
    assert protocol["pending"] == ["edp"]
    by_method = {choice["method"]: choice for choice in protocol["choices"]}
    assert by_method["fql"]["point"] == "fql_alpha=3" and by_method["fql"]["on_grid_edge"] == ["fql_alpha"]
    assert by_method["qgf"]["weight"] == 0.1 and by_method["qgf"]["on_grid_edge"] == ["weight"]


def test_ready_jobs_start_evaluations_first_then_final_training_by_spec_order_then_longest_first():
    from qgf.experiments.jobs import Job
    from qgf.experiments.runner import submission_priority

    def job(job_id, kind, cost, agent="x"):
        params = {"agent": agent}
        return Job(id=job_id, kind=kind, stage="x", out="", params=params, deps=(), cpus=1, gpus=0, cost=cost)

    jobs = [
        job("train/a/t2/tune-seeds", "train", 500),
        job("train/b/t1", "train", 10),
        job("train/c/t1", "train", 90),
        job("evaluate/tune/a/t2/seed100", "evaluate", 5),
        job("addon/a/t2/seed100/robustq", "addon", 1),
    ]
    order = [j.id for j in sorted(jobs, key=submission_priority)]
    assert order == [
        "evaluate/tune/a/t2/seed100",
        "addon/a/t2/seed100/robustq",
        "train/c/t1",
        "train/b/t1",
        "train/a/t2/tune-seeds",
    ]
    # Among tuning runs, the agent listed first in the spec goes first, even when it is shorter.
    jobs = [
        job("train/late/t2/tune-seeds", "train", 900, agent="rebrac"),
        job("train/early/t4/tune-seeds", "train", 100, agent="fql"),
        job("train/early/t2/tune-seeds", "train", 200, agent="fql"),
        job("train/unlisted/t2/tune-seeds", "train", 5000, agent="gone"),
    ]
    order = [j.id for j in sorted(jobs, key=lambda j: submission_priority(j, {"fql": 0, "rebrac": 1}))]
    assert order == [
        "train/early/t2/tune-seeds",
        "train/early/t4/tune-seeds",
        "train/late/t2/tune-seeds",
        "train/unlisted/t2/tune-seeds",
    ]
