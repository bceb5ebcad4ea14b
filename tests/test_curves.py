"""Learning curves: the curve file format, the training loop's evaluation points (pinned
checkpoints, training seconds, resume after a kill), the plateau rule on hand-made curves."""

import csv
import json

import numpy as np
import pytest

from helpers import make_dataset, small_config
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
