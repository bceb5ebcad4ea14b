"""Bad input that used to end in a traceback, a late failure or a silent choice (issue 21): each
case is one row of a table, run through `qgf.cli.main` in-process, and must end in one line
`qgf: error: ...` naming the problem (exit 2) before any work is done."""

from __future__ import annotations

import errno
import os

import pytest

from qgf.cli import main

TASK = "cube-single-play-singletask-task2-v0"
BASE_SPEC = f"""
name = "t"
preset = "tiny"
seeds = [0]
tasks = ["{TASK}"]

[[agents]]
name = "qgf"
samplers = ["none", "qgf"]

[evaluation]
episodes = 1
"""


def spec_with(**sections: str) -> str:
    """BASE_SPEC with lines added to its top (`top`), its agent (`agent`) or new tables (`extra`)."""
    text = BASE_SPEC
    if "top" in sections:
        text = sections["top"] + "\n" + text
    if "agent" in sections:
        text = text.replace('samplers = ["none", "qgf"]', sections["agent"])
    if "evaluation" in sections:
        text += sections["evaluation"] + "\n"
    return text + sections.get("extra", "")


@pytest.fixture
def paths(tmp_path, monkeypatch):
    """A file, a read-only directory (its mount reported read-only: the tests run as root, whom
    permission bits do not stop) and a fake run directory whose addons/ is a file."""
    import qgf.fileio

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    real = getattr(qgf.fileio, "_read_only_mount", lambda d: False)
    monkeypatch.setattr(
        qgf.fileio, "_read_only_mount", lambda d: d.startswith(str(read_only)) or real(d), raising=False
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "addons").write_text("not a directory")
    return {"file": str(a_file), "ro": str(read_only / "out"), "run": str(run), "tmp": str(tmp_path)}


def _spec(tmp: str, text: str) -> str:
    path = os.path.join(tmp, "spec.toml")
    with open(path, "w") as handle:
        handle.write(text)
    return path


def _plan(text: str):
    return lambda p: ["sweep", _spec(p["tmp"], text), "--plan", "--out", os.path.join(p["tmp"], "sw")]


GEN = ["data", "generate", "--env", "cube-single-play-v0", "--episodes", "1", "--no-progress"]
TRAIN = ["train", "--env", TASK, "--preset", "tiny", "--no-progress"]

# (case, argv from the paths fixture, words the one-line error must hold). Every sweep case has
# --plan, so that a check that stops working prints a plan instead of starting a study.
CASES = [
    ("evaluate --seed=-1", lambda p: ["evaluate", p["run"], "--seed=-1"], ["--seed must be >= 0"]),
    ("report --reps 0", lambda p: ["report", p["tmp"], "--reps", "0"], ["--reps must be >= 1"]),
    ("report --reps -5", lambda p: ["report", p["tmp"], "--reps", "-5"], ["--reps must be >= 1", "-5"]),
    (
        "sweep --num-cpus=-1",
        lambda p: ["sweep", "cpu-study", "--plan", "--num-cpus=-1"],
        ["--num-cpus must be >= 1"],
    ),
    (
        "sweep --num-cpus 0",
        lambda p: ["sweep", "cpu-study", "--plan", "--num-cpus", "0"],
        ["--num-cpus must be >= 1"],
    ),
    (
        "resources.num_cpus = -1",
        _plan(spec_with(extra="[resources]\nnum_cpus = -1\n")),
        ["resources.num_cpus must be a number >= 1"],
    ),
    (
        "resources.train_cpus = -1",
        _plan(spec_with(extra="[resources]\ntrain_cpus = -1\n")),
        ["resources.train_cpus must be a number >= 0"],
    ),
    ("sweep --out file", lambda p: ["sweep", "cpu-study", "--plan", "--out", p["file"]], ["is a file"]),
    ("sweep --out /proc", lambda p: ["sweep", "cpu-study", "--plan", "--out", "/proc/qgf"], ["under /proc"]),
    ("sweep --out read-only", lambda p: ["sweep", "cpu-study", "--plan", "--out", p["ro"]], ["not writable"]),
    ("train --out file", lambda p: [*TRAIN, "--out", p["file"]], ["is a file"]),
    ("train --out /proc", lambda p: [*TRAIN, "--out", "/proc/qgf/run"], ["under /proc"]),
    ("train --out read-only", lambda p: [*TRAIN, "--out", p["ro"]], ["not writable"]),
    ("evaluate --out file", lambda p: ["evaluate", p["run"], "--out", p["file"]], ["is a file"]),
    ("evaluate --out /proc", lambda p: ["evaluate", p["run"], "--out", "/proc/1/qgf"], ["under /proc"]),
    ("evaluate --out read-only", lambda p: ["evaluate", p["run"], "--out", p["ro"]], ["not writable"]),
    ("data generate --out file", lambda p: [*GEN, "--out", p["file"]], ["is a file"]),
    ("data generate --out /proc", lambda p: [*GEN, "--out", "/proc/qgf"], ["under /proc"]),
    ("data generate --out read-only", lambda p: [*GEN, "--out", p["ro"]], ["not writable"]),
    (
        "addon train, RUN/addons a file",
        lambda p: ["addon", "train", p["run"], "robustq", "--no-progress"],
        ["add-on directory", "is a file"],
    ),
    (
        "evaluation.seed = -1",
        _plan(spec_with(evaluation="seed = -1")),
        ["evaluation.seed must be an integer >= 0"],
    ),
    (
        "overrides.steps = 0",
        _plan(spec_with(top="overrides = { steps = 0 }")),
        ["steps = 0 trains nothing"],
    ),
    (
        "overrides.steps = -3",
        _plan(spec_with(top="overrides = { steps = -3 }")),
        ["steps must be >= 0, got -3"],
    ),
    (
        "qgf sampler on an agent without a flow",
        _plan(spec_with(agent='samplers = ["qgf"]').replace('name = "qgf"', 'name = "edp"')),
        ["guides a behaviour-cloning flow", "'edp'"],
    ),
    (
        "evaluation.max_episode_steps = 0",
        _plan(spec_with(evaluation="max_episode_steps = 0")),
        ["evaluation.max_episode_steps must be an integer >= 1"],
    ),
    (
        "data.episodes with data.dir",
        _plan(spec_with(extra='[data]\ndir = "/tmp"\nepisodes = 5\n')),
        ["data.episodes would be ignored"],
    ),
    (
        "unknown report.reference",
        _plan(spec_with(extra='[report]\nreference = "qfg"\n')),
        ["report.reference 'qfg'", "choose one of bc, qgf"],
    ),
]


@pytest.mark.parametrize("argv, words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line(argv, words, paths, capsys):
    assert main(argv(paths)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qgf: error: "), err
    for word in words:
        assert word in lines[0], lines[0]


def test_read_only_mounts_are_detected():
    import qgf.fileio

    assert qgf.fileio._read_only_mount("/proc/sys") in (True, False)  # never raises
    with pytest.raises(Exception, match="under /sys"):
        qgf.fileio.check_output_dir("/sys/kernel/qgf")


def test_the_spec_accepts_add_on_samplers_and_their_settings(tmp_path):
    import tomllib

    from qgf.experiments.spec import parse_spec

    text = spec_with(agent='samplers = ["qgf", "robustq"]', extra="[addons]\nrobustq = { steps = 7 }\n")
    spec = parse_spec(tomllib.loads(text))
    assert spec.addons == {"robustq": {"steps": 7}}
    bad = spec_with(extra="[addons]\nrobustq = { stpes = 7 }\n")
    with pytest.raises(Exception, match="addons.robustq.*'stpes'.*did you mean 'steps'"):
        parse_spec(tomllib.loads(bad))


def test_enospc_while_training_names_the_path(tmp_path, monkeypatch, capsys):
    import qgf.fileio

    data = _synthetic_data(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(qgf.fileio.os, "fsync", full)
    out = tmp_path / "run"
    argv = ["train", "--env", "cube-single-play-singletask-task1-v0", "--data", data, "--preset", "tiny"]
    assert main([*argv, "--steps", "2", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "free space" in err and str(out) in err, err


def _synthetic_data(tmp_path) -> str:
    from _data_fixtures import synthetic_arrays, write_npz

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_npz(data_dir / "cube-single-play-v0.npz", synthetic_arrays((30, 25), observation_dim=28))
    write_npz(data_dir / "cube-single-play-v0-val.npz", synthetic_arrays((12, 9), observation_dim=28, seed=1))
    return str(data_dir)


@pytest.fixture
def untrained_run(tmp_path):
    """An untrained tiny qgf run over synthetic cube-single data (as test_analysis builds one)."""
    from qgf import checkpoint
    from qgf.agents.qgf import QGFAgent
    from qgf.config import load_preset
    from qgf.data import load_dataset

    dataset = load_dataset("cube-single-play-v0", _synthetic_data(tmp_path))
    config = load_preset("tiny", {"flow_steps": 2, "horizon": 2})
    run_dir = tmp_path / "run"
    checkpoint.create_run(run_dir, config, obs_dim=28, action_dim=5, dataset=dataset.metadata())
    checkpoint.save_checkpoint(run_dir, QGFAgent.create(0, 28, 5, config))
    return run_dir


EVALUATE = ["--sampler", "qgf", "--weights", "0,0.5", "--episodes", "2", "--workers", "0", "--envs", "2"]
EVALUATE += ["--max-episode-steps", "6", "--no-progress"]


@pytest.mark.slow
def test_enospc_while_evaluating_names_the_path(untrained_run, tmp_path, monkeypatch, capsys):
    import qgf.fileio

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(qgf.fileio.os, "fsync", full)
    out = tmp_path / "eval"
    assert main(["evaluate", str(untrained_run), *EVALUATE, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "free space" in err and str(out / "partial") in err, err


@pytest.mark.slow
def test_a_killed_single_task_evaluation_resumes(untrained_run, tmp_path, monkeypatch):
    """Killed after its first condition, `qgf evaluate` re-run runs only the second one and gives
    the results of an uninterrupted evaluation."""
    import json

    import qgf.evaluation.resume as resume
    import qgf.evaluation.rollout

    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    assert main(["evaluate", str(untrained_run), *EVALUATE, "--out", str(fresh)]) == 0

    real_save = resume.save_partial

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save_partial", save_then_die)
    assert main(["evaluate", str(untrained_run), *EVALUATE, "--out", str(killed)]) == 130
    assert len(list((killed / "partial").glob("condition-*.json"))) == 1
    monkeypatch.setattr(resume, "save_partial", real_save)

    ran = []
    real_rollout = qgf.evaluation.rollout.rollout

    def counting(env, policy, conditions, *args, **kwargs):
        ran.append(len(conditions))
        return real_rollout(env, policy, conditions, *args, **kwargs)

    monkeypatch.setattr(resume, "rollout", counting)
    assert main(["evaluate", str(untrained_run), *EVALUATE, "--out", str(killed)]) == 0
    assert ran == [1]

    def outcome(directory):
        document = json.loads((directory / "results.json").read_text())
        keys = ("label", "weight", "episode_success", "episode_return", "episode_length")
        return [{key: r[key] for key in keys} for r in document["results"]]

    assert outcome(killed) == outcome(fresh)


def test_a_wrong_number_of_weights_is_one_line():
    """Bring-your-own-model API: weights must be a scalar or one per observation row."""
    import jax
    import jax.numpy as jnp

    from qgf.errors import QGFError
    from qgf.guidance import SamplerSpec, make_sampler, sample

    def velocity(obs, a, t):
        return -a

    def q(obs, a):
        return -jnp.sum(a**2, axis=-1)

    obs, key, spec = jnp.zeros((2, 3)), jax.random.PRNGKey(0), SamplerSpec("qgf", steps=2)
    with pytest.raises(QGFError, match=r"weight has shape \(3,\) for 2 observation rows"):
        sample(velocity, q, obs, key, jnp.ones(3), spec, action_dim=4)
    with pytest.raises(QGFError, match=r"one weight per row \(shape \(2,\)\)"):
        make_sampler(velocity, q, 4, spec)(obs, key, jnp.ones((2, 2)))
    assert sample(velocity, q, obs, key, jnp.ones(2), spec, action_dim=4).shape == (2, 4)


def test_the_goal_conditioned_add_on_hint_does_not_point_to_a_refusing_command():
    import types

    from qgf.addons.base import load_addon
    from qgf.errors import QGFError

    run = types.SimpleNamespace(path="runs/puzzle", config=types.SimpleNamespace(goal_conditioned=True))
    with pytest.raises(QGFError) as error:
        load_addon(run, "robustq")
    assert "goal-conditioned" in str(error.value) and "qgf addon train" not in str(error.value)
    assert "sampler that needs no add-on" in str(error.value)
