"""Sweeps with an online phase: the [online] table's checks, the online jobs of the job graph, a
tiny sweep killed in the middle of an online job and resumed, the Fig. 2 report and its
statistics against hand numbers."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from helpers import run_killed
from qgf.errors import QGFError

TASK = "cube-single-play-singletask-task1-v0"
TINY = {"batch_size": 16, "actor_hidden_dims": [16, 16], "critic_hidden_dims": [16, 16], "flow_steps": 2}
TINY |= {"steps": 4, "log_every": 10, "ckpt_every": 100, "keep_checkpoints": 1, "horizon": 2}


def _document(data_dir="data", **online):
    return {
        "preset": "tiny",
        "seeds": [0, 1],
        "tasks": [TASK],
        "overrides": TINY,
        "data": {"dir": str(data_dir)},
        "agents": [
            {"name": "qgf", "samplers": ["qgf"]},  # not fine-tuned: the frozen reference
            {"name": "fql", "samplers": ["policy"]},
            {"name": "rlpd", "samplers": ["policy"], "overrides": {"steps": 0}},  # online only
        ],
        "evaluation": {"episodes": 1, "weights": [0.1], "workers": 0, "num_envs": 1, "max_episode_steps": 8},
        "online": {
            "steps": 40,
            "eval_every": 20,
            "eval_episodes": 1,
            "max_episode_steps": 10,
            "agents": ["fql", "rlpd"],
            "by_agent": {"rlpd": {"sampling": "symmetric"}},
            **online,
        },
    }


def test_online_table_is_checked_with_one_line_errors():
    from qgf.experiments.spec import parse_spec

    spec = parse_spec(_document())
    assert spec.online["log_every"] == 20 and spec.online["ckpt_every"] == 20  # gcd(20, 1000), eval_every
    bad = [
        ({"stpes": 5}, "unknown key.*'stpes'.*did you mean 'steps'"),
        ({"sampling": "half"}, "online.sampling must be 'union' or 'symmetric'"),
        ({"utd": 0}, "online.utd must be an integer >= 1"),
        ({"eval_seed": 1000}, "online.eval_seed.*1000"),
        ({"eval_every": 30, "log_every": 20}, "multiple of online.log_every"),
        ({"agents": ["fql", "rlpd", "sac"]}, r"online.agents names \[.sac.\]"),
        ({"by_agent": {"qgf": {"utd": 2}}}, "by_agent.qgf: not among online.agents"),
        ({"by_agent": {"rlpd": {"steps": 2}}}, "by_agent.rlpd must be a table of sampling, utd, weight"),
    ]
    for change, message in bad:
        with pytest.raises(QGFError, match=message):
            parse_spec(_document(**change))
    document = _document()
    del document["online"]["steps"]
    with pytest.raises(QGFError, match=r"\[online\] needs steps"):
        parse_spec(document)
    # 0 offline steps only for an agent the online phase fine-tunes, and never a frozen flow
    with pytest.raises(QGFError, match="agents\\[2\\].*steps = 0 trains nothing"):
        parse_spec(_document(agents=["fql"]))
    document = _document(agents=["qgf", "fql", "rlpd"])
    document["agents"][0]["overrides"] = {"steps": 0}
    with pytest.raises(QGFError, match="'qgf' trains 0 offline steps.*untrained flow"):
        parse_spec(document)


def test_online_jobs_follow_their_train_jobs_with_directories_from_the_settings(tmp_path):
    from qgf.experiments.jobs import plan
    from qgf.experiments.runner import format_plan
    from qgf.experiments.spec import parse_spec

    jobs, _ = plan(parse_spec(_document()), tmp_path)
    by_id = {job.id: job for job in jobs}
    online = [job for job in jobs if job.kind == "online"]
    assert len(online) == 4  # fql and rlpd x 2 seeds; qgf is not fine-tuned
    for job in online:
        (train,) = job.deps
        assert by_id[train].kind == "train" and job.params["run"].startswith(by_id[train].out)
        assert job.out.startswith(str(tmp_path / "online")) and job.stage == "online" and job.cost > 0
        assert job.params["settings"]["seed"] == job.params["run_seed"]  # the run's own seed
    sampling = {job.params["agent"]: job.params["settings"]["sampling"] for job in online}
    assert sampling == {"fql": "union", "rlpd": "symmetric"}
    # the online-only agent: a train job of 0 steps (its run directories) and no evaluation
    assert not [job for job in jobs if job.kind == "evaluate" and job.params["agent"] == "rlpd"]
    assert [job.params["config"]["steps"] for job in jobs if job.id.startswith("train/rlpd")] == [0]
    # schedule settings keep the directories (more steps resume); what a step computes changes them
    outs = {job.id: job.out for job in online}
    longer, _ = plan(parse_spec(_document(steps=80, eval_every=40)), tmp_path)
    assert {job.id: job.out for job in longer if job.kind == "online"} == outs
    other, _ = plan(parse_spec(_document(utd=2)), tmp_path)
    assert not set(job.out for job in other if job.kind == "online") & set(outs.values())
    assert "online" in format_plan(jobs, {})


@pytest.mark.slow
def test_tiny_sweep_with_an_online_phase_killed_and_resumed_then_reported(tmp_path, monkeypatch):
    import dataclasses

    from qgf import checkpoint as ckpt
    from qgf import cli
    from qgf.data import generate
    from qgf.evaluation import curve as curves
    from qgf.experiments.jobs import job_done, plan
    from qgf.experiments.runner import execute
    from qgf.experiments.spec import parse_spec
    from qgf.online import online_dir

    data = tmp_path / "data"
    generate(
        "cube-single-play-v0", data, episodes=2, val_episodes=1, episode_length=30, workers=1, progress=False
    )
    spec = parse_spec(_document(data))
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), default=str))  # as run_sweep
    jobs, _ = plan(spec, sweep)
    for job in jobs:  # everything but the online jobs
        if job.kind != "online":
            execute(job)
    online = [job for job in jobs if job.kind == "online"]
    killed = next(job for job in online if job.params["agent"] == "fql" and job.params["run_seed"] == 0)
    straight = dataclasses.replace(killed, out=str(tmp_path / "straight"))
    execute(straight)

    # a kill right after the point at env step 20 was written
    def after_20(run_dir, point, settings=None):
        return point["env_steps"] == 20

    run_killed(monkeypatch, curves, "append_point", lambda: execute(killed), after=after_20)
    directory = online_dir(killed.out)
    assert [step for step, _ in ckpt.list_checkpoints(directory)] == [20] and not job_done(killed)

    from qgf.evaluation import run as evaluation_run

    # after the final checkpoint, before its point
    def at_the_end(run, *args, **kwargs):
        return run.step == 4 + 40

    run_killed(monkeypatch, evaluation_run, "evaluate_run", lambda: execute(killed), before=at_the_end)
    assert ckpt.latest_step(directory) == 40 and not job_done(killed)  # the curve lacks its last point
    for job in jobs:  # what a re-run sweep does: the jobs not done, each as its Ray task runs it
        if not job_done(job):
            execute(job)
    assert all(job_done(job) for job in jobs)

    def points(run_dir):
        return [
            {k: v for k, v in p.items() if k != "train_seconds"}
            for p in curves.read_curve(online_dir(run_dir))["points"]
        ]

    resumed, reference = points(killed.out), points(straight.out)
    assert [p["env_steps"] for p in resumed] == [0, 20, 40]
    assert resumed == reference  # 20 is an episode end: the uninterrupted phase's points (CPU)
    from helpers import equal_trees

    assert equal_trees(ckpt.load_run(killed.out).agent.params, ckpt.load_run(straight.out).agent.params)
    rlpd = next(job for job in online if job.params["agent"] == "rlpd")
    assert ckpt.load_run(rlpd.out).step == 40  # 0 offline steps, then 40 updates at UTD 1

    assert cli.main(["report", str(sweep), "--reps", "20"]) == 0
    report = sweep / "report"
    assert (report / "online_curves.png").stat().st_size > 0
    rows = list(csv.DictReader(open(report / "online_curves.csv")))
    online_rows = [r for r in rows if r["kind"] == "online"]
    assert {r["method"] for r in online_rows} == {"fql online", "rlpd online"}
    assert {int(r["env_steps"]) for r in online_rows} == {0, 20, 40}
    assert all(float(r["env_steps_per_s"]) > 0 for r in online_rows if r["env_steps"] != "0")
    (frozen,) = [r for r in rows if r["kind"] == "frozen offline"]
    assert frozen["method"] == "qgf@0.1 offline" and frozen["seeds"] == "2"
    assert "Online phase (QAM Fig. 2 view)" in (report / "report.md").read_text()

    # a sweep of online-only runs (RLPD alone) has no offline evaluation and still reports
    import shutil

    alone = tmp_path / "rlpd-alone"
    document = _document(data, agents=["rlpd"])
    document["agents"] = [agent for agent in document["agents"] if agent["name"] == "rlpd"]
    spec = parse_spec(document)
    alone.mkdir()
    (alone / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), default=str))
    for job in plan(spec, alone)[0]:  # the same settings: the first sweep's directories, copied
        shutil.copytree(Path(job.out.replace(str(alone), str(sweep))), job.out)
    assert all(job_done(job) for job in plan(spec, alone)[0])
    assert cli.main(["report", str(alone), "--reps", "20"]) == 0
    rows = list(csv.DictReader(open(alone / "report" / "online_curves.csv")))
    assert {r["method"] for r in rows} == {"rlpd online"} and {r["kind"] for r in rows} == {"online"}
    assert (alone / "report" / "online_curves.png").stat().st_size > 0
    assert "Online phase (QAM Fig. 2 view)" in (alone / "report" / "report.md").read_text()


def test_online_curve_statistics_against_hand_numbers():
    from qgf.experiments.report.curves import (
        ONLINE_COLUMNS,
        frozen_references,
        online_csv_rows,
        online_curve_table,
    )

    rows = []
    for seed, successes in enumerate([[0.0, 0.4, 0.6], [0.2, 0.4, 1.0], [0.1, 0.7, 0.8]]):
        for (env_steps, seconds), success in zip([(0, 0.0), (10, 2.0), (20, 5.0)], successes, strict=True):
            rows.append(
                {"task": "t1", "method": "fql online", "seed": seed, "step": 100 + env_steps}
                | {"env_steps": env_steps, "success": success, "ci_low": 0.0, "ci_high": 1.0}
                | {"train_seconds": seconds + seed if env_steps else 0.0}
            )
    table = {r["env_steps"]: r for r in online_curve_table(rows)}
    last = table[20]
    values = np.array([0.6, 1.0, 0.8])
    # Student's t, 2 degrees of freedom: t_{0.975, 2} = 4.302653 (tables)
    half = 4.302653 * values.std(ddof=1) / math.sqrt(3)
    assert last["success"] == pytest.approx(0.8)
    assert last["ci_low"] == pytest.approx(0.8 - half) and last["ci_high"] == 1.0  # clipped to [0, 1]
    assert last["env_steps_per_s"] == pytest.approx(20 / 6.0)  # seed-mean seconds (5 + 6 + 7) / 3
    assert table[0]["env_steps_per_s"] is None and table[0]["success"] == pytest.approx(0.1)
    # references: per task, and over tasks each seed's mean first
    frozen = [
        {"task": task, "method": "qgf offline", "seed": seed, "success": success}
        for task, per_seed in (("t1", [0.2, 0.4]), ("t2", [0.6, 0.0]))
        for seed, success in enumerate(per_seed)
    ]
    references = {r["task"]: r for r in frozen_references(frozen)}
    assert references["t1"]["success"] == pytest.approx(0.3)
    seed_means = np.array([0.4, 0.2])  # (0.2 + 0.6) / 2, (0.4 + 0.0) / 2
    half = 12.706205 * seed_means.std(ddof=1) / math.sqrt(2)  # t_{0.975, 1}
    assert references["all"]["success"] == pytest.approx(0.3)
    assert references["all"]["ci_low"] == 0.0 and references["all"]["ci_high"] == 1.0
    assert 0.3 - half < 0 and 0.3 + half > 1  # hence both clipped
    csv_rows = online_csv_rows(list(table.values()), list(references.values()))
    assert [r["kind"] for r in csv_rows].count("frozen offline") == 3
    assert all(tuple(r) == ONLINE_COLUMNS for r in csv_rows)  # one header for both kinds


def test_shipped_online_cube_spec_plans_every_method(tmp_path):
    from qgf.experiments.jobs import plan
    from qgf.experiments.spec import load_spec

    jobs, _ = plan(load_spec("online-cube"), tmp_path)
    online = {job.params["agent"] for job in jobs if job.kind == "online"}
    assert online == {"qgf-td", "fql", "qam-edit", "rlpd"}  # qgf (iql) stays the frozen reference
    assert sum(job.kind == "online" for job in jobs) == 12 and 0 < sum(job.cost for job in jobs) < 5 * 3600
