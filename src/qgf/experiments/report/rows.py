"""A sweep's finished evaluations as flat rows: the input of every table and figure of `qgf report`.

One row per (evaluation, condition) read from SWEEP_DIR/evals/*/*/*/*/results.json, and the
method name a row carries in the tables of a stage. May import `qgf.envs`,
`qgf.evaluation.results` and `qgf.experiments.spec`; nothing else of this package.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from qgf.experiments.spec import method_name


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
        methods = sweep.get("methods") or [method_name(agent, c.label) for c in results.results]
        for condition, method in zip(results.results, methods, strict=True):
            rows.append(
                {
                    "stage": sweep["stage"],
                    "task": sweep["task"],
                    "domain": parse_name(sweep["task"]).domain,
                    "method": method,
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


def stage_method(row: dict, stage: str) -> str:
    """A row's method in the tables of `stage`: without a protocol ('sweep') every weight and grid
    point is a method of its own (choosing the best on the evaluation episodes would be an oracle)."""
    name = row["method"]
    if stage == "sweep" and row["sampler"] not in ("none", "policy"):
        name = f"{name}@{row['weight']:g}"
    if stage == "sweep" and row["point"] != "default":
        name = f"{name}[{row['point']}]"
    return name
