"""Aggregate statistics of a sweep with rliable (Agarwal et al., 2021), and `qgf report`'s views.

- per task: success mean over seeds with a 95% bootstrap CI (over seeds);
- across tasks: IQM and mean with stratified-bootstrap 95% CIs (tasks are the strata);
- probability of improvement of the reference method (QGF) over each other method, with CI;
- performance profiles: the fraction of runs (seeds x tasks) with success > tau, with
  stratified-bootstrap CIs, on a grid of tau.

The main stage is 'final' (the protocol's chosen values on fresh evaluation seeds) when the sweep
has one, else 'sweep' (each weight is then a method of its own, `qgf@0.1`: choosing the best weight
on the same episodes would be an oracle). Figures: Fig. 5 view (methods with CIs), Fig. 20 view
(success against guidance weight per domain, from the 'tune' or 'sweep' stage), Fig. 7 view
(success against best-of-N) when the sweep varies N, Fig. 9 view (success against network width)
when the agents' grid varies a `*_hidden_dims` field, performance profiles. With a protocol, the
offline (rollout-free) choice of the guidance weight is reported next to the rollout choice
(`qgf.experiments.offline`).
"""

from __future__ import annotations

import csv
import io
import json
import types
from pathlib import Path
from typing import Any

import numpy as np

from qgf.errors import QGFError
from qgf.experiments.spec import method_name
from qgf.fileio import atomic_path, atomic_write_json, atomic_write_text

CONFIDENCE = 0.95
# Thresholds of the performance profiles (success in [0, 1]).
PROFILE_TAUS = tuple(round(0.01 * i, 2) for i in range(101))
# The thresholds shown in report.md's profile table.
PROFILE_TABLE_TAUS = (0.25, 0.5, 0.75)


def collect_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per (evaluation, condition): stage, task, domain, method, weight, seed, success."""
    from qgf.envs import parse_name
    from qgf.evaluation.results import read_results

    rows = []
    for path in sorted(Path(sweep_dir).glob("evals/*/*/*/*/results.json")):
        results = read_results(path)
        sweep = results.extra.get("sweep") or {}
        if not sweep:
            continue
        agent = types.SimpleNamespace(name=results.extra.get("agent"), label=sweep["agent"])
        for condition in results.results:
            rows.append(
                {
                    "stage": sweep["stage"],
                    "task": sweep["task"],
                    "domain": parse_name(sweep["task"]).domain,
                    "method": method_name(agent, condition.label),
                    "sampler": condition.sampler,
                    "bfn": condition.bfn,
                    "weight": condition.weight,
                    "point": ",".join(f"{k}={v}" for k, v in sorted(sweep["point"].items())) or "default",
                    "width": point_width(sweep["point"]),
                    "seed": sweep["run_seed"],
                    "success": condition.success_rate,
                    "episodes": condition.episodes,
                    "policy_seconds": condition.policy_seconds,
                    "actions": condition.episodes * condition.length_mean,  # env steps executed
                }
            )
    return rows


def point_width(point: dict[str, Any]) -> int | None:
    """The hidden width a grid point sets (the largest layer of its `*_hidden_dims` fields), or
    None when the point leaves every width at the preset's."""
    widths = [
        max(value)
        for key, value in point.items()
        if key.endswith("hidden_dims") and isinstance(value, list | tuple) and value
    ]
    return max(widths) if widths else None


def _complete_matrices(
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


def _stage_method(row: dict, stage: str) -> str:
    """A row's method in the tables of `stage`: without a protocol ('sweep') every weight and grid
    point is a method of its own (choosing the best on the evaluation episodes would be an oracle)."""
    name = row["method"]
    if stage == "sweep" and row["sampler"] not in ("none", "policy"):
        name = f"{name}@{row['weight']:g}"
    if stage == "sweep" and row["point"] != "default":
        name = f"{name}[{row['point']}]"
    return name


def _score_matrices(rows: list[dict], stage: str) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """{method: (seeds, tasks) success} for methods evaluated on every task and seed of the stage."""
    rows = [row for row in rows if row["stage"] == stage]
    tasks = sorted({row["task"] for row in rows})
    seeds = sorted({row["seed"] for row in rows})
    per_method: dict[str, dict[tuple[int, str], float]] = {}
    for row in rows:
        per_method.setdefault(_stage_method(row, stage), {})[(row["seed"], row["task"])] = row["success"]
    matrices, incomplete = _complete_matrices(per_method, seeds, tasks)
    return matrices, tasks, incomplete


def _mean_intervals(matrices: dict[Any, np.ndarray], reps: int) -> dict[Any, tuple[float, float, float]]:
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

    matrices, tasks, incomplete = _score_matrices(rows, stage)
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
        for name, (mean, low, high) in _mean_intervals(column, reps).items():
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


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown(numbers: dict, protocol: dict | None, figures: list[str], offline: dict | None = None) -> str:
    lines = [f"# Sweep report (stage: {numbers['stage']})", ""]
    lines += ["Success rates in %; 95% bootstrap CIs over seeds (rliable; across tasks: stratified).", ""]
    lines += [
        "## Across tasks",
        "",
        "| method | IQM | IQM 95% CI | mean | mean 95% CI |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(numbers["aggregate"], key=lambda r: -r["iqm"]):
        lines.append(
            f"| {row['method']} | {_pct(row['iqm'])} | [{_pct(row['iqm_low'])}, {_pct(row['iqm_high'])}] "
            f"| {_pct(row['mean'])} | [{_pct(row['mean_low'])}, {_pct(row['mean_high'])}] |"
        )
    if numbers["improvement"]:
        lines += [
            "",
            "## Probability of improvement",
            "",
            "| P(X > Y) | Y | P | 95% CI |",
            "|---|---|---|---|",
        ]
        for row in numbers["improvement"]:
            lines.append(
                f"| {row['method']} | {row['over']} | {row['probability']:.2f} | "
                f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}] |"
            )
    if numbers.get("profiles"):
        taus = [tau for tau in PROFILE_TABLE_TAUS if tau in {r["tau"] for r in numbers["profiles"]}]
        lines += [
            "",
            "## Performance profiles",
            "",
            "Fraction of runs (seeds x tasks) with success > tau, 95% stratified-bootstrap CIs "
            "(rliable); every tau in `performance_profiles.csv` and `performance_profiles.png`.",
            "",
            "| method | " + " | ".join(f"> {100 * tau:g}%" for tau in taus) + " |",
            "|---|" + "---|" * len(taus),
        ]
        by_key = {(r["method"], r["tau"]): r for r in numbers["profiles"]}
        for name in dict.fromkeys(r["method"] for r in numbers["profiles"]):
            cells = [by_key[(name, tau)] for tau in taus]
            lines.append(
                f"| {name} | "
                + " | ".join(f"{c['fraction']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]" for c in cells)
                + " |"
            )
    lines += [
        "",
        "## Per task (mean over seeds)",
        "",
        "| task | method | mean | 95% CI | seeds |",
        "|---|---|---|---|---|",
    ]
    for row in numbers["per_task"]:
        lines.append(
            f"| {row['task']} | {row['method']} | {_pct(row['mean'])} | "
            f"[{_pct(row['ci_low'])}, {_pct(row['ci_high'])}] | {row['seeds']} |"
        )
    if numbers["incomplete"]:
        lines += [
            "",
            f"Left out (not evaluated on every task and seed yet): {', '.join(numbers['incomplete'])}",
        ]
    if protocol:
        rule = (
            f"Rule: {protocol['rule']}; tuning tasks {protocol['tune_tasks']} (evaluation seed "
            f"{protocol['tune_seed']}), final evaluation seed {protocol['final_seed']}."
        )
        lines += ["", "## Protocol choices (QGF App. J)", "", rule, ""]
        lines += ["| method | domain | chosen | weight | tuning success |", "|---|---|---|---|---|"]
        for choice in protocol["choices"]:
            lines.append(
                f"| {choice['method']} | {choice['domain']} | {choice['point']} | {choice['weight']:g} "
                f"| {_pct(choice['tune_success'])} |"
            )
    if offline is not None:
        lines += offline_markdown(offline)
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def offline_markdown(offline: dict) -> list[str]:
    """The report.md section of the offline weight choice (`qgf.experiments.offline`)."""
    lines = ["", "## Offline choice of the guidance weight (no rollouts)", "", f"Rule: {offline['rule']}."]
    lines += [
        "Regret = tuning success at the rollout choice - tuning success at the offline choice "
        "(points of success in %); the final stage evaluates only the rollout choice, so its "
        "regret is known only where both choices agree.",
        "",
    ]
    if offline["rows"]:
        lines += [
            "| method | domain | rollout w | offline w | tuning success rollout | tuning success offline "
            "| regret (tune) | regret (final) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in offline["rows"]:
            final = (
                _pct(row["final_regret"]) if row["final_regret"] is not None else f"n/a ({row['final_note']})"
            )
            flag = " (fallback: none admissible)" if row["fallback"] else ""
            lines.append(
                f"| {row['method']} | {row['domain']} | {row['rollout_weight']:g} | "
                f"{row['offline_weight']:g}{flag} | {_pct(row['tune_success_rollout'])} | "
                f"{_pct(row['tune_success_offline'])} | {_pct(row['tune_regret'])} | {final} |"
            )
    else:
        lines.append("No method with a guidance-weight grid had tuning runs to measure.")
    if offline.get("notes"):
        lines += ["", "Left out: " + "; ".join(offline["notes"])]
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(figure, path: Path) -> None:
    """Write `figure` as a PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def _figure_methods(numbers: dict, path: Path) -> None:
    plt = _pyplot()
    rows = sorted(numbers["aggregate"], key=lambda r: r["iqm"])
    figure, axes = plt.subplots(1, 2, figsize=(9, 0.4 * len(rows) + 1.5), sharey=True)
    for axis, (key, title) in zip(axes, (("iqm", "IQM"), ("mean", "Mean")), strict=True):
        centers = [100 * r[key] for r in rows]
        errors = [
            [100 * (r[key] - r[f"{key}_low"]) for r in rows],
            [100 * (r[f"{key}_high"] - r[key]) for r in rows],
        ]
        axis.errorbar(centers, range(len(rows)), xerr=errors, fmt="o", capsize=3)
        axis.set_title(f"{title} success (%)")
        axis.grid(alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [r["method"] for r in rows])
    _save_figure(figure, path)


def _figure_profiles(profiles: list[dict], path: Path) -> bool:
    if not profiles:
        return False
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for name in dict.fromkeys(r["method"] for r in profiles):
        mine = [r for r in profiles if r["method"] == name]
        taus = [100 * r["tau"] for r in mine]
        fractions = [r["fraction"] for r in mine]
        (line,) = axis.plot(taus, fractions, drawstyle="steps-post", label=name)
        low, high = [r["ci_low"] for r in mine], [r["ci_high"] for r in mine]
        axis.fill_between(taus, low, high, step="post", color=line.get_color(), alpha=0.15)
    axis.set_xlabel("success threshold tau (%)")
    axis.set_ylabel("fraction of runs with success > tau")
    axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    _save_figure(figure, path)
    return True


def _figure_weights(rows: list[dict], stage: str, path: Path) -> bool:
    rows = [r for r in rows if r["stage"] == stage and r["sampler"] not in ("none", "policy")]
    domains = sorted({r["domain"] for r in rows})
    if not rows or len({r["weight"] for r in rows}) < 2:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(domains), figsize=(4 * len(domains), 3.2), squeeze=False)
    for axis, domain in zip(axes[0], domains, strict=True):
        for method in sorted({r["method"] for r in rows if r["domain"] == domain}):
            weights = sorted({r["weight"] for r in rows if r["domain"] == domain and r["method"] == method})
            means = [
                100
                * np.mean(
                    [
                        r["success"]
                        for r in rows
                        if r["domain"] == domain and r["method"] == method and r["weight"] == w
                    ]
                )
                for w in weights
            ]
            axis.plot(weights, means, marker="o", label=method)
        axis.set_title(domain)
        axis.set_xlabel("guidance weight")
        axis.set_ylabel("success (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    _save_figure(figure, path)
    return True


def _figure_best_of_n(rows: list[dict], stage: str, path: Path) -> bool:
    rows = [r for r in rows if r["stage"] == stage]
    if len({r["bfn"] for r in rows}) < 2:
        return False
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for sampler in sorted({r["sampler"] for r in rows}):
        ns = sorted({r["bfn"] for r in rows if r["sampler"] == sampler})
        means = [
            100 * np.mean([r["success"] for r in rows if r["sampler"] == sampler and r["bfn"] == n])
            for n in ns
        ]
        axis.plot(ns, means, marker="o", label=sampler)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("best-of-N (test-time compute)")
    axis.set_ylabel("success (%), mean over tasks, seeds, weights")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    _save_figure(figure, path)
    return True


def compute_points(rows: list[dict], stage: str) -> list[dict]:
    """Fig. 7's view: per method, success (mean over tasks and seeds) against test-time compute,
    the policy's milliseconds per executed action (its query time summed over the evaluations ÷
    the env steps they executed; chunked policies answer once per chunk)."""
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        if row["stage"] == stage:
            by_method.setdefault(_stage_method(row, stage), []).append(row)
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


def _figure_compute(points: list[dict], path: Path) -> bool:
    points = [p for p in points if p["ms_per_action"]]
    if len(points) < 2:
        return False
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for point in points:
        axis.scatter(point["ms_per_action"], 100 * point["success"], s=18)
        axis.annotate(point["method"], (point["ms_per_action"], 100 * point["success"]), fontsize=6)
    axis.set_xscale("log")
    axis.set_xlabel("policy ms per action (test-time compute, this machine)")
    axis.set_ylabel("success (%), mean over tasks and seeds")
    axis.grid(alpha=0.3)
    _save_figure(figure, path)
    return True


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
    matrices, _ = _complete_matrices(cells, seeds, tasks)
    best: dict[tuple, tuple] = {}
    for key in sorted(matrices, key=lambda k: (k[0], k[1], k[3], k[2])):  # ties: smaller weight
        method_width = key[:2]
        if method_width not in best or matrices[key].mean() > matrices[best[method_width]].mean():
            best[method_width] = key
    np.random.seed(seed)
    intervals = _mean_intervals({key: matrices[key] for key in best.values()}, reps)
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


def _figure_model_size(points: list[dict], path: Path) -> bool:
    if not points:
        return False
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for method in dict.fromkeys(p["method"] for p in points):
        mine = [p for p in points if p["method"] == method]
        means = [100 * p["mean"] for p in mine]
        errors = [
            [100 * (p["mean"] - p["ci_low"]) for p in mine],
            [100 * (p["ci_high"] - p["mean"]) for p in mine],
        ]
        axis.errorbar([p["width"] for p in mine], means, yerr=errors, marker="o", capsize=3, label=method)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("hidden width (units per layer)")
    axis.set_ylabel("success (%), mean over tasks and seeds")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    _save_figure(figure, path)
    return True


def offline_report(
    sweep_dir: Path, protocol: dict, rows: list[dict], settings: dict[str, Any]
) -> dict[str, Any]:
    """The offline weight choice of every protocol choice with a weight grid, next to the rollout
    choice (`qgf.experiments.offline`); `settings` is the spec's [report] table."""
    from qgf.experiments import offline

    tolerance = float(settings.get("offline_tolerance", offline.DEFAULT_TOLERANCE))
    observations = int(settings.get("offline_observations", offline.DEFAULT_OBSERVATIONS))
    tables, notes = offline.sweep_tables(sweep_dir, protocol, observations=observations)
    final: dict[tuple[str, str, float], list[float]] = {}
    for row in rows:
        if row["stage"] == "final":
            final.setdefault((row["method"], row["domain"], float(row["weight"])), []).append(row["success"])
    final_success = {key: float(np.mean(values)) for key, values in final.items()}
    return {
        "rule": offline.RULE.format(tolerance=tolerance),
        "tolerance": tolerance,
        "rows": offline.compare_choices(protocol, tables, final_success, tolerance),
        "tables": [{"method": m, "domain": d, **table} for (m, d), table in sorted(tables.items())],
        "notes": notes,
    }


def write_report(
    sweep_dir: str | Path, *, reps: int = 2000, reference: str | None = None, offline: bool | None = None
) -> list[Path]:
    """Write SWEEP_DIR/report/{report.md, runs.csv, per_task.csv, aggregate.csv, improvement.csv,
    performance_profiles.csv, model_size.csv, offline_choice.csv, offline_tables.json, *.png};
    returns the paths written. `offline` (default: the spec's report.offline, else true) measures
    the offline weight choice on the tuning runs when the sweep has a protocol."""
    sweep_dir = Path(sweep_dir)
    rows = collect_rows(sweep_dir)
    if not rows:
        raise QGFError(f"{sweep_dir} holds no finished evaluation of a sweep; run qgf sweep first")
    stages = {row["stage"] for row in rows}
    stage = "final" if "final" in stages else "sweep" if "sweep" in stages else "tune"
    spec_path = sweep_dir / "spec.json"
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    settings = spec.get("report") or {}
    if reference is None:
        reference = settings.get("reference", "qgf")
    numbers = aggregate(rows, stage, reference=reference, reps=reps)
    weight_stage = "tune" if "tune" in stages else "sweep"
    model_size = model_size_points(rows, weight_stage, reps=reps)
    protocol_path = sweep_dir / "protocol.json"
    protocol = json.loads(protocol_path.read_text()) if protocol_path.is_file() else None
    offline = settings.get("offline", True) if offline is None else offline
    choice = offline_report(sweep_dir, protocol, rows, settings) if protocol and offline else None
    out = sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tables = [
        ("runs.csv", rows),
        ("per_task.csv", numbers["per_task"]),
        ("aggregate.csv", numbers["aggregate"]),
        ("improvement.csv", numbers["improvement"]),
        ("performance_profiles.csv", numbers["profiles"]),
    ]
    compute = compute_points(rows, stage)
    tables.append(("compute.csv", compute))
    if model_size:
        tables.append(("model_size.csv", model_size))
    if choice is not None:
        tables.append(("offline_choice.csv", choice["rows"]))
        atomic_write_json(out / "offline_tables.json", choice)
        written.append(out / "offline_tables.json")
    for name, table in tables:
        atomic_write_text(out / name, _csv(table))
        written.append(out / name)
    figures = []
    if numbers["aggregate"]:
        _figure_methods(numbers, out / "fig5_methods.png")
        figures.append("fig5_methods.png")
    if _figure_profiles(numbers["profiles"], out / "performance_profiles.png"):
        figures.append("performance_profiles.png")
    if _figure_weights(rows, weight_stage, out / "fig20_success_vs_weight.png"):
        figures.append("fig20_success_vs_weight.png")
    if _figure_best_of_n(rows, weight_stage, out / "fig7_best_of_n.png"):
        figures.append("fig7_best_of_n.png")
    if _figure_compute(compute, out / "fig7_compute.png"):
        figures.append("fig7_compute.png")
    if _figure_model_size(model_size, out / "fig9_model_size.png"):
        figures.append("fig9_model_size.png")
    atomic_write_text(out / "report.md", markdown(numbers, protocol, figures, choice))
    written += [out / name for name in figures] + [out / "report.md"]
    return written
