"""`qgf report`'s added views on synthetic sweep directories (no Ray, no training): performance
profiles against numpy, the Fig. 9 (model size) view drawn exactly when the grid varies width, the
offline guidance-weight rule on hand-made tables, its regret arithmetic and its wiring into the
report, and the offline weight table of a real (untrained, tiny) run."""

import csv
import dataclasses
import json

import numpy as np
import pytest

from qgf.envs import parse_name
from qgf.errors import QGFError
from qgf.experiments import offline
from qgf.experiments.offline import compare_choices, offline_weight_choice
from qgf.experiments.report import performance_profiles, point_width, write_report

TASK2 = "cube-single-play-singletask-task2-v0"
TASK4 = "cube-single-play-singletask-task4-v0"
DOMAIN = parse_name(TASK2).domain
EPISODES = 10


# ------------------------------------------------------------------ synthetic sweep directories


def write_eval(sweep_dir, stage, group, task, seed, conditions, *, point=None, label="qgf", run=None):
    """One evaluation's results.json where `collect_rows` looks for it. `conditions`: (sampler
    label, sampler, weight, bfn, successes out of EPISODES)."""
    from qgf.evaluation.results import EvaluationResults, write_json

    results = []
    for condition_label, sampler, weight, bfn, successes in conditions:
        results.append(
            {
                "sampler": sampler,
                "weight": float(weight),
                "bfn": bfn,
                "label": condition_label,
                "episodes": EPISODES,
                "successes": successes,
                "success_rate": successes / EPISODES,
                "ci_low": 0.0,
                "ci_high": 1.0,
                "return_mean": 0.0,
                "return_std": 0.0,
                "length_mean": 1.0,
                "q_mean": None,
                "policy_seconds": 0.0,
                "wall_clock_s": 0.0,
                "episode_success": [i < successes for i in range(EPISODES)],
                "episode_return": [0.0] * EPISODES,
                "episode_length": [1] * EPISODES,
            }
        )
    sweep = {"group": group, "agent": label, "point": point or {}, "task": task, "run_seed": seed}
    document = {
        "schema": "qgf.evaluation",
        "schema_version": 1,
        "env": task,
        "task": parse_name(task).task,
        "ogbench_version": None,
        "success_timing": None,
        "success_definition": "synthetic",
        "max_episode_steps": 1,
        "action_horizon": 1,
        "seed": 0,
        "episodes_per_condition": EPISODES,
        "interval": {"method": "wilson", "level": 0.95},
        "wall_clock_s": 0.0,
        "env_steps": 0,
        "num_envs": 1,
        "workers": 0,
        "run": run,
        "qgf_version": "test",
        "created": "2024-01-01T00:00:00Z",
        "results": results,
        "extra": {"agent": "qgf", "sweep": {**sweep, "stage": stage}},
    }
    path = sweep_dir / "evals" / stage / group / task / f"seed{seed}-x" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(EvaluationResults.from_dict(document), path)
    return path


def bc_and_qgf(bc, qgf_by_weight):
    return [("none", "none", 0.0, 1, bc)] + [("qgf", "qgf", w, 1, s) for w, s in qgf_by_weight.items()]


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------ performance profiles


def test_performance_profiles_match_numpy():
    scores = {
        "a": np.array([[0.0, 0.5], [0.2, 1.0], [0.5, 0.7]]),
        "b": np.array([[0.1, 0.1], [0.9, 0.3], [0.4, 0.4]]),
        "flat": np.full((3, 2), 0.4),
    }
    taus = (0.0, 0.1, 0.4, 0.5, 0.99, 1.0)
    np.random.seed(0)
    rows = performance_profiles(scores, taus, reps=200)
    assert len(rows) == len(scores) * len(taus)
    for row in rows:
        expected = np.mean(scores[row["method"]] > row["tau"])  # fraction of all runs x tasks
        assert row["fraction"] == pytest.approx(expected)
        assert 0.0 <= row["ci_low"] <= row["fraction"] + 1e-12 <= row["ci_high"] + 2e-12 <= 1.0 + 2e-12
    flat = [row for row in rows if row["method"] == "flat"]
    assert [r["fraction"] for r in flat] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # "> tau", strictly
    assert all(r["ci_low"] == r["ci_high"] == r["fraction"] for r in flat)  # nothing to resample
    assert performance_profiles({}, taus) == []


def test_report_writes_performance_profiles_and_no_fig9_without_width(tmp_path):
    successes = {
        (TASK2, 0): (2, {0.1: 5, 0.3: 7}),
        (TASK2, 1): (3, {0.1: 6, 0.3: 4}),
        (TASK4, 0): (0, {0.1: 1, 0.3: 2}),
        (TASK4, 1): (1, {0.1: 9, 0.3: 3}),
    }
    for (task, seed), (bc, qgf) in successes.items():
        write_eval(tmp_path, "sweep", "qgf-aaaa", task, seed, bc_and_qgf(bc, qgf), point={"expectile": 0.9})
    paths = {path.name for path in write_report(tmp_path, reps=50)}
    assert {"performance_profiles.csv", "performance_profiles.png", "fig5_methods.png"} <= paths
    assert "fig9_model_size.png" not in paths and "model_size.csv" not in paths  # width not varied
    assert not (tmp_path / "report" / "fig9_model_size.png").exists()
    assert "offline_choice.csv" not in paths  # no protocol, nothing to compare with

    profile = read_csv(tmp_path / "report" / "performance_profiles.csv")
    assert list(profile[0]) == ["tau", "method", "fraction", "ci_low", "ci_high"]
    keys = list(successes)
    matrices = {
        "bc[expectile=0.9]": [successes[k][0] / EPISODES for k in keys],
        "qgf@0.1[expectile=0.9]": [successes[k][1][0.1] / EPISODES for k in keys],
        "qgf@0.3[expectile=0.9]": [successes[k][1][0.3] / EPISODES for k in keys],
    }
    assert {row["method"] for row in profile} == set(matrices)
    for row in profile:
        expected = np.mean(np.array(matrices[row["method"]]) > float(row["tau"]))
        assert float(row["fraction"]) == pytest.approx(expected)
    assert len({row["tau"] for row in profile}) == 101
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Performance profiles" in text and "performance_profiles.png" in text
    assert "| method | > 25% | > 50% | > 75% |" in text


# ------------------------------------------------------------------ Fig. 9: success against width


def test_point_width_reads_the_hidden_dims_of_a_grid_point():
    assert point_width({}) is None
    assert point_width({"expectile": 0.9}) is None
    assert point_width({"actor_hidden_dims": [64, 128]}) == 128
    assert point_width({"actor_hidden_dims": [32], "critic_hidden_dims": [256, 256]}) == 256


def test_fig9_is_drawn_exactly_when_the_grid_varies_width(tmp_path):
    # width 16: qgf best at w=0.1 (mean 0.5); width 64: best at w=0.3 (mean 0.8); ties -> smaller w
    table = {
        16: {0: (1, {0.1: 5, 0.3: 4}), 1: (3, {0.1: 5, 0.3: 6})},
        64: {0: (2, {0.1: 7, 0.3: 8}), 1: (2, {0.1: 7, 0.3: 8})},
    }
    for width, per_seed in table.items():
        point = {"actor_hidden_dims": [width, width]}
        for seed, (bc, qgf) in per_seed.items():
            write_eval(tmp_path, "sweep", f"qgf-w{width}", TASK2, seed, bc_and_qgf(bc, qgf), point=point)
    paths = {path.name for path in write_report(tmp_path, reps=50)}
    assert {"fig9_model_size.png", "model_size.csv"} <= paths
    points = {
        (row["method"], int(row["width"])): row for row in read_csv(tmp_path / "report" / "model_size.csv")
    }
    assert set(points) == {("bc", 16), ("bc", 64), ("qgf", 16), ("qgf", 64)}
    assert float(points[("qgf", 16)]["weight"]) == 0.1  # 0.5 at w=0.1 ties 0.5 at w=0.3
    assert float(points[("qgf", 16)]["mean"]) == pytest.approx(0.5)
    assert float(points[("qgf", 64)]["weight"]) == 0.3
    assert float(points[("qgf", 64)]["mean"]) == pytest.approx(0.8)
    assert float(points[("bc", 16)]["mean"]) == pytest.approx(0.2)
    for row in points.values():
        assert float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"])
    assert "fig9_model_size.png" in (tmp_path / "report" / "report.md").read_text()


# ------------------------------------------------------------------ the offline rule


def test_offline_rule_takes_the_best_gain_within_the_distance_bound():
    weights, gains, distances = [0.0, 0.1, 0.3, 1.0], [0.0, 1.0, 2.0, 5.0], [1.0, 1.05, 1.2, 2.0]
    choice = offline_weight_choice(weights, gains, distances, 1.0, tolerance=1.1)
    assert choice["weight"] == 0.1 and choice["index"] == 1 and not choice["fallback"]
    assert choice["admissible"] == [True, True, False, False] and choice["bound"] == pytest.approx(1.1)
    assert offline_weight_choice(weights, gains, distances, 1.0, tolerance=1.5)["weight"] == 0.3
    assert offline_weight_choice(weights, gains, distances, 1.0, tolerance=2.0)["weight"] == 1.0  # <= bound
    # a negative gain everywhere but w = 0: the unguided weight wins
    assert offline_weight_choice(weights, [0.0, -1.0, -2.0, -3.0], distances, 1.0, 5.0)["weight"] == 0.0


def test_offline_rule_breaks_ties_towards_the_smaller_weight_in_any_order():
    choice = offline_weight_choice([0.3, 1.0, 0.1], [2.0, 9.0, 2.0], [1.0, 3.0, 1.0], 1.0, tolerance=1.1)
    assert choice["weight"] == 0.1 and choice["index"] == 2
    choice = offline_weight_choice([0.1, 0.03, 0.3], [4.0, 4.0, 4.0], [1.0, 1.0, 1.0], 1.0)
    assert choice["weight"] == 0.03


def test_offline_rule_falls_back_to_the_nearest_weight_when_none_is_admissible():
    choice = offline_weight_choice([0.1, 0.3, 1.0], [1.0, 2.0, 3.0], [0.9, 0.8, 0.95], 1.0, tolerance=0.5)
    assert choice["fallback"] and choice["weight"] == 0.3 and choice["admissible"] == [False] * 3
    tie = offline_weight_choice([1.0, 0.1], [3.0, 1.0], [2.0, 2.0], 1.0, tolerance=1.0)
    assert tie["fallback"] and tie["weight"] == 0.1


@pytest.mark.parametrize(
    "args, message",
    [
        (([], [], [], 1.0), "at least one weight"),
        (([0.1, 0.3], [1.0], [1.0, 1.0], 1.0), "2 weights, 1 gains, 2 distances"),
        (([0.1, 0.1], [1.0, 2.0], [1.0, 1.0], 1.0), "duplicate weights"),
        (([0.1], [float("nan")], [1.0], 1.0), "finite"),
        (([0.1], [1.0], [-1.0], 1.0), ">= 0"),
        (([0.1], [1.0], [1.0], 1.0, 0.0), "tolerance must be > 0"),
    ],
)
def test_offline_rule_rejects_bad_tables(args, message):
    with pytest.raises(QGFError, match=message):
        offline_weight_choice(*args)


def protocol_with(choices):
    return {"rule": "argmax", "tune_tasks": [2, 4], "tune_seed": 1, "final_seed": 2, "choices": choices}


def choice(method, weight, successes, group="g1"):
    evidence = [{"group": group, "point": "default", "weight": w, "success": s} for w, s in successes.items()]
    evidence.append({"group": "other", "point": "x=1", "weight": weight, "success": 1.0})  # not ours
    return {
        "method": method,
        "domain": DOMAIN,
        "group": group,
        "point": "default",
        "weight": weight,
        "tune_success": successes[weight],
        "evidence": evidence,
    }


def test_regret_arithmetic():
    protocol = protocol_with(
        [
            choice("qgf", 0.3, {0.1: 0.55, 0.3: 0.8, 1.0: 0.2}),
            choice("qgf-jacobian", 0.1, {0.1: 0.6, 0.3: 0.4}),
            choice("bptt", 0.3, {0.1: 0.3, 0.3: 0.45}),
            choice("gradstep", 0.1, {0.1: 0.3, 0.3: 0.1}),  # no table: left out
        ]
    )
    tables = {
        # offline picks 0.1 (0.3 is too far): regret 0.8 - 0.55
        ("qgf", DOMAIN): {
            "weights": [0.1, 0.3, 1.0],
            "gain": [1, 2, 3],
            "distance": [1, 2, 3],
            "reference_distance": 1,
        },
        # offline agrees with the rollout choice: no regret, on either stage
        ("qgf-jacobian", DOMAIN): {
            "weights": [0.1, 0.3],
            "gain": [2, 1],
            "distance": [1, 1],
            "reference_distance": 1,
        },
        # offline picks 0.1; the final stage evaluated both weights
        ("bptt", DOMAIN): {
            "weights": [0.1, 0.3],
            "gain": [1, 2],
            "distance": [1, 5],
            "reference_distance": 1,
        },
    }
    final = {("qgf", DOMAIN, 0.3): 0.7, ("bptt", DOMAIN, 0.3): 0.5, ("bptt", DOMAIN, 0.1): 0.35}
    rows = {row["method"]: row for row in compare_choices(protocol, tables, final, tolerance=1.1)}
    assert set(rows) == {"qgf", "qgf-jacobian", "bptt"}
    qgf = rows["qgf"]
    assert (qgf["rollout_weight"], qgf["offline_weight"]) == (0.3, 0.1)
    assert (qgf["tune_success_rollout"], qgf["tune_success_offline"]) == (0.8, 0.55)
    assert qgf["tune_regret"] == pytest.approx(0.25)
    assert qgf["final_regret"] is None and "only the rollout choice" in qgf["final_note"]
    assert rows["qgf-jacobian"]["tune_regret"] == 0.0 and rows["qgf-jacobian"]["final_regret"] == 0.0
    assert rows["bptt"]["tune_regret"] == pytest.approx(0.15)
    assert rows["bptt"]["final_regret"] == pytest.approx(0.15)
    tables[("qgf", DOMAIN)]["weights"] = [0.1, 0.5, 1.0]  # a weight with no tuning evaluation
    tables[("qgf", DOMAIN)]["distance"] = [3, 1, 3]
    with pytest.raises(QGFError, match="no tuning evaluation"):
        compare_choices(protocol, tables, final, tolerance=1.1)


def test_average_tables_over_runs():
    runs = [
        {"weights": [0.1, 0.3], "gain": [1.0, 3.0], "distance": [1.0, 2.0], "reference_distance": 1.0},
        {"weights": [0.1, 0.3], "gain": [3.0, 5.0], "distance": [2.0, 2.0], "reference_distance": 2.0},
    ]
    mean = offline.average_tables(runs)
    assert mean == {
        "weights": [0.1, 0.3],
        "gain": [2.0, 4.0],
        "distance": [1.5, 2.0],
        "reference_distance": 1.5,
        "runs": 2,
    }
    with pytest.raises(QGFError, match="share their weights"):
        offline.average_tables([runs[0], {**runs[1], "weights": [0.1, 0.5]}])


def test_report_shows_the_offline_choice_next_to_the_rollout_choice(tmp_path, monkeypatch):
    tune = {0.1: 6, 0.3: 8}
    for task in (TASK2, TASK4):
        write_eval(tmp_path, "tune", "g1", task, 0, bc_and_qgf(1, tune))
        write_eval(tmp_path, "final", "g1", task, 0, bc_and_qgf(1, {0.3: 7}))
    protocol = protocol_with([choice("qgf", 0.3, {0.1: 0.6, 0.3: 0.8})])
    (tmp_path / "protocol.json").write_text(json.dumps(protocol))
    table = {"weights": [0.1, 0.3], "gain": [1.0, 2.0], "distance": [1.0, 1.5], "reference_distance": 1.0}
    calls = []

    def fake_tables(sweep_dir, protocol, **settings):
        calls.append(settings)
        return {("qgf", DOMAIN): table}, ["bptt on cube-single: no tuning run found"]

    monkeypatch.setattr(offline, "sweep_tables", fake_tables)
    (tmp_path / "spec.json").write_text(json.dumps({"report": {"offline_observations": 16}}))
    paths = {path.name for path in write_report(tmp_path, reps=50)}
    assert {"offline_choice.csv", "offline_tables.json"} <= paths and calls == [{"observations": 16}]
    (row,) = read_csv(tmp_path / "report" / "offline_choice.csv")
    assert (float(row["rollout_weight"]), float(row["offline_weight"])) == (0.3, 0.1)
    assert float(row["tune_regret"]) == pytest.approx(0.2) and row["final_regret"] == ""
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Offline choice of the guidance weight" in text
    assert "| qgf | cube-single | 0.3 | 0.1 | 80.0 | 60.0 | 20.0 | n/a (final stage evaluated only" in text
    assert "no tuning run found" in text and "c = 1.1" in text
    write_report(tmp_path, reps=50, offline=False)
    assert len(calls) == 1 and "Offline choice" not in (tmp_path / "report" / "report.md").read_text()


def test_report_offline_settings_are_validated():
    from qgf.experiments.spec import parse_spec

    document = {
        "seeds": [0],
        "tasks": [TASK2],
        "agents": [{"name": "qgf"}],
        "preset": "tiny",
    }
    with pytest.raises(QGFError, match="offline_tolerance must be a number > 0"):
        parse_spec({**document, "report": {"offline_tolerance": 0}})
    with pytest.raises(QGFError, match="report.offline must be true or false"):
        parse_spec({**document, "report": {"offline": "yes"}})
    with pytest.raises(QGFError, match="did you mean 'offline_tolerance'"):
        parse_spec({**document, "report": {"offline_tolerence": 1.2}})


# ------------------------------------------------------------------ tables from a real run


def test_offline_tables_of_a_tiny_run(tmp_path):
    """`sweep_tables` finds the tuning run through its results.json and measures gain and distance
    per weight; weight 0 reproduces the reference exactly (same noise)."""
    from _data_fixtures import synthetic_arrays, write_npz
    from qgf import checkpoint
    from qgf.agents.qgf import QGFAgent
    from qgf.config import load_preset
    from qgf.data import load_dataset
    from qgf.guidance import SamplerSpec

    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    data_dir.mkdir()
    write_npz(
        data_dir / "cube-single-play-v0.npz", synthetic_arrays((30, 25), observation_dim=28, action_dim=5)
    )
    dataset = load_dataset("cube-single-play-v0", data_dir)
    config = load_preset("tiny", {"flow_steps": 2, "horizon": 2})
    checkpoint.create_run(run_dir, config, obs_dim=28, action_dim=5, dataset=dataset.metadata())
    checkpoint.save_checkpoint(run_dir, QGFAgent.create(0, 28, 5, config))
    write_eval(tmp_path / "sweep", "tune", "g1", TASK2, 0, bc_and_qgf(1, {0.0: 1, 0.5: 2}), run=str(run_dir))
    spec = dataclasses.asdict(SamplerSpec(estimator="qgf", steps=2))
    protocol = protocol_with([{**choice("qgf", 0.5, {0.0: 0.1, 0.5: 0.2}), "spec": spec}])
    protocol["choices"].append(
        {**choice("bc", 0.0, {0.0: 0.1}), "spec": dataclasses.asdict(SamplerSpec("none"))}
    )

    tables, notes = offline.sweep_tables(tmp_path / "sweep", protocol, observations=8, nn_chunks=40)
    assert notes == [] and set(tables) == {("qgf", DOMAIN)}  # BC has no weight to choose
    table = tables[("qgf", DOMAIN)]
    assert table["weights"] == [0.0, 0.5] and table["runs"] == 1
    assert table["gain"][0] == 0.0 and table["distance"][0] == table["reference_distance"] > 0
    assert np.isfinite(table["gain"][1]) and table["distance"][1] > 0
    # a tuning run that moved away is a note, not a failure
    missing = protocol_with([{**choice("qgf", 0.5, {0.0: 0.1, 0.5: 0.2}, group="g2"), "spec": spec}])
    tables, notes = offline.sweep_tables(tmp_path / "sweep", missing, observations=8, nn_chunks=40)
    assert tables == {} and notes == [f"qgf on {DOMAIN}: no tuning run found"]


# ------------------------------------------------------------------ Fig. 7: success against compute


def test_compute_points_divide_policy_time_by_executed_actions():
    from qgf.experiments.report import compute_points

    def row(method, success, seconds, actions, stage="sweep"):
        return {
            "stage": stage,
            "method": method,
            "sampler": "none",
            "point": "default",
            "bfn": 1,
            "success": success,
            "policy_seconds": seconds,
            "actions": actions,
            "weight": 0.0,
        }

    rows = [
        row("bc", 0.2, 1.0, 500.0),
        row("bc", 0.4, 3.0, 1500.0),
        row("qgf@0.1", 0.5, 6.0, 1000.0),
        row("qgf@0.1", 0.9, 99.0, 1.0, stage="tune"),  # another stage: ignored
    ]
    points = {p["method"]: p for p in compute_points(rows, "sweep")}
    assert points["bc"]["ms_per_action"] == pytest.approx(1000 * 4.0 / 2000.0)
    assert points["bc"]["success"] == pytest.approx(0.3)
    assert points["qgf@0.1"]["ms_per_action"] == pytest.approx(6.0) and points["qgf@0.1"]["evaluations"] == 1


def test_report_draws_the_compute_view(tmp_path):
    for seed in (0, 1):
        write_eval(tmp_path, "sweep", "qgf-aaaa", TASK2, seed, bc_and_qgf(2 + seed, {0.1: 5}))
    paths = {path.name for path in write_report(tmp_path, reps=20)}
    assert "compute.csv" in paths
    table = read_csv(tmp_path / "report" / "compute.csv")
    assert {row["method"] for row in table} == {"bc", "qgf@0.1"}


def test_probability_of_improvement_of_every_reference_weight_by_hand(tmp_path):
    successes = {  # (task, seed): (bc, {weight: qgf}) out of EPISODES
        (TASK2, 0): (2, {0.1: 5, 0.3: 2}),
        (TASK2, 1): (4, {0.1: 4, 0.3: 1}),
        (TASK4, 0): (1, {0.1: 3, 0.3: 1}),
        (TASK4, 1): (6, {0.1: 2, 0.3: 0}),
    }
    for (task, seed), (bc, qgf) in successes.items():
        write_eval(tmp_path, "sweep", "qgf-aaaa", task, seed, bc_and_qgf(bc, qgf))
    write_report(tmp_path, reps=20)
    table = {
        (row["method"], row["over"]): float(row["probability"])
        for row in read_csv(tmp_path / "report" / "improvement.csv")
    }

    def by_hand(x_of, y_of):  # mean over tasks of P(X > Y) + P(X = Y) / 2 over all seed pairs
        per_task = []
        for task in (TASK2, TASK4):
            xs = [x_of(successes[(task, s)]) for s in (0, 1)]
            ys = [y_of(successes[(task, s)]) for s in (0, 1)]
            per_task.append(np.mean([(x > y) + 0.5 * (x == y) for x in xs for y in ys]))
        return np.mean(per_task)

    assert table[("qgf@0.1", "bc")] == pytest.approx(by_hand(lambda c: c[1][0.1], lambda c: c[0]))
    assert table[("qgf@0.3", "bc")] == pytest.approx(by_hand(lambda c: c[1][0.3], lambda c: c[0]))
    assert table[("qgf@0.1", "qgf@0.3")] == pytest.approx(1.0)
    assert ("bc", "qgf@0.1") not in table  # only the reference's weights are compared
