"""Learning curves: the curve file format, the training loop's evaluation points (pinned
checkpoints, training seconds, resume after a kill), the plateau rule on hand-made curves."""

import csv
import json

import numpy as np
import pytest

from helpers import make_dataset, run_killed, small_config
from qgf import checkpoint as ckpt
from qgf.errors import QGFError
from qgf.evaluation import curve as curves
from qgf.training import train, train_seeds

SETTINGS = curves.curve_settings(4, 2, 3000, ["qgf@0.03"])


def result(label="qgf", success=0.5, weight=0.03):
    return {
        "label": label,
        "estimator": label,
        "weight": weight,
        "best_of_n": 1,
        "success_rate": success,
        "ci_low": 0.1,
        "ci_high": 0.9,
        "episodes": 2,
        "return_mean": -3.0,
    }


def point(step, success=0.5, seconds=1.0):
    return {"step": step, "env_steps": None, "train_seconds": seconds, "results": [result(success=success)]}


# ------------------------------------------------------------------ the file format


def test_points_are_sorted_replaced_at_a_repeated_step_and_mirrored_in_csv(tmp_path):
    assert curves.read_curve(tmp_path) is None
    with pytest.raises(QGFError, match="start the curve"):
        curves.append_point(tmp_path, point(4))
    curves.start_curve(tmp_path, SETTINGS)
    curves.append_point(tmp_path, point(8, 0.25, 2.0))
    curves.append_point(tmp_path, point(4, 0.5, 1.0))
    curves.append_point(tmp_path, point(8, 0.75, 2.5))  # the same step again: replaces
    document = curves.read_curve(tmp_path)
    assert [p["step"] for p in document["points"]] == [4, 8]
    assert document["points"][1]["results"][0]["success_rate"] == 0.75
    assert json.loads((tmp_path / "curve.json").read_text())["version"] == 1
    with open(tmp_path / "curve.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["step"], r["success_rate"], r["train_seconds"], r["env_steps"]) for r in rows] == [
        ("4", "0.5", "1.0", ""),
        ("8", "0.75", "2.5", ""),
    ]


def test_a_curve_written_before_a_sampler_field_existed_resumes(tmp_path):
    """fair-cube's FQL runs started before SamplerSpec had `gate`: their curve.json lacks it, and
    resuming with today's settings (gate 0.0, its default) must continue the curve; a gate that is
    not the default is another setting."""
    spec = {"estimator": "qgf", "steps": 10, "best_of_n": 1, "clip_hat": True}
    old = {**SETTINGS, "specs": [{"spec": spec, "weight": 0.0}]}
    curves.start_curve(tmp_path, old)
    today = {**SETTINGS, "specs": [{"spec": {**spec, "clip_jacobian": False, "gate": 0.0}, "weight": 0.0}]}
    assert curves.start_curve(tmp_path, today)["settings"] == old  # the stored settings are kept
    gated = {**SETTINGS, "specs": [{"spec": {**spec, "gate": 0.5}, "weight": 0.0}]}
    with pytest.raises(QGFError, match="specs .* -> .*'gate': 0.5"):
        curves.start_curve(tmp_path, gated)


def test_other_settings_bad_points_and_choosing_seeds_are_one_line_errors(tmp_path):
    curves.start_curve(tmp_path, SETTINGS)
    curves.start_curve(tmp_path, dict(SETTINGS))  # the same settings: fine
    with pytest.raises(QGFError, match="eval_every 4 -> 5.*move curve.json aside"):
        curves.start_curve(tmp_path, {**SETTINGS, "eval_every": 5})
    with pytest.raises(QGFError, match="integer step"):
        curves.append_point(tmp_path, {"step": "4", "results": []})
    with pytest.raises(QGFError, match="needs results with"):
        curves.append_point(tmp_path, {"step": 4, "results": [{"label": "qgf"}]})
    for seed in (1000, 2000):
        with pytest.raises(QGFError, match=f"seed {seed} is the protocol"):
            curves.curve_settings(4, 2, seed, [])
    with pytest.raises(QGFError, match="eval_every must be an integer >= 1"):
        curves.curve_settings(0, 2, 3000, [])
    (tmp_path / "curve.json").write_text("{")
    with pytest.raises(QGFError, match="not readable JSON"):
        curves.read_curve(tmp_path)


def test_curve_steps_are_the_multiples_and_the_last_step():
    assert curves.curve_steps(4, 10, 10) == [4, 8, 10]
    assert curves.curve_steps(4, 9, 10) == [4, 8]
    assert curves.curve_steps(5, 10, 10) == [5, 10]
    assert curves.curve_steps(20, 10, 10) == [10]


# ------------------------------------------------------------------ the loop's evaluation points


class Recorder:
    """A CurveHook that records what the loop hands it (no env): (run dir name, step, seconds)."""

    def __init__(self, every, kill_after=None):
        self.every, self.final, self.kill_after = every, None, kill_after
        self.calls, self.caught_up = [], []

    def until(self, final):
        self.final = final
        return self

    def catch_up(self, directories, step, total):
        self.caught_up.append((step, total))

    def __call__(self, directories, step, states, seconds):
        for directory, state, spent in zip(directories, states, seconds, strict=True):
            assert int(state.step) == step
            self.calls.append((directory.name, step, spent))
        if step == self.kill_after:
            raise KeyboardInterrupt


SCHEDULE = {"steps": 10, "log_every": 10, "ckpt_every": 100, "keep_checkpoints": 1}


def test_points_land_on_multiples_and_the_end_with_pinned_checkpoints_and_resume(tmp_path):
    config, data = small_config(**SCHEDULE), make_dataset()
    hook = Recorder(4, kill_after=4)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", dataset=data, progress=False, curve=hook)
    assert [c[1] for c in hook.calls] == [4]
    assert ckpt.is_pinned(tmp_path / "run", 4)
    hook.kill_after = None
    train(config, tmp_path / "run", dataset=data, progress=False, curve=hook)
    assert [c[1] for c in hook.calls] == [4, 8, 10]  # no duplicate, none missing
    assert hook.caught_up == [(0, 10), (4, 10)]
    # keep_checkpoints=1 prunes nothing of the curve's: 4, 8 and 10 are pinned
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [4, 8, 10]
    seconds = [c[2] for c in hook.calls]
    assert all(s > 0 for s in seconds) and seconds == sorted(seconds)
    assert ckpt.train_seconds_at(tmp_path / "run", 10) == pytest.approx(seconds[-1])
    # without a curve the pins hold too, and unpinned checkpoints are pruned as before
    train(
        small_config(**{**SCHEDULE, "steps": 14, "ckpt_every": 2}),
        tmp_path / "run",
        dataset=data,
        progress=False,
    )
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [4, 8, 10, 14]


def test_each_seed_of_a_stack_gets_its_points(tmp_path):
    hook = Recorder(6)
    dirs = [tmp_path / "seed0", tmp_path / "seed1"]
    train_seeds(small_config(**SCHEDULE), [0, 1], dirs, dataset=make_dataset(), progress=False, curve=hook)
    assert sorted((name, step) for name, step, _ in hook.calls) == [
        ("seed0", 6),
        ("seed0", 10),
        ("seed1", 6),
        ("seed1", 10),
    ]
    for directory in dirs:
        assert [s for s, _ in ckpt.list_checkpoints(directory)] == [6, 10]
        assert ckpt.is_pinned(directory, 6) and np.isfinite(ckpt.train_seconds_at(directory, 6))


# ------------------------------------------------------------------ the plateau rule and the curve statistics


def seed_curve(per_seed, half_width=0.05):
    """A curve from per-seed success lists (one list per seed, one value per 1000 steps)."""
    points = []
    for i, values in enumerate(zip(*per_seed, strict=True)):
        mean = sum(values) / len(values)
        points.append(
            {
                "step": 1000 * (i + 1),
                "success": mean,
                "ci_low": mean - half_width,
                "ci_high": mean + half_width,
                "by_seed": dict(enumerate(values)),
            }
        )
    return points


def test_plateau_rule_on_hand_made_curves():
    from qgf.experiments.report.curves import plateau

    t2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom

    def interval(values):
        mean = sum(values) / 3
        sd = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
        return mean, mean - t2 * sd / 3**0.5, mean + t2 * sd / 3**0.5

    # Rising steadily: the last two points (k = 6 // 3) against the two before do not overlap.
    base = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    rising = seed_curve([base, [v + 0.02 for v in base], [v + 0.04 for v in base]])
    found = plateau(rising)
    assert (found["reached"], found["step"], found["window"]) == (False, 6000, 2)
    assert found["level"] == pytest.approx(0.47)  # seeds' window means 0.45, 0.47, 0.49

    # Rises, then noisy: window levels (0.5, 0.5, 0.425) and (0.5, 0.4, 0.45) overlap.
    noisy = seed_curve(
        [[0.0, 0.2, 0.4, 0.6, 0.4, 0.6], [0.0, 0.0, 0.4, 0.4, 0.6, 0.4], [0.0, 0.1, 0.4, 0.5, 0.35, 0.5]]
    )
    found = plateau(noisy)
    mean, low, high = interval([0.5, 0.5, 0.425])
    assert (found["level"], found["level_low"], found["level_high"]) == pytest.approx((mean, low, high))
    # From the third point on, no seed-mean (0.4, 0.5, 0.45, 0.5) falls below low = 0.367.
    assert (found["reached"], found["step"], found["index"]) == (True, 3000, 2)

    # A collapse after a peak is not a plateau.
    peak = [0.6, 0.6, 0.6, 0.6, 0.1, 0.1]
    assert plateau(seed_curve([peak, peak, [v + 0.02 for v in peak]]))["reached"] is False

    # A final-window point below the level's CI: the plateau starts at the window, not earlier.
    wobble = [0.5, 0.5, 0.3, 0.7, 0.3, 0.7]
    found = plateau(seed_curve([wobble] * 3))
    assert (found["reached"], found["index"], found["level"]) == (True, 4, pytest.approx(0.5))

    one = plateau(seed_curve([[0.4]], half_width=0.1))  # one point: nothing to compare
    assert one["reached"] is False and (one["level_low"], one["level_high"]) == pytest.approx((0.3, 0.5))


def test_seed_intervals_and_the_curve_over_tasks_against_hand_numbers():
    from qgf.experiments.report.curves import curve_table, plateau_table, seed_interval

    t_975_2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom
    low, high = seed_interval([0.2, 0.4, 0.6])
    assert (low, high) == pytest.approx(
        (max(0.0, 0.4 - t_975_2 * 0.2 / 3**0.5), min(1.0, 0.4 + t_975_2 * 0.2 / 3**0.5))
    )
    assert seed_interval([0.5], (0.2, 0.8)) == (0.2, 0.8)  # one seed: its own episodes' interval
    rows = [
        {
            "task": task,
            "method": "qgf@0.03",
            "seed": seed,
            "step": step,
            "success": value,
            "ci_low": 0.0,
            "ci_high": 1.0,
            "train_seconds": 10.0 * step,
        }
        for (task, seed, step), value in {
            ("a", 0, 2): 0.0,
            ("a", 1, 2): 0.5,
            ("b", 0, 2): 1.0,
            ("b", 1, 2): 0.5,
            ("a", 0, 4): 0.5,
            ("a", 1, 4): 0.5,
            ("b", 0, 4): 0.5,
            ("b", 1, 4): 0.5,
        }.items()
    ]
    table = curve_table(rows)
    over = [r for r in table if r["task"] == "all"]
    # step 2: seed 0 averages (0 + 1) / 2 = 0.5 over the tasks, seed 1 (0.5 + 0.5) / 2 = 0.5
    assert [(r["step"], r["success"], r["seeds"]) for r in over] == [(2, 0.5, 2), (4, 0.5, 2)]
    task_a = [r for r in table if r["task"] == "a"]
    assert task_a[0]["success"] == 0.25
    assert task_a[0]["ci_high"] == pytest.approx(
        min(1.0, 0.25 + 12.706204736174698 * 0.5**0.5 * 0.5 / 2**0.5)
    )
    plateaus = {r["task"]: r for r in plateau_table(table)}
    assert plateaus["all"]["reached_plateau"] and plateaus["all"]["plateau_step"] == 2
    assert plateaus["all"]["steps_per_s"] == pytest.approx(4 / 40.0)


# ------------------------------------------------- a tiny sweep with curves, killed and resumed


@pytest.mark.slow
def test_tiny_sweep_with_curves_killed_and_resumed_then_reported(tmp_path, monkeypatch):
    import dataclasses

    from qgf import cli
    from qgf.data import generate
    from qgf.evaluation import run as evaluation_run
    from qgf.experiments.jobs import job_done, plan
    from qgf.experiments.runner import execute
    from qgf.experiments.spec import parse_spec

    tasks = ["cube-single-play-singletask-task1-v0", "cube-single-play-singletask-task2-v0"]
    data = tmp_path / "data"
    generate(
        "cube-single-play-v0", data, episodes=2, val_episodes=1, episode_length=30, workers=1, progress=False
    )
    overrides = {"steps": 4, "log_every": 10, "ckpt_every": 100, "keep_checkpoints": 1, "horizon": 2}
    overrides |= {
        "batch_size": 16,
        "actor_hidden_dims": [16, 16],
        "critic_hidden_dims": [16, 16],
        "flow_steps": 2,
    }
    document = {
        "preset": "tiny",
        "seeds": [0, 1],
        "tasks": tasks,
        "overrides": overrides,
        "data": {"dir": str(data)},
        "agents": [{"name": "qgf", "samplers": ["qgf"]}],
        "evaluation": {
            "episodes": 1,
            "weights": [0.1],
            "workers": 0,
            "num_envs": 1,
            "max_episode_steps": 8,
            "eval_every": 2,
            "curve_episodes": 1,
        },
    }
    with pytest.raises(QGFError, match="curve_seed.*seed 1000 is the sweep evaluation's seed"):
        parse_spec({**document, "evaluation": {**document["evaluation"], "curve_seed": 1000}})
    spec = parse_spec(document)
    sweep = tmp_path / "sweep"
    jobs, _ = plan(spec, sweep)
    trains = [job for job in jobs if job.kind == "train"]
    assert all(job.params["curve"]["seed"] == 3000 for job in trains)
    # the curve is no part of a run's identity: the same jobs and directories without it
    plain, _ = plan(parse_spec({**document, "evaluation": {"episodes": 1, "weights": [0.1]}}), sweep)
    assert [(j.id, j.out) for j in plain if j.kind == "train"] == [(j.id, j.out) for j in trains]

    killed, straight = trains[0], dataclasses.replace(trains[0], out=str(tmp_path / "straight"))
    execute(straight)
    # a kill right after the point at step 2 was written, then one in the middle of the evaluation at step 4
    run_killed(monkeypatch, curves, "append_point", lambda: execute(killed), after=lambda *args: True)

    def at_step_4(run, *args, **kwargs):
        return run.step == 4

    run_killed(monkeypatch, evaluation_run, "evaluate_run", lambda: execute(killed), before=at_step_4)
    assert not job_done(killed)
    for job in jobs:
        if not job_done(job):
            execute(job)

    def without_time(run_dir):
        return [
            {k: v for k, v in p.items() if k != "train_seconds"} for p in curves.read_curve(run_dir)["points"]
        ]

    for seed in (0, 1):
        resumed, reference = (
            without_time(f"{killed.out}/seed{seed}"),
            without_time(tmp_path / "straight" / f"seed{seed}"),
        )
        assert [p["step"] for p in resumed] == [2, 4]
        assert resumed == reference  # exactly the uninterrupted points
    assert [s for s, _ in ckpt.list_checkpoints(f"{killed.out}/seed0")] == [2, 4]  # kept for later samplers

    assert cli.main(["report", str(sweep), "--reps", "20"]) == 0
    report = sweep / "report"
    assert (report / "learning_curves.png").stat().st_size > 0
    curve_rows = list(csv.DictReader(open(report / "curves.csv")))
    assert {r["task"] for r in curve_rows} == {*tasks, "all"}
    assert {r["method"] for r in curve_rows} == {"qgf@0.1"}
    plateau_rows = list(csv.DictReader(open(report / "plateau.csv")))
    assert (
        len(plateau_rows) == 3
        and "Did not reach a plateau within the budget" in (report / "report.md").read_text()
    )
