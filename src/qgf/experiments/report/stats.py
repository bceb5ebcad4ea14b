"""The numbers of `qgf report`, with rliable (Agarwal et al., 2021), from the rows of `rows.py`.

- per task: success mean over seeds with a 95% bootstrap CI (over seeds);
- across tasks: IQM and mean with stratified-bootstrap 95% CIs (tasks are the strata);
- probability of improvement of the reference method (QGF) over each other method, with CI;
- performance profiles: the fraction of runs (seeds x tasks) with success > tau, with
  stratified-bootstrap CIs, on a grid of tau;
- the Fig. 7 (success against policy time per action) and Fig. 9 (success against width) points.

rliable draws its bootstrap from numpy's global generator: `aggregate` and `model_size_points`
seed it, so a report's numbers are the same on every run. May import numpy, rliable (deferred: it
is slow) and `report.rows`; no file I/O, no plotting.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qgf.experiments.report.rows import stage_method

CONFIDENCE = 0.95
# Thresholds of the performance profiles (success in [0, 1]).
PROFILE_TAUS = tuple(round(0.01 * i, 2) for i in range(101))


def complete_matrices(
    cells: dict[Any, dict[tuple[int, str], float]], seeds: list[int], tasks: list[str]
) -> tuple[dict[Any, np.ndarray], list[Any]]:
    """{key: (seeds, tasks) success} for the keys with a value in every cell; and the others."""
    matrices, incomplete = {}, []
    for key, values in cells.items():
        if len(values) == len(seeds) * len(tasks):
            matrices[key] = np.array([[values[(s, t)] for t in tasks] for s in seeds], np.float64)
        else:
            incomplete.append(key)
    return matrices, incomplete


def score_matrices(rows: list[dict], stage: str) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """{method: (seeds, tasks) success} for methods evaluated on every task and seed of the stage."""
    rows = [row for row in rows if row["stage"] == stage]
    tasks = sorted({row["task"] for row in rows})
    seeds = sorted({row["seed"] for row in rows})
    per_method: dict[str, dict[tuple[int, str], float]] = {}
    for row in rows:
        per_method.setdefault(stage_method(row, stage), {})[(row["seed"], row["task"])] = row["success"]
    matrices, incomplete = complete_matrices(per_method, seeds, tasks)
    return matrices, tasks, incomplete


def mean_intervals(matrices: dict[Any, np.ndarray], reps: int) -> dict[Any, tuple[float, float, float]]:
    """{key: (mean, CI low, CI high)}: the mean over a (seeds, tasks) matrix with its
    stratified-bootstrap 95% CI (rliable; a single task gives the bootstrap over seeds)."""
    from rliable import library as rly
    from rliable import metrics

    points, intervals = rly.get_interval_estimates(
        matrices,
        lambda x: np.array([metrics.aggregate_mean(x)]),
        reps=reps,
        confidence_interval_size=CONFIDENCE,
    )
    return {
        key: (float(points[key][0]), float(intervals[key][0, 0]), float(intervals[key][1, 0]))
        for key in matrices
    }


def performance_profiles(
    matrices: dict[str, np.ndarray], taus=PROFILE_TAUS, reps: int = 2000
) -> list[dict[str, Any]]:
    """Per method and tau: the fraction of runs (every seed x task score) with success > tau, and
    its stratified-bootstrap 95% CI (rliable `create_performance_profile`)."""
    from rliable import library as rly

    if not matrices:
        return []
    taus = np.asarray(taus, np.float64)
    profiles, intervals = rly.create_performance_profile(
        matrices, taus, reps=reps, confidence_interval_size=CONFIDENCE
    )
    return [
        {
            "tau": float(tau),
            "method": name,
            "fraction": float(profiles[name][index]),
            "ci_low": float(intervals[name][0, index]),
            "ci_high": float(intervals[name][1, index]),
        }
        for name in matrices
        for index, tau in enumerate(taus)
    ]


def aggregate(rows: list[dict], stage: str, reference: str = "qgf", reps: int = 2000, seed: int = 0) -> dict:
    """The numbers of the report (success in [0, 1])."""
    from rliable import library as rly
    from rliable import metrics

    matrices, tasks, incomplete = score_matrices(rows, stage)
    if not matrices:
        return {
            "stage": stage,
            "tasks": tasks,
            "per_task": [],
            "aggregate": [],
            "improvement": [],
            "profiles": [],
            "incomplete": incomplete,
        }
    np.random.seed(seed)  # rliable draws its bootstrap from numpy's global generator
    per_task = []
    for index, task in enumerate(tasks):
        column = {name: matrix[:, [index]] for name, matrix in matrices.items()}
        for name, (mean, low, high) in mean_intervals(column, reps).items():
            per_task.append(
                {
                    "task": task,
                    "method": name,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "seeds": int(matrices[name].shape[0]),
                }
            )

    def iqm_and_mean(x):
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    points, intervals = rly.get_interval_estimates(
        matrices, iqm_and_mean, reps=reps, confidence_interval_size=CONFIDENCE
    )
    summary = [
        {
            "method": name,
            "iqm": float(points[name][0]),
            "iqm_low": float(intervals[name][0, 0]),
            "iqm_high": float(intervals[name][1, 0]),
            "mean": float(points[name][1]),
            "mean_low": float(intervals[name][0, 1]),
            "mean_high": float(intervals[name][1, 1]),
        }
        for name in matrices
    ]
    improvement = []
    # Without a protocol every weight of the reference is a method of its own ('qgf@0.03'): then
    # each of them is compared with every other method.
    references = (
        [reference]
        if reference in matrices
        else [name for name in matrices if name.split("[", 1)[0].rsplit("@", 1)[0] == reference]
    )
    for ref in references:
        pairs = {f"{ref},{name}": (matrices[ref], matrices[name]) for name in matrices if name != ref}
        if pairs:
            points, intervals = rly.get_interval_estimates(
                pairs,
                lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
                reps=reps,
                confidence_interval_size=CONFIDENCE,
            )
            for pair in pairs:
                improvement.append(
                    {
                        "method": ref,
                        "over": pair.split(",", 1)[1],
                        "probability": float(points[pair][0]),
                        "ci_low": float(intervals[pair][0, 0]),
                        "ci_high": float(intervals[pair][1, 0]),
                    }
                )
    return {
        "stage": stage,
        "tasks": tasks,
        "per_task": per_task,
        "aggregate": summary,
        "improvement": improvement,
        "profiles": performance_profiles(matrices, reps=reps),
        "incomplete": incomplete,
    }


def compute_points(rows: list[dict], stage: str) -> list[dict]:
    """Fig. 7's view: per method, success (mean over tasks and seeds) against test-time compute,
    the policy's milliseconds per executed action (its query time summed over the evaluations ÷
    the env steps they executed; chunked policies answer once per chunk)."""
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        if row["stage"] == stage:
            by_method.setdefault(stage_method(row, stage), []).append(row)
    points = []
    for method, mine in sorted(by_method.items()):
        actions = sum(r.get("actions") or 0.0 for r in mine)
        points.append(
            {
                "method": method,
                "bfn": mine[0]["bfn"],
                "success": float(np.mean([r["success"] for r in mine])),
                "ms_per_action": (1000.0 * sum(r["policy_seconds"] for r in mine) / actions)
                if actions
                else None,
                "evaluations": len(mine),
            }
        )
    return points


def model_size_points(rows: list[dict], stage: str, reps: int = 2000, seed: int = 0) -> list[dict]:
    """The Fig. 9 numbers: per method and hidden width, the mean success over tasks and seeds of
    the stage with its stratified-bootstrap 95% CI, at the best candidate (grid point, weight) of
    that width (the protocol's rule restricted to one width; on the 'sweep' stage an oracle).
    Empty unless the stage's rows take at least two widths."""
    rows = [r for r in rows if r["stage"] == stage and r.get("width") is not None]
    if len({r["width"] for r in rows}) < 2:
        return []
    tasks = sorted({r["task"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    cells: dict[tuple, dict[tuple[int, str], float]] = {}
    for r in rows:
        cells.setdefault((r["method"], r["width"], r["point"], r["weight"]), {})[(r["seed"], r["task"])] = r[
            "success"
        ]
    matrices, _ = complete_matrices(cells, seeds, tasks)
    best: dict[tuple, tuple] = {}
    for key in sorted(matrices, key=lambda k: (k[0], k[1], k[3], k[2])):  # ties: smaller weight
        method_width = key[:2]
        if method_width not in best or matrices[key].mean() > matrices[best[method_width]].mean():
            best[method_width] = key
    np.random.seed(seed)
    intervals = mean_intervals({key: matrices[key] for key in best.values()}, reps)
    return [
        {
            "method": key[0],
            "width": key[1],
            "point": key[2],
            "weight": key[3],
            "mean": intervals[key][0],
            "ci_low": intervals[key][1],
            "ci_high": intervals[key][2],
        }
        for key in sorted(best.values(), key=lambda k: (k[0], k[1]))
    ]
