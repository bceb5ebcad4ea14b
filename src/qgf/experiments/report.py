"""Aggregate statistics of a sweep with rliable (Agarwal et al., 2021), and `qgf report`'s views.

- per task: success mean over seeds with a 95% bootstrap CI (over seeds);
- across tasks: IQM and mean with stratified-bootstrap 95% CIs (tasks are the strata);
- probability of improvement of the reference method (QGF) over each other method, with CI.

The main stage is 'final' (the protocol's chosen values on fresh evaluation seeds) when the sweep
has one, else 'sweep' (each weight is then a method of its own, `qgf@0.1`: choosing the best weight
on the same episodes would be an oracle). Figures: Fig. 5 view (methods with CIs), Fig. 20 view
(success against guidance weight per domain, from the 'tune' or 'sweep' stage), Fig. 7 view
(success against best-of-N) when the sweep varies N.
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
from qgf.fileio import atomic_path, atomic_write_text

CONFIDENCE = 0.95


def collect_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per (evaluation, condition): stage, task, domain, method, weight, seed, success."""
    from qgf.envs import parse_name
    from qgf.results import read_results

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
                    "seed": sweep["run_seed"],
                    "success": condition.success_rate,
                    "episodes": condition.episodes,
                    "policy_seconds": condition.policy_seconds,
                }
            )
    return rows


def _score_matrices(rows: list[dict], stage: str) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """{method: (seeds, tasks) success} for methods evaluated on every task and seed of the stage."""
    rows = [row for row in rows if row["stage"] == stage]
    tasks = sorted({row["task"] for row in rows})
    seeds = sorted({row["seed"] for row in rows})
    per_method: dict[str, dict[tuple[int, str], float]] = {}
    for row in rows:
        name = row["method"]
        if stage == "sweep" and row["sampler"] not in ("none", "policy"):
            name = f"{name}@{row['weight']:g}"
        if stage == "sweep" and row["point"] != "default":
            name = f"{name}[{row['point']}]"
        per_method.setdefault(name, {})[(row["seed"], row["task"])] = row["success"]
    matrices, incomplete = {}, []
    for name, cells in per_method.items():
        if len(cells) == len(seeds) * len(tasks):
            matrices[name] = np.array([[cells[(s, t)] for t in tasks] for s in seeds], np.float64)
        else:
            incomplete.append(name)
    return matrices, tasks, incomplete


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
            "incomplete": incomplete,
        }
    np.random.seed(seed)  # rliable draws its bootstrap from numpy's global generator
    per_task = []
    for index, task in enumerate(tasks):
        column = {name: matrix[:, [index]] for name, matrix in matrices.items()}
        points, intervals = rly.get_interval_estimates(
            column,
            lambda x: np.array([metrics.aggregate_mean(x)]),
            reps=reps,
            confidence_interval_size=CONFIDENCE,
        )
        for name in matrices:
            per_task.append(
                {
                    "task": task,
                    "method": name,
                    "mean": float(points[name][0]),
                    "ci_low": float(intervals[name][0, 0]),
                    "ci_high": float(intervals[name][1, 0]),
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
    if reference in matrices:
        pairs = {
            f"{reference},{name}": (matrices[reference], matrices[name])
            for name in matrices
            if name != reference
        }
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
                        "method": reference,
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


def markdown(numbers: dict, protocol: dict | None, figures: list[str]) -> str:
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
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def _save_figure(figure, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")


def _figure_methods(numbers: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    plt.close(figure)


def _figure_weights(rows: list[dict], stage: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["stage"] == stage and r["sampler"] not in ("none", "policy")]
    domains = sorted({r["domain"] for r in rows})
    if not rows or len({r["weight"] for r in rows}) < 2:
        return False
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
    plt.close(figure)
    return True


def _figure_best_of_n(rows: list[dict], stage: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["stage"] == stage]
    if len({r["bfn"] for r in rows}) < 2:
        return False
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
    plt.close(figure)
    return True


def write_report(sweep_dir: str | Path, *, reps: int = 2000, reference: str | None = None) -> list[Path]:
    """Write SWEEP_DIR/report/{report.md, runs.csv, per_task.csv, aggregate.csv, improvement.csv,
    *.png}; returns the paths written."""
    sweep_dir = Path(sweep_dir)
    rows = collect_rows(sweep_dir)
    if not rows:
        raise QGFError(f"{sweep_dir} holds no finished evaluation of a sweep; run qgf sweep first")
    stages = {row["stage"] for row in rows}
    stage = "final" if "final" in stages else "sweep" if "sweep" in stages else "tune"
    if reference is None:
        spec_path = sweep_dir / "spec.json"
        spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
        reference = (spec.get("report") or {}).get("reference", "qgf")
    numbers = aggregate(rows, stage, reference=reference, reps=reps)
    out = sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in (
        ("runs.csv", rows),
        ("per_task.csv", numbers["per_task"]),
        ("aggregate.csv", numbers["aggregate"]),
        ("improvement.csv", numbers["improvement"]),
    ):
        atomic_write_text(out / name, _csv(table))
        written.append(out / name)
    figures = []
    if numbers["aggregate"]:
        _figure_methods(numbers, out / "fig5_methods.png")
        figures.append("fig5_methods.png")
    weight_stage = "tune" if "tune" in stages else "sweep"
    if _figure_weights(rows, weight_stage, out / "fig20_success_vs_weight.png"):
        figures.append("fig20_success_vs_weight.png")
    if _figure_best_of_n(rows, weight_stage, out / "fig7_best_of_n.png"):
        figures.append("fig7_best_of_n.png")
    protocol_path = sweep_dir / "protocol.json"
    protocol = json.loads(protocol_path.read_text()) if protocol_path.is_file() else None
    atomic_write_text(out / "report.md", markdown(numbers, protocol, figures))
    written += [out / name for name in figures] + [out / "report.md"]
    return written
