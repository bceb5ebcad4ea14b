"""A sweep's report reads only the jobs its spec.json expands to, and add-on samplers get their
add-on's training as a job of the graph (issue 21, items 2 and 4). Synthetic sweep directories: no
Ray, no training."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import tomllib
from pathlib import Path

import pytest

from qgf.errors import QGFError
from qgf.experiments.jobs import job_done, plan, spec_from_json
from qgf.experiments.report import write_report
from qgf.experiments.spec import parse_spec
from test_experiments_report import EPISODES, write_eval

TASK = "cube-single-play-singletask-task2-v0"
SPEC = f"""
name = "t"
preset = "tiny"
seeds = [0, 1]
tasks = ["{TASK}"]

[[agents]]
name = "qgf"
samplers = ["none", "qgf"]

[evaluation]
episodes = {EPISODES}
weights = [0.0, 0.1]
"""


def sweep_with_spec(tmp_path, text=SPEC):
    spec = parse_spec(tomllib.loads(text), source="t.toml")
    (tmp_path / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), default=str))  # as run_sweep
    return spec


def put(job_or_dir, tmp_path, seed, conditions, group="g", stage="sweep"):
    """A synthetic results.json (test_experiments_report.write_eval) moved into `job_or_dir`."""
    written = write_eval(tmp_path / "scratch", stage, group, TASK, seed, conditions)
    target = getattr(job_or_dir, "out", job_or_dir)
    os.makedirs(target, exist_ok=True)
    os.replace(written, os.path.join(target, "results.json"))
    return os.path.join(target, "results.json")


def per_task(tmp_path) -> dict[str, float]:
    with open(tmp_path / "report" / "per_task.csv") as handle:
        return {row["method"]: float(row["mean"]) for row in csv.DictReader(handle)}


def test_the_report_reads_only_the_jobs_of_its_spec(tmp_path, capsys):
    from qgf.cli import main

    spec = sweep_with_spec(tmp_path)
    jobs = [job for job in plan(spec, tmp_path)[0] if job.kind == "evaluate"]
    assert [job.params["run_seed"] for job in jobs] == [0, 1]
    group = jobs[0].params["group"]
    bc = {0: 2, 1: 4}
    qgf = {0: {0.0: 3, 0.1: 5}, 1: {0.0: 1, 0.1: 7}}
    for job in jobs:
        seed = job.params["run_seed"]
        conditions = [("none", "none", 0.0, 1, bc[seed])]
        conditions += [("qgf", "qgf", w, 1, s) for w, s in qgf[seed].items()]
        put(job, tmp_path, seed, conditions, group=group)
    # stale: the same run at other evaluation settings (another hash) and an earlier spec's agent
    stale_hash = os.path.join(os.path.dirname(jobs[0].out), "seed0-0ldhash0")
    put(stale_hash, tmp_path, 0, [("qgf", "qgf", 0.1, 1, EPISODES)], group=group)
    old_agent = tmp_path / "evals" / "sweep" / "fql-12345678" / TASK / "seed0-abcdef12"
    put(old_agent, tmp_path, 0, [("policy", "policy", 0.0, 1, EPISODES)], group="fql-12345678")

    assert main(["report", str(tmp_path), "--reps", "20"]) == 0
    out = capsys.readouterr().out
    assert "qgf report: ignored 2 evaluations" in out
    means = per_task(tmp_path)
    # hand-computed means over the two seeds' planned results only (stale ones would give 1.0)
    assert means == pytest.approx(
        {
            "bc": (2 + 4) / 2 / EPISODES,
            "qgf@0": (3 + 1) / 2 / EPISODES,
            "qgf@0.1": (5 + 7) / 2 / EPISODES,
        }
    )
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Ignored evaluations" in text
    ignored = (tmp_path / "report" / "ignored.txt").read_text().splitlines()
    assert sorted(ignored) == sorted(
        str((path / "results.json").relative_to(tmp_path))
        for path in (tmp_path / "evals" / "sweep" / group / TASK / "seed0-0ldhash0", old_agent)
    )
    assert all(f"`{path}`" in text for path in ignored)


def set_run_step(path, step):
    document = json.loads(open(path).read())
    document["extra"]["run_step"] = step
    with open(path, "w") as handle:
        json.dump(document, handle)


def test_an_evaluation_of_a_shorter_run_is_stale_and_reruns(tmp_path):
    """A spec that trains its runs longer keeps their names (they resume), so an evaluation of
    the old last checkpoint is not done: it is planned again, evaluates the new step, and the
    report leaves it out meanwhile. Results that record no step (older sweeps) stay done."""
    from qgf.experiments import runner

    spec = sweep_with_spec(tmp_path)
    jobs = [job for job in plan(spec, tmp_path)[0] if job.kind == "evaluate"]
    steps = spec.overrides.get("steps") or jobs[0].params["run_step"]
    assert all(job.params["run_step"] == steps for job in jobs)
    group = jobs[0].params["group"]
    paths = [
        put(job, tmp_path, job.params["run_seed"], [("none", "none", 0.0, 1, 1 + 2 * i)], group=group)
        for i, job in enumerate(jobs)
    ]
    assert all(job_done(job) for job in jobs)  # no step recorded: accepted
    set_run_step(paths[0], steps)
    set_run_step(paths[1], steps // 2)  # the run was evaluated before the spec doubled its steps
    assert job_done(jobs[0]) and not job_done(jobs[1])
    write_report(tmp_path, reps=20)
    assert per_task(tmp_path) == pytest.approx({"bc": 1 / EPISODES})  # seed 0's result only
    assert (tmp_path / "report" / "ignored.txt").read_text().split() == [
        str(Path(paths[1]).relative_to(tmp_path))
    ]

    loaded = []  # the rerun loads the run at the job's step, not whatever checkpoint is latest
    monkey = pytest.MonkeyPatch()
    monkey.setattr("qgf.checkpoint.load_run", lambda path, step=None: loaded.append((path, step)) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        runner.execute(jobs[1])
    monkey.undo()
    assert loaded == [(jobs[1].params["run"], steps)]


def test_two_results_for_one_method_task_and_seed_are_an_error(tmp_path):
    """Without a spec.json (a hand-made directory) every results.json is read: a second one for
    the same (method, task, seed) is an error naming both files, never a silent choice."""
    first = put(
        tmp_path / "evals" / "sweep" / "g" / TASK / "seed0-aaaa", tmp_path, 0, [("none", "none", 0, 1, 1)]
    )
    second = put(
        tmp_path / "evals" / "sweep" / "g" / TASK / "seed0-bbbb", tmp_path, 0, [("none", "none", 0, 1, 9)]
    )
    with pytest.raises(QGFError, match="two evaluations of bc") as error:
        write_report(tmp_path, reps=20)
    assert first in str(error.value) and second in str(error.value)


def test_the_recorded_spec_round_trips(tmp_path):
    spec = sweep_with_spec(tmp_path)
    again = spec_from_json(json.loads((tmp_path / "spec.json").read_text()))
    assert [job.id for job in plan(again, tmp_path)[0]] == [job.id for job in plan(spec, tmp_path)[0]]
    assert again == spec


def test_add_on_samplers_schedule_their_add_on_training(tmp_path):
    text = SPEC.replace('samplers = ["none", "qgf"]', 'samplers = ["qgf", "robustq", "qgf-distill"]')
    text += "\n[addons]\nrobustq = { steps = 7 }\n"
    spec = sweep_with_spec(tmp_path, text)
    jobs, _ = plan(spec, tmp_path)
    by_id = {job.id: job for job in jobs}
    addons = [job for job in jobs if job.kind == "addon"]
    assert sorted((job.params["name"], job.params["steps"]) for job in addons) == [
        ("distill", 5000),
        ("distill", 5000),
        ("robustq", 7),
        ("robustq", 7),
    ]
    train = next(job for job in jobs if job.kind == "train")
    for job in addons:
        assert job.deps == (train.id,)
        assert job.out == os.path.join(job.params["run"], "addons", job.params["name"])
    for evaluate in (job for job in jobs if job.kind == "evaluate"):
        seed = f"seed{evaluate.params['run_seed']}"
        needed = {dep for dep in evaluate.deps if by_id[dep].kind == "addon"}
        assert needed == {job.id for job in addons if job.params["run"].endswith(seed)}
        assert train.id in evaluate.deps
    # the order of the graph: every job after its dependencies
    position = {job.id: index for index, job in enumerate(jobs)}
    assert all(position[dep] < position[job.id] for job in jobs for dep in job.deps)
    # done-check: an add-on checkpoint at the planned step
    robustq = next(job for job in addons if job.params["name"] == "robustq")
    assert not job_done(robustq)
    from qgf import checkpoint

    path = checkpoint.checkpoint_path(robustq.out, 7)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    path.with_suffix(".json").write_text("{}")
    assert job_done(robustq)
