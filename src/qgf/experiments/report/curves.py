"""The learning-curve views of `qgf report`: curves (success against training steps, mean and 95% CI
over seeds, per task and over tasks: the QAM paper's Fig. 2 style), the plateau table (each
method at its plateau, and which methods did not reach one within the budget), and the compute
view (success at the plateau against training time and test-time milliseconds per action).

Inputs: the `RUN/curve.json` of every seed of the sweep's train jobs (`qgf.evaluation.curve`).
The plateau rule (`plateau`, docs/experiments.md "Learning curves") reads the seed-mean curve and
its 95% CIs. May import numpy, `qgf.evaluation.curve`, `qgf.experiments.spec` (method names) and
`qgf.plots` (on first use); nothing else of this package.
"""

from __future__ import annotations

import math
import types
from pathlib import Path
from typing import Any

import numpy as np

from qgf.experiments.spec import method_name

CONFIDENCE = 0.95


# ------------------------------------------------------------------ rows


def collect_curve_rows(
    sweep_dir: str | Path, run_dirs: list[Path] | None = None, online: bool = False
) -> list[dict[str, Any]]:
    """One row per (run, point, condition): task, method, agent (label), seed, step, env_steps,
    success, its Wilson CI, the training seconds so far. `run_dirs` (default: every
    SWEEP/runs/<group>/<task>/seed<S>) are the runs to read; a run without a curve is skipped.
    `online`: the online phases' curves (RUN/online/curve.json) of the sweep's online jobs
    (default: every SWEEP/online/<group>/<task>/seed<S>-<hash>), each method named '<m> online'."""
    from qgf.envs import parse_name
    from qgf.evaluation.curve import read_curve

    sweep_dir = Path(sweep_dir)
    if run_dirs is None:
        run_dirs = sorted(sweep_dir.glob("online/*/*/seed*" if online else "runs/*/*/seed*"))
    groups_per_label: dict[str, set[str]] = {}
    for run_dir in run_dirs:
        group = run_dir.parent.parent.name
        groups_per_label.setdefault(group.rsplit("-", 1)[0], set()).add(group)
    rows = []
    for run_dir in run_dirs:
        document = read_curve(run_dir / "online" if online else run_dir)
        if document is None:
            continue
        group, task = run_dir.parent.parent.name, run_dir.parent.name
        label = group.rsplit("-", 1)[0]
        config = _read_json(run_dir / "config.json")
        agent = types.SimpleNamespace(name=config.get("agent"), label=label)
        for point in document["points"]:
            for result in point["results"]:
                method = method_name(agent, result["label"])
                if result["estimator"] not in ("none", "policy"):
                    method = f"{method}@{result['weight']:g}"
                if len(groups_per_label[label]) > 1:  # grid points of one agent: one method each
                    method = f"{method}[{group.rsplit('-', 1)[1]}]"
                rows.append(
                    {
                        "task": task,
                        "domain": parse_name(task).domain,
                        "method": f"{method} online" if online else method,
                        "agent": label,
                        "seed": int(run_dir.name.removeprefix("seed").split("-")[0]),
                        "step": point["step"],
                        "env_steps": point.get("env_steps"),
                        "success": result["success_rate"],
                        "ci_low": result["ci_low"],
                        "ci_high": result["ci_high"],
                        "episodes": result["episodes"],
                        "train_seconds": point.get("train_seconds"),
                    }
                )
    return rows


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------ statistics


def seed_interval(values: list[float], single: tuple[float, float] | None = None) -> tuple[float, float]:
    """The 95% CI of the mean of per-seed successes: Student's t over seeds (clipped to [0, 1]);
    with one seed, `single` (that run's own Wilson interval over its episodes)."""
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return single if single is not None else (mean, mean)
    from scipy.stats import t

    half = (
        float(t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1))
        * float(values.std(ddof=1))
        / math.sqrt(len(values))
    )
    return max(0.0, mean - half), min(1.0, mean + half)


def curve_table(rows: list[dict], x: str = "step") -> list[dict]:
    """The seed-mean curves against `x` (a row key: 'step', the training steps, or 'env_steps'):
    per (task, method, x), and per (method, x) over tasks ('all': each seed's mean over the tasks,
    then mean and CI over seeds, at the x every task has). Each record: task, method, x, success,
    ci_low, ci_high, seeds, train_seconds (seed mean)."""
    cells: dict[tuple[str, str, int], dict[int, dict]] = {}
    for row in rows:
        cells.setdefault((row["task"], row["method"], row[x]), {})[row["seed"]] = row
    table = [_record(task, method, step, by_seed, x) for (task, method, step), by_seed in cells.items()]
    tasks = sorted({row["task"] for row in rows})
    if len(tasks) > 1:
        for method in sorted({row["method"] for row in rows}):
            steps = sorted({row[x] for row in rows if row["method"] == method})
            for step in steps:
                per_task = [cells.get((task, method, step)) for task in tasks]
                if any(cell is None for cell in per_task):
                    continue
                seeds = sorted(set.intersection(*(set(cell) for cell in per_task)))
                if not seeds:
                    continue
                merged = {
                    seed: {
                        "success": float(np.mean([cell[seed]["success"] for cell in per_task])),
                        "train_seconds": _mean([cell[seed]["train_seconds"] for cell in per_task]),
                    }
                    for seed in seeds
                }
                table.append(_record("all", method, step, merged, x))
    return sorted(table, key=lambda r: (r["task"], r["method"], r[x]))


def _mean(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _record(task: str, method: str, step: int, by_seed: dict[int, dict], x: str = "step") -> dict:
    runs = list(by_seed.values())
    successes = [run["success"] for run in runs]
    single = (runs[0]["ci_low"], runs[0]["ci_high"]) if len(runs) == 1 and "ci_low" in runs[0] else None
    low, high = seed_interval(successes, single)
    return {
        "task": task,
        "method": method,
        x: step,
        "success": float(np.mean(successes)),
        "ci_low": low,
        "ci_high": high,
        "seeds": len(runs),
        "train_seconds": _mean([run.get("train_seconds") for run in runs]),
        "by_seed": {seed: run["success"] for seed, run in by_seed.items()},  # read by the plateau rule
    }


def plateau(points: list[dict]) -> dict[str, Any]:
    """The plateau rule on one curve (`points`: step, success, ci_low, ci_high and by_seed, the
    per-seed successes, sorted by step). A single curve point of a few episodes is too noisy to
    judge (at 5 episodes and 3 seeds its 95% CI spans tens of points), so the rule pools windows:
    the last k = max(1, n // 3) points of the n, and the k points before them. Each seed's mean
    over a window is one number; the window's *level* is their mean over seeds with a Student-t
    95% CI over seeds (one seed: the last point's own CI). The curve has reached its plateau within
    the budget when the two windows' levels lie within each other's CIs. The plateau starts at the
    first point from which no later point of the seed-mean curve falls below the final level's CI
    (at the latest, the final window's first point). Without a plateau the step is the budget (the
    last point). Returns {reached, step, index, level, level_low, level_high, window}."""
    if not points:
        raise ValueError("a plateau needs at least one point")
    n = len(points)
    k = max(1, n // 3)
    level = _window_level(points[n - k :], single=points[-1])
    out = {"level": level[0], "level_low": level[1], "level_high": level[2], "window": k}
    if n < 2:
        return {"reached": False, "step": points[-1]["step"], "index": n - 1, **out}
    before = _window_level(points[max(0, n - 2 * k) : n - k], single=points[n - k - 1])

    def inside(value: float, interval: tuple[float, float, float]) -> bool:
        return interval[1] - 1e-12 <= value <= interval[2] + 1e-12

    if not (inside(before[0], level) and inside(level[0], before)):
        return {"reached": False, "step": points[-1]["step"], "index": n - 1, **out}
    start = n - k
    while start > 0 and all(point["success"] >= level[1] - 1e-12 for point in points[start - 1 :]):
        start -= 1
    return {"reached": True, "step": points[start]["step"], "index": start, **out}


def _window_level(window: list[dict], single: dict) -> tuple[float, float, float]:
    """(mean, CI low, CI high) over seeds of each seed's mean success over the window's points,
    for the seeds present at every point of the window."""
    seeds = set.intersection(*(set(point["by_seed"]) for point in window))
    values = [float(np.mean([point["by_seed"][seed] for point in window])) for seed in sorted(seeds)]
    mean = float(np.mean(values))
    low, high = seed_interval(values, (single["ci_low"], single["ci_high"]))
    return mean, low, high


def plateau_table(curves: list[dict], compute: list[dict] | None = None) -> list[dict]:
    """Per (task or 'all', method): success at the plateau (the level of the curve's final window,
    `plateau`) with its 95% CI over seeds, steps to
    the plateau, whether it was reached within the budget, training steps/s (the last point's
    step ÷ its training seconds, seeds trained as one program sharing that time), the final
    point's success, and the test-time ms per action where the sweep's evaluations measured it."""
    ms = {point["method"]: point.get("ms_per_action") for point in compute or []}
    grouped: dict[tuple[str, str], list[dict]] = {}
    for record in curves:
        grouped.setdefault((record["task"], record["method"]), []).append(record)
    table = []
    for (task, method), points in sorted(grouped.items()):
        points = sorted(points, key=lambda p: p["step"])
        found = plateau(points)
        at, last = points[found["index"]], points[-1]
        rate = last["step"] / last["train_seconds"] if last.get("train_seconds") else None
        table.append(
            {
                "task": task,
                "method": method,
                "success": found["level"],
                "ci_low": found["level_low"],
                "ci_high": found["level_high"],
                "window_points": found["window"],
                "plateau_step": found["step"],
                "reached_plateau": found["reached"],
                "budget": last["step"],
                "final_success": last["success"],
                "steps_per_s": rate,
                "train_seconds_to_plateau": at.get("train_seconds"),
                "ms_per_action": ms.get(method, ms.get(method.split("@")[0])),
                "seeds": at["seeds"],
            }
        )
    return table


def plateau_markdown(table: list[dict]) -> list[str]:
    """The report.md section: the plateau table over tasks (or the one task), and the methods
    that did not reach a plateau."""
    tasks = {row["task"] for row in table}
    shown = [row for row in table if row["task"] == ("all" if "all" in tasks else next(iter(sorted(tasks))))]
    lines = [
        "## At each method's plateau (learning curves)",
        "",
        "Success on the plateau: each seed's mean over the curve's last third of points, then mean "
        "and 95% CI over seeds (docs/experiments.md, 'Plateau rule'); the main tables above are the "
        "final evaluations at the budget, with more episodes.",
        "",
        "| method | success | 95% CI | steps to plateau | plateau reached | steps/s | ms/action |",
        "|---|---:|---|---:|---|---:|---:|",
    ]
    for row in shown:
        rate = f"{row['steps_per_s']:.0f}" if row["steps_per_s"] else "-"
        ms = f"{row['ms_per_action']:.2f}" if row["ms_per_action"] is not None else "-"
        reached = "yes" if row["reached_plateau"] else f"**no** (budget {row['budget']})"
        lines.append(
            f"| {row['method']} | {100 * row['success']:.1f}% | [{100 * row['ci_low']:.1f}, "
            f"{100 * row['ci_high']:.1f}] | {row['plateau_step']} | {reached} | {rate} | {ms} |"
        )
    missing = [row["method"] for row in shown if not row["reached_plateau"]]
    lines += ["", f"Did not reach a plateau within the budget: {', '.join(missing) or 'none'}."]
    if len(tasks) > 1:
        per_task: dict[str, list[str]] = {}
        for row in table:
            if row["task"] != "all" and not row["reached_plateau"]:
                per_task.setdefault(row["method"], []).append(_short_task(row["task"]))
        listed = "; ".join(f"{method} ({', '.join(names)})" for method, names in sorted(per_task.items()))
        lines.append(f"On single tasks (plateau.csv): {listed or 'none'}.")
    return lines + [""]


def _short_task(task: str) -> str:
    """'cube-single-play-singletask-task3-v0' -> 'task3'; other names unchanged."""
    for part in task.split("-"):
        if part.startswith("task") and part[4:].isdigit():
            return part
    return task


# ------------------------------------------------------------------ figures


def figure_curves(curves: list[dict], path: Path) -> bool:
    """Success against training steps, one line per method with its 95% CI band over seeds, one
    panel per task and one over tasks ('all')."""
    return _draw_curves(curves, path, "step", "training steps")


def _draw_curves(curves: list[dict], path: Path, x: str, xlabel: str, references: list[dict] = ()) -> bool:
    """`curves` (curve_table records against `x`) as one line per method with its CI band, and
    each of `references` (task, method, success, ci_low, ci_high) as a flat dashed line and band."""
    from qgf.plots import pyplot, save_figure

    tasks = sorted({r["task"] for r in curves}, key=lambda t: (t != "all", t))
    if not tasks:
        return False
    plt = pyplot()
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    methods = sorted({r["method"] for r in [*curves, *references]})
    palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    colors = {method: palette(i % palette.N) for i, method in enumerate(methods)}  # one per method
    for axis, task in zip(axes[0], tasks, strict=True):
        mine = [r for r in curves if r["task"] == task]
        for method in sorted({r["method"] for r in mine}):
            points = sorted((r for r in mine if r["method"] == method), key=lambda r: r[x])
            steps = [p[x] for p in points]
            color = colors[method]
            axis.plot(steps, [p["success"] for p in points], marker="o", ms=3, label=method, color=color)
            axis.fill_between(
                steps, [p["ci_low"] for p in points], [p["ci_high"] for p in points], color=color, alpha=0.15
            )
        for reference in (r for r in references if r["task"] == task):
            color = colors[reference["method"]]
            axis.axhline(reference["success"], ls="--", color=color, label=reference["method"])
            axis.axhspan(reference["ci_low"], reference["ci_high"], color=color, alpha=0.08)
        axis.set_title("over tasks" if task == "all" else task, fontsize=8)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("success")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    save_figure(figure, path, dpi=120, bbox_inches="tight")
    return True


def figure_curve_compute(table: list[dict], path: Path) -> bool:
    """The compute view: success at the plateau against training seconds to the plateau (left)
    and against test-time ms per action (right, where measured); hollow markers: no plateau."""
    from qgf.plots import pyplot, save_figure

    task = "all" if any(r["task"] == "all" for r in table) else (table[0]["task"] if table else None)
    rows = [r for r in table if r["task"] == task and r.get("train_seconds_to_plateau") is not None]
    if not rows:
        return False
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.4), sharey=True)
    for row in rows:
        face = None if row["reached_plateau"] else "none"
        error = [[row["success"] - row["ci_low"]], [row["ci_high"] - row["success"]]]
        marker = left.errorbar(
            row["train_seconds_to_plateau"], row["success"], yerr=error, fmt="o", label=row["method"]
        )
        if face:
            marker[0].set_markerfacecolor(face)
        if row.get("ms_per_action"):
            right.errorbar(
                row["ms_per_action"], row["success"], yerr=error, fmt="o", color=marker[0].get_color()
            )
    left.set_xlabel("training seconds to the plateau")
    right.set_xlabel("test-time ms per action")
    right.set_xscale("log")
    left.set_ylabel("success at the plateau")
    for axis in (left, right):
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    left.legend(fontsize=7)
    save_figure(figure, path, dpi=120, bbox_inches="tight")
    return True


# ------------------------------------------------------------------ the online phase (Fig. 2)


def online_curve_table(rows: list[dict]) -> list[dict]:
    """The online phases' seed-mean curves against env steps (`curve_table` with x = 'env_steps':
    per task and over tasks, mean and 95% CI over seeds), each record with env_steps_per_s: its env
    steps ÷ the seed-mean wall-clock of the phase so far (acting, env steps, updates; the curve's
    evaluations left out; None at env step 0)."""
    table = curve_table(rows, x="env_steps")
    for record in table:
        seconds = record["train_seconds"]
        record["env_steps_per_s"] = record["env_steps"] / seconds if seconds else None
    return table


def frozen_references(rows: list[dict]) -> list[dict]:
    """The flat reference lines of the offline methods that were not fine-tuned: per (task, method)
    of `rows` (one success per task, method and seed) and per method over tasks ('all'), the mean
    over seeds and its 95% CI (`seed_interval`, as the curves)."""
    table = curve_table([{**row, "at": 0, "train_seconds": None} for row in rows], x="at")
    return [{key: value for key, value in r.items() if key not in ("at", "by_seed")} for r in table]


ONLINE_COLUMNS = ("task", "method", "kind", "env_steps", "success", "ci_low", "ci_high", "seeds")
ONLINE_COLUMNS += ("train_seconds", "env_steps_per_s")


def online_csv_rows(curves: list[dict], references: list[dict]) -> list[dict]:
    """online_curves.csv: the curves' points (kind 'online') and the flat references (kind
    'frozen offline', no env_steps)."""
    rows = [{key: record.get(key) for key in ONLINE_COLUMNS} | {"kind": "online"} for record in curves]
    return rows + [
        {key: record.get(key) for key in ONLINE_COLUMNS} | {"kind": "frozen offline"} for record in references
    ]


def online_markdown(curves: list[dict], references: list[dict]) -> list[str]:
    """The report.md section: per online method (over tasks, or the one task) its success at env
    step 0 and at its last point with 95% CIs over seeds and its env steps/s; then the references."""
    tasks = {record["task"] for record in curves}
    task = "all" if "all" in tasks else sorted(tasks)[0]
    lines = [
        "## Online phase (QAM Fig. 2 view)",
        "",
        f"Success against env steps ({'over tasks' if task == 'all' else task}): mean and 95% CI over "
        "seeds (Student's t); env steps/s over the whole phase (acting, env and updates, the curve's "
        "evaluations left out). Frozen offline methods (not fine-tuned) are flat references.",
        "",
        "| method | at env step 0 | env steps | success | 95% CI | env steps/s |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for method in sorted({record["method"] for record in curves if record["task"] == task}):
        points = sorted((r for r in curves if r["task"] == task and r["method"] == method), key=_env_steps)
        first, last = points[0], points[-1]
        rate = f"{last['env_steps_per_s']:.1f}" if last.get("env_steps_per_s") else "-"
        start = f"{100 * first['success']:.1f}%" if first["env_steps"] == 0 else "-"
        lines.append(
            f"| {method} | {start} | {last['env_steps']} | {100 * last['success']:.1f}% | "
            f"[{100 * last['ci_low']:.1f}, {100 * last['ci_high']:.1f}] | {rate} |"
        )
    for record in (r for r in references if r["task"] == task):
        lines.append(
            f"| {record['method']} (flat) | | | {100 * record['success']:.1f}% | "
            f"[{100 * record['ci_low']:.1f}, {100 * record['ci_high']:.1f}] | - |"
        )
    return lines + [""]


def _env_steps(record: dict) -> int:
    return record["env_steps"]


def figure_online_curves(curves: list[dict], references: list[dict], path: Path) -> bool:
    """Fig. 2's view: success against env steps, one line per online method with its 95% CI band
    over seeds, a dashed flat line per frozen offline method; a panel per task and over tasks."""
    return _draw_curves(curves, path, "env_steps", "env steps", references)
