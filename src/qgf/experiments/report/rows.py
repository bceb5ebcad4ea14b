"""A sweep's finished evaluations as flat rows: the input of every table and figure of `qgf report`.

One row per (evaluation, condition) read from the results.json of the evaluate jobs that the
sweep's spec.json expands to (`planned_results`; every other SWEEP_DIR/evals/*/*/*/*/results.json
is ignored and listed), and the method name a row carries in the tables of a stage. May import
`qgf.envs`, `qgf.evaluation.results` and `qgf.experiments.{spec,jobs}`; nothing else of this package.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from qgf.errors import QGFError
from qgf.experiments.spec import method_name

RESULTS_GLOB = "evals/*/*/*/*/results.json"


def planned_results(sweep_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """(the results.json of the evaluate jobs that SWEEP_DIR/spec.json expands to, every other
    results.json under evals/): evaluations of an earlier spec, or of other settings, are ignored.
    A sweep directory without a full spec.json (hand-made, or written before sweeps recorded it)
    has every results.json read."""
    import json

    sweep_dir = Path(sweep_dir)
    found = sorted(sweep_dir.glob(RESULTS_GLOB))
    spec_path = sweep_dir / "spec.json"
    document = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    if "agents" not in document:
        return found, []
    from qgf.experiments.jobs import evaluation_current, plan, spec_from_json

    jobs, _ = plan(spec_from_json(document), sweep_dir, record_protocol=False)
    # a stale evaluation (of a shorter run than the spec now trains) is ignored until it reruns
    current = [job for job in jobs if job.kind == "evaluate" and evaluation_current(job)]
    expected = {Path(job.out) / "results.json" for job in current}
    return [p for p in found if p in expected], [p for p in found if p not in expected]


def planned_runs(sweep_dir: str | Path, online: bool = False) -> Any:
    """The run directories (RUN/seed<S>) of the train jobs SWEEP_DIR/spec.json expands to, for
    the seeds it reports (`seeds`; the protocol's tuning seeds are left out); None for a sweep
    directory without a full spec.json (every run is read). `online`: instead {"runs": the
    directories of its online jobs, "fine_tuned": the agent labels of [online], "frozen_methods":
    the methods of the other agents' evaluate jobs}."""
    import json

    sweep_dir = Path(sweep_dir)
    spec_path = sweep_dir / "spec.json"
    document = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    if "agents" not in document:
        return None
    from qgf.experiments.jobs import plan, spec_from_json

    spec = spec_from_json(document)
    jobs, _ = plan(spec, sweep_dir, record_protocol=False)
    if online:
        fine_tuned = set(spec.online["agents"]) if spec.online else set()
        return {
            "runs": sorted(Path(job.out) for job in jobs if job.kind == "online"),
            "frozen_methods": {
                method
                for job in jobs
                if job.kind == "evaluate" and job.params["agent"] not in fine_tuned
                for method in job.params["methods"]
            },
            "fine_tuned": fine_tuned,
        }
    reported = set(spec.seeds)
    runs = {
        Path(job.out) / f"seed{seed}"
        for job in jobs
        if job.kind == "train"
        for seed in job.params["seeds"]
        if seed in reported
    }
    return sorted(runs)


def collect_rows(sweep_dir: str | Path, paths: list[Path] | None = None) -> list[dict[str, Any]]:
    """One row per (evaluation, condition): stage, task, domain, method, weight, seed, success;
    from `paths` (default: `planned_results`). Two evaluations of one (stage, method, grid point,
    weight, task, seed) are an error naming both files."""
    from qgf.envs import parse_name
    from qgf.evaluation.results import read_results

    if paths is None:
        paths, _ = planned_results(sweep_dir)
    rows = []
    source: dict[tuple, Path] = {}
    for path in paths:
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
            row = rows[-1]
            key = tuple(row[k] for k in ("stage", "method", "point", "weight", "bfn", "task", "seed"))
            if key in source and source[key] != path:
                raise QGFError(
                    f"two evaluations of {row['method']} at weight {row['weight']:g} on {row['task']}, seed "
                    f"{row['seed']} ({row['stage']}): {source[key]} and {path}; delete the stale one"
                )
            source[key] = path
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
