"""results.json round trip and validation; CSV, markdown and PNG views; atomic writes."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from qgf import fileio
from qgf.errors import QGFError
from qgf.evaluation import results as R
from qgf.evaluation.plots import write_plot


def condition(label, sampler, weight, successes, episodes=10, bfn=1, ci=None):
    success = [i < successes for i in range(episodes)]
    low, high = ci if ci is not None else (0.0, 1.0)
    return R.ConditionResult(
        sampler=sampler,
        weight=weight,
        bfn=bfn,
        label=label,
        episodes=episodes,
        successes=successes,
        success_rate=successes / episodes,
        ci_low=low,
        ci_high=high,
        return_mean=-50.0 + successes,
        return_std=3.5,
        length_mean=120.5,
        q_mean=None if sampler == "none" else -1.25,
        policy_seconds=0.5,
        wall_clock_s=2.0,
        episode_success=success,
        episode_return=[-50.0 + s for s in success],
        episode_length=[100 + i for i in range(episodes)],
    )


def example_results() -> R.EvaluationResults:
    # Wilson 95% intervals, hand-computed: 4/10 -> [0.1682, 0.6873], 7/10 -> [0.3968, 0.8922].
    items = [
        condition("none", "none", 0.0, 4, ci=(0.1682, 0.6873)),
        condition("qgf", "qgf", 0.0, 4, ci=(0.1682, 0.6873)),
        condition("qgf", "qgf", 0.04, 7, ci=(0.3968, 0.8922)),
        condition("qgf", "qgf", 0.12, 5, ci=(0.2366, 0.7634)),
        condition("ood", "ood", 0.04, 2, ci=(0.0567, 0.5098)),
        condition("ood", "ood", 0.12, 1, ci=(0.0179, 0.4042)),
    ]
    return R.EvaluationResults(
        env="cube-single-singletask-task2-v0",
        task=2,
        ogbench_version="1.2.2",
        success_timing="pre",
        success_definition="info['success'] at the episode's last step",
        max_episode_steps=200,
        action_horizon=5,
        seed=0,
        episodes_per_condition=10,
        interval={"method": "wilson", "level": 0.95},
        wall_clock_s=12.0,
        env_steps=7230,
        num_envs=16,
        workers=2,
        run="/runs/a",
        qgf_version="0.1.0",
        created="2025-01-01T00:00:00+00:00",
        results=items,
        extra={"run_step": 1000},
    )


def test_round_trip_through_every_file(tmp_path):
    original = example_results()
    paths = R.write_all(original, tmp_path)
    assert {p.name for p in paths.values()} == {
        "results.json",
        "results.csv",
        "results.md",
        "success_vs_weight.png",
    }
    assert R.read_results(tmp_path) == original
    assert R.read_results(tmp_path / "results.json") == original
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["schema"] == "qgf.evaluation" and document["schema_version"] == 1
    assert {"sampler", "weight", "bfn", "episodes", "success_rate"} <= set(document["results"][0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_csv_has_one_row_per_condition_with_scalar_fields(tmp_path):
    R.write_csv(example_results(), tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    assert rows[2]["sampler"] == "qgf" and float(rows[2]["weight"]) == 0.04
    assert int(rows[2]["successes"]) == 7 and float(rows[2]["success_rate"]) == 0.7
    assert rows[0]["q_mean"] == ""  # no critic value for plain BC
    assert "episode_success" not in rows[0]


def test_markdown_lists_every_condition_with_its_interval_and_no_best():
    text = R.markdown_report(example_results())
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 6  # header + one row per condition
    assert "| qgf | 1 | 0.04 | 0.70 [0.40, 0.89] | 10 |" in text
    assert "| ood | 1 | 0.12 | 0.10 [0.02, 0.40] | 10 |" in text
    assert "success_timing=pre" in text and "ogbench 1.2.2" in text
    assert "best" not in text.lower()


def test_plot_is_a_png(tmp_path):
    path = write_plot(example_results(), tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def mutate(document, path, value):
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("schema",), "something-else", "not a qgf evaluation results file"),
        (("schema_version",), 2, "schema_version 2 is not supported"),
        (("env",), KeyError, "missing field 'env'"),
        (("success_timing",), "later", "success_timing"),
        (("results",), [], "results must be a non-empty list"),
        (("results", 1, "success_rate"), 0.5, "success_rate is not successes / episodes"),
        (("results", 1, "ci_high"), 0.3, "outside"),
        (("results", 1, "weight"), -0.1, "results[1].weight must be a number >= 0"),
        (("results", 1, "bfn"), 0, "results[1].bfn"),
        (("results", 1, "episode_length"), [100], "has 1 entries for 10 episodes"),
        (("results", 1, "episode_success"), [True] * 5 + [False] * 5, "does not add up"),
        (("results", 1, "sampler"), KeyError, "results[1] is missing 'sampler'"),
        (("results", 1, "return_mean"), float("nan"), "return_mean"),
    ],
)
def test_reader_rejects_invalid_files(tmp_path, path, value, message):
    document = mutate(example_results().to_dict(), path, value)
    (tmp_path / "results.json").write_text(json.dumps(document))
    with pytest.raises(QGFError) as error:
        R.read_results(tmp_path)
    assert message in str(error.value)
    assert str(tmp_path / "results.json") in str(error.value)


def test_reader_rejects_duplicate_conditions_and_missing_files(tmp_path):
    original = example_results()
    duplicated = dataclasses.replace(original, results=original.results + original.results[-1:])
    (tmp_path / "results.json").write_text(json.dumps(duplicated.to_dict()))
    with pytest.raises(QGFError, match="more than once"):
        R.read_results(tmp_path)
    with pytest.raises(QGFError, match="run `qgf evaluate` first"):
        R.read_results(tmp_path / "elsewhere.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(QGFError, match="not valid JSON"):
        R.read_results(tmp_path / "broken.json")


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    R.write_json(example_results(), tmp_path / "results.json")
    before = (tmp_path / "results.json").read_text()

    def interrupted_replace(src, dst):
        raise KeyboardInterrupt  # killed after the new file was written, before it took the name

    monkeypatch.setattr(fileio.os, "replace", interrupted_replace)
    changed = dataclasses.replace(example_results(), seed=123)
    for write in (R.write_json, R.write_csv, R.write_markdown):
        with pytest.raises(KeyboardInterrupt):
            write(changed, tmp_path / "results.json")
    assert (tmp_path / "results.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
