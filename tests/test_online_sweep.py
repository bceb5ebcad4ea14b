"""Sweeps with an online phase: the [online] table's checks, the online jobs of the job graph."""

import pytest

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
