"""The figures of `qgf report` (PNG, through `qgf.plots`): Fig. 5 view (methods with CIs),
performance profiles, Fig. 20 view (success against guidance weight per domain), Fig. 7 views
(success against best-of-N and against policy time per action), Fig. 9 view (success against width).

Each `figure_*` draws from rows (`rows.collect_rows`) or numbers (`stats`) and returns whether it
drew anything (a view that needs two weights, N or widths is left out otherwise). May import numpy
and `qgf.plots` (matplotlib on first use); nothing of this package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qgf.plots import pyplot, save_figure


def _save(figure, path: Path) -> None:
    save_figure(figure, path, dpi=120, bbox_inches="tight")


def _by_method(records: list[dict]) -> dict[str, list[dict]]:
    """{method: its records}, methods in the order they first appear."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record["method"], []).append(record)
    return groups


def _finish_axis(axis, xlabel: str, ylabel: str, *, log_base: int | None = None, legend: bool = True) -> None:
    """Axis labels, an optional log x-axis, the legend and the grid every line view shares."""
    if log_base is not None:
        axis.set_xscale("log", base=log_base)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if legend:
        axis.legend(fontsize=7)
    axis.grid(alpha=0.3)


def figure_methods(numbers: dict, path: Path) -> None:
    """Fig. 5 view: IQM and mean success per method with their 95% CIs."""
    plt = pyplot()
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
    _save(figure, path)


def figure_profiles(profiles: list[dict], path: Path) -> bool:
    """Performance profiles (`stats.performance_profiles`) with their CI bands."""
    if not profiles:
        return False
    figure, axis = pyplot().subplots(figsize=(5.5, 3.8))
    for name, mine in _by_method(profiles).items():
        taus = [100 * r["tau"] for r in mine]
        fractions = [r["fraction"] for r in mine]
        (line,) = axis.plot(taus, fractions, drawstyle="steps-post", label=name)
        low, high = [r["ci_low"] for r in mine], [r["ci_high"] for r in mine]
        axis.fill_between(taus, low, high, step="post", color=line.get_color(), alpha=0.15)
    axis.set_ylim(-0.02, 1.02)
    _finish_axis(axis, "success threshold tau (%)", "fraction of runs with success > tau")
    _save(figure, path)
    return True


def figure_weights(rows: list[dict], stage: str, path: Path) -> bool:
    """Fig. 20 view: per domain, each guided method's mean success against the guidance weight."""
    rows = [r for r in rows if r["stage"] == stage and r["sampler"] not in ("none", "policy")]
    domains = sorted({r["domain"] for r in rows})
    if not rows or len({r["weight"] for r in rows}) < 2:
        return False
    figure, axes = pyplot().subplots(1, len(domains), figsize=(4 * len(domains), 3.2), squeeze=False)
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
        _finish_axis(axis, "guidance weight", "success (%)")
    _save(figure, path)
    return True


def figure_best_of_n(rows: list[dict], stage: str, path: Path) -> bool:
    """Fig. 7 view: per sampler, mean success against best-of-N."""
    rows = [r for r in rows if r["stage"] == stage]
    if len({r["bfn"] for r in rows}) < 2:
        return False
    figure, axis = pyplot().subplots(figsize=(5, 3.5))
    for sampler in sorted({r["sampler"] for r in rows}):
        ns = sorted({r["bfn"] for r in rows if r["sampler"] == sampler})
        means = [
            100 * np.mean([r["success"] for r in rows if r["sampler"] == sampler and r["bfn"] == n])
            for n in ns
        ]
        axis.plot(ns, means, marker="o", label=sampler)
    _finish_axis(
        axis, "best-of-N (test-time compute)", "success (%), mean over tasks, seeds, weights", log_base=2
    )
    _save(figure, path)
    return True


def figure_compute(points: list[dict], path: Path) -> bool:
    """Fig. 7 view: per method, success against policy milliseconds per action (`stats.compute_points`)."""
    points = [p for p in points if p["ms_per_action"]]
    if len(points) < 2:
        return False
    figure, axis = pyplot().subplots(figsize=(6, 4))
    for point in points:
        axis.scatter(point["ms_per_action"], 100 * point["success"], s=18)
        axis.annotate(point["method"], (point["ms_per_action"], 100 * point["success"]), fontsize=6)
    _finish_axis(
        axis,
        "policy ms per action (test-time compute, this machine)",
        "success (%), mean over tasks and seeds",
        log_base=10,
        legend=False,
    )
    _save(figure, path)
    return True


def figure_model_size(points: list[dict], path: Path) -> bool:
    """Fig. 9 view: per method, mean success with its CI against hidden width (`stats.model_size_points`)."""
    if not points:
        return False
    figure, axis = pyplot().subplots(figsize=(5, 3.5))
    for method, mine in _by_method(points).items():
        means = [100 * p["mean"] for p in mine]
        errors = [
            [100 * (p["mean"] - p["ci_low"]) for p in mine],
            [100 * (p["ci_high"] - p["mean"]) for p in mine],
        ]
        axis.errorbar([p["width"] for p in mine], means, yerr=errors, marker="o", capsize=3, label=method)
    _finish_axis(axis, "hidden width (units per layer)", "success (%), mean over tasks and seeds", log_base=2)
    _save(figure, path)
    return True
