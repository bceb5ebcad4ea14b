"""Evaluation results of one run on one env: the documented results.json schema
(`EvaluationResults`, one `ConditionResult` per condition), its validating reader, and the JSON,
CSV and markdown writers (`write_all` adds the plot of `qgf.evaluation.plots`). The schema is
documented in docs/evaluation.md; keep the two in step. Goal-conditioned evaluations (one results
set per goal, and their summary) are `qgf.evaluation.goals`.

Every file is written atomically (a temporary file in the same directory, then `os.replace`), so an
interrupted evaluation never leaves a half-written results file behind.

Only per-condition numbers are reported: there is deliberately no "best weight" field, because a
maximum over weights on the same episodes is an optimistically biased (oracle) number.

Imports: the standard library, `qgf.errors`, `qgf.fileio` and `qgf.evaluation.plots` (which
imports matplotlib only when it draws).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgf.errors import QGFError
from qgf.evaluation.plots import write_plot
from qgf.fileio import atomic_write_json, atomic_write_text

SCHEMA = "qgf.evaluation"
SCHEMA_VERSION = 1

JSON_NAME = "results.json"
CSV_NAME = "results.csv"
MARKDOWN_NAME = "results.md"
PLOT_NAME = "success_vs_weight.png"


@dataclasses.dataclass(frozen=True)
class ConditionResult:
    """Statistics of one (sampler, weight, best-of-N) condition over its episodes."""

    sampler: str  # estimator name, one of qgf.guidance.ESTIMATORS
    weight: float  # guidance weight w (the step size for gradstep)
    bfn: int  # best-of-N; 1 = no best-of-N
    label: str  # display name: "qgf", "bfn-4", "qgf+bfn-4"
    episodes: int
    successes: int
    success_rate: float
    ci_low: float  # confidence interval of success_rate (see EvaluationResults.interval)
    ci_high: float
    return_mean: float
    return_std: float
    length_mean: float
    q_mean: float | None  # mean critic value of the executed chunks; None without a critic
    policy_seconds: float  # compute time of this condition's policy queries
    wall_clock_s: float  # this condition's share of the evaluation's wall-clock (docs/evaluation.md)
    episode_success: list[bool]  # per episode, in episode order (episode i shares its reset seed
    episode_return: list[float]  # and noise with episode i of every other condition)
    episode_length: list[int]


# The CSV columns: everything but the per-episode lists.
SCALAR_FIELDS = tuple(
    f.name for f in dataclasses.fields(ConditionResult) if not f.name.startswith("episode_")
)


@dataclasses.dataclass(frozen=True)
class EvaluationResults:
    """One evaluation of one run on one env: metadata and a list of per-condition results."""

    env: str  # the OGBench env the episodes ran in (after any task override)
    task: int | None  # the singletask task id, when the name has one; the goal id (1..5) of a
    # goal-conditioned evaluation (extra["goal_conditioned"] is true)
    ogbench_version: str | None
    success_timing: str | None  # OGBench's 'pre' / 'post' setting of the env (None: not OGBench)
    success_definition: str
    max_episode_steps: int
    action_horizon: int  # h: actions per chunk, executed open-loop
    seed: int
    episodes_per_condition: int
    interval: dict[str, Any]  # {"method": "wilson", "level": 0.95}
    wall_clock_s: float
    env_steps: int
    num_envs: int
    workers: int
    run: str | None  # the evaluated run directory
    qgf_version: str
    created: str  # ISO 8601 UTC
    results: list[ConditionResult]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. the run's training step

    @property
    def goal_conditioned(self) -> bool:
        """Whether the episodes ran on an evaluation goal of a goal-conditioned env."""
        return bool(self.extra.get("goal_conditioned", False))

    @property
    def goal(self) -> int | None:
        """The evaluation goal (1..5) of a goal-conditioned evaluation; None otherwise (and for
        results pooled over several goals)."""
        return self.task if self.goal_conditioned else None

    @property
    def title(self) -> str:
        """The env, and the goal(s) of a goal-conditioned evaluation."""
        if not self.goal_conditioned:
            return self.env
        if self.task is not None:
            return f"{self.env}, goal {self.task}"
        goals = self.extra.get("goals") or []
        return f"{self.env}, goals {', '.join(map(str, goals))} pooled"

    def to_dict(self) -> dict[str, Any]:
        document = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}
        document.update(dataclasses.asdict(self))
        return document

    @classmethod
    def from_dict(cls, document: dict[str, Any], source: str = "results") -> EvaluationResults:
        return _validate(document, source)


# --------------------------------------------------------------------------------------------------
# Validation


def _fail(source: str, message: str) -> QGFError:
    return QGFError(f"{source}: {message}")


def _check(value: Any, kind: Callable[[Any], bool], source: str, where: str, expected: str) -> Any:
    if not kind(value):
        raise _fail(source, f"{where} must be {expected}, got {value!r}")
    return value


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return (_is_int(x) or isinstance(x, float)) and math.isfinite(x)


def _is_optional_str(x: Any) -> bool:
    return x is None or isinstance(x, str)


_TOP_LEVEL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "env": (lambda x: isinstance(x, str) and bool(x), "a non-empty string"),
    "task": (lambda x: x is None or (_is_int(x) and x >= 1), "null or an integer >= 1"),
    "ogbench_version": (_is_optional_str, "a string or null"),
    "success_timing": (lambda x: x in (None, "pre", "post"), "'pre', 'post' or null"),
    "success_definition": (lambda x: isinstance(x, str), "a string"),
    "max_episode_steps": (lambda x: _is_int(x) and x >= 1, "an integer >= 1"),
    "action_horizon": (lambda x: _is_int(x) and x >= 1, "an integer >= 1"),
    "seed": (_is_int, "an integer"),
    "episodes_per_condition": (lambda x: _is_int(x) and x >= 1, "an integer >= 1"),
    "interval": (lambda x: isinstance(x, dict) and "method" in x and "level" in x, "{method, level}"),
    "wall_clock_s": (lambda x: _is_number(x) and x >= 0, "a number >= 0"),
    "env_steps": (lambda x: _is_int(x) and x >= 0, "an integer >= 0"),
    # 0: every condition came from a resumed evaluation's saved conditions (no env was built)
    "num_envs": (lambda x: _is_int(x) and x >= 0, "an integer >= 0"),
    "workers": (lambda x: _is_int(x) and x >= 0, "an integer >= 0"),
    "run": (_is_optional_str, "a string or null"),
    "qgf_version": (lambda x: isinstance(x, str), "a string"),
    "created": (lambda x: isinstance(x, str), "a string"),
    "results": (lambda x: isinstance(x, list) and bool(x), "a non-empty list"),
}

_PER_CONDITION: dict[str, tuple[Callable[[Any], bool], str]] = {
    "sampler": (lambda x: isinstance(x, str) and bool(x), "a non-empty string"),
    "weight": (lambda x: _is_number(x) and x >= 0, "a number >= 0"),
    "bfn": (lambda x: _is_int(x) and x >= 1, "an integer >= 1"),
    "label": (lambda x: isinstance(x, str) and bool(x), "a non-empty string"),
    "episodes": (lambda x: _is_int(x) and x >= 1, "an integer >= 1"),
    "successes": (lambda x: _is_int(x) and x >= 0, "an integer >= 0"),
    "success_rate": (lambda x: _is_number(x) and 0 <= x <= 1, "a number in [0, 1]"),
    "ci_low": (lambda x: _is_number(x) and 0 <= x <= 1, "a number in [0, 1]"),
    "ci_high": (lambda x: _is_number(x) and 0 <= x <= 1, "a number in [0, 1]"),
    "return_mean": (_is_number, "a finite number"),
    "return_std": (lambda x: _is_number(x) and x >= 0, "a number >= 0"),
    "length_mean": (lambda x: _is_number(x) and x >= 0, "a number >= 0"),
    "q_mean": (lambda x: x is None or _is_number(x), "a finite number or null"),
    "policy_seconds": (lambda x: _is_number(x) and x >= 0, "a number >= 0"),
    "wall_clock_s": (lambda x: _is_number(x) and x >= 0, "a number >= 0"),
    "episode_success": (
        lambda x: isinstance(x, list) and all(isinstance(v, bool) for v in x),
        "a list of bools",
    ),
    "episode_return": (lambda x: isinstance(x, list) and all(_is_number(v) for v in x), "a list of numbers"),
    "episode_length": (lambda x: isinstance(x, list) and all(_is_int(v) for v in x), "a list of integers"),
}


def _validate(document: Any, source: str) -> EvaluationResults:
    if not isinstance(document, dict):
        raise _fail(source, "not a JSON object")
    if document.get("schema") != SCHEMA:
        raise _fail(source, f"not a qgf evaluation results file (schema {document.get('schema')!r})")
    version = document.get("schema_version")
    if not _is_int(version) or version > SCHEMA_VERSION:
        raise _fail(
            source, f"schema_version {version!r} is not supported (this qgf reads up to {SCHEMA_VERSION})"
        )
    for key, (kind, expected) in _TOP_LEVEL.items():
        if key not in document:
            raise _fail(source, f"missing field {key!r}")
        _check(document[key], kind, source, key, expected)

    results = [_validate_condition(item, source, i) for i, item in enumerate(document["results"])]
    keys = [(r.sampler, r.weight, r.bfn) for r in results]
    if len(set(keys)) != len(keys):
        raise _fail(source, "results list the same (sampler, weight, bfn) more than once")
    top = {key: document[key] for key in _TOP_LEVEL if key != "results"}
    extra = document.get("extra", {})
    if not isinstance(extra, dict):
        raise _fail(source, "extra must be an object")
    return EvaluationResults(**top, results=results, extra=extra)


def _validate_condition(item: Any, source: str, index: int) -> ConditionResult:
    where = f"results[{index}]"
    if not isinstance(item, dict):
        raise _fail(source, f"{where} is not an object")
    for key, (kind, expected) in _PER_CONDITION.items():
        if key not in item:
            raise _fail(source, f"{where} is missing {key!r}")
        _check(item[key], kind, source, f"{where}.{key}", expected)
    episodes = item["episodes"]
    if item["successes"] > episodes:
        raise _fail(source, f"{where}: successes {item['successes']} > episodes {episodes}")
    if not math.isclose(item["success_rate"], item["successes"] / episodes, abs_tol=1e-9):
        raise _fail(source, f"{where}: success_rate is not successes / episodes")
    if not item["ci_low"] <= item["success_rate"] <= item["ci_high"]:
        raise _fail(source, f"{where}: success_rate lies outside [ci_low, ci_high]")
    for key in ("episode_success", "episode_return", "episode_length"):
        if len(item[key]) != episodes:
            raise _fail(source, f"{where}.{key} has {len(item[key])} entries for {episodes} episodes")
    if sum(item["episode_success"]) != item["successes"]:
        raise _fail(source, f"{where}: episode_success does not add up to successes")
    return ConditionResult(**{key: item[key] for key in _PER_CONDITION})


def read_results(path: str | os.PathLike) -> EvaluationResults:
    """Read and validate a results.json (or the directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise QGFError(f"{path}: no such results file; run `qgf evaluate` first") from None
    except json.JSONDecodeError as exc:
        raise QGFError(f"{path}: not valid JSON ({exc})") from None
    return _validate(document, str(path))


# --------------------------------------------------------------------------------------------------
# Writers


def write_json(results: EvaluationResults, path: str | os.PathLike) -> Path:
    path = Path(path)
    atomic_write_json(path, results.to_dict(), allow_nan=False)
    return path


def write_csv(results: EvaluationResults, path: str | os.PathLike) -> Path:
    """One row per condition, scalar fields only (the per-episode lists are in results.json)."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SCALAR_FIELDS)
    for item in results.results:
        writer.writerow(["" if getattr(item, key) is None else getattr(item, key) for key in SCALAR_FIELDS])
    atomic_write_text(path, buffer.getvalue())
    return path


def markdown_table(results: EvaluationResults) -> str:
    """The per-condition table, one row per (sampler, N, weight), as GitHub markdown."""
    level = round(100 * results.interval["level"])
    lines = [
        f"| sampler | N | weight | success ({level}% CI) | episodes | return | length | mean Q | wall s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results.results:
        q = "—" if r.q_mean is None else f"{r.q_mean:.3g}"
        lines.append(
            f"| {r.label} | {r.bfn} | {r.weight:g} | {r.success_rate:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}] "
            f"| {r.episodes} | {r.return_mean:.1f} | {r.length_mean:.1f} | {q} | {r.wall_clock_s:.1f} |"
        )
    return "\n".join(lines)


def markdown_report(results: EvaluationResults) -> str:
    header = [
        f"# Evaluation: {results.title}",
        "",
        f"- run: `{results.run}`" if results.run else "- run: (none)",
        f"- episodes per condition: {results.episodes_per_condition}, seed {results.seed}; chunks of "
        f"{results.action_horizon} actions executed open-loop; limit {results.max_episode_steps} steps",
        f"- success: {results.success_definition}; ogbench {results.ogbench_version}, "
        f"success_timing={results.success_timing}",
        f"- intervals: {results.interval['method']} score, {results.interval['level']:.0%}, over episodes",
        f"- wall-clock {results.wall_clock_s:.1f} s for {results.env_steps} env steps "
        f"({results.num_envs} envs, {results.workers} workers)",
        "- Every condition is reported; no maximum over weights is a headline number (choose a weight "
        "on other episodes or seeds than those you report).",
        "",
        "",
    ]
    return "\n".join(header) + markdown_table(results) + "\n"


def write_markdown(results: EvaluationResults, path: str | os.PathLike) -> Path:
    path = Path(path)
    atomic_write_text(path, markdown_report(results))
    return path


def write_all(results: EvaluationResults, out_dir: str | os.PathLike) -> dict[str, Path]:
    """results.json, results.csv, results.md and success_vs_weight.png in ``out_dir``."""
    out_dir = Path(out_dir)
    return {
        "json": write_json(results, out_dir / JSON_NAME),
        "csv": write_csv(results, out_dir / CSV_NAME),
        "markdown": write_markdown(results, out_dir / MARKDOWN_NAME),
        "plot": write_plot(results, out_dir / PLOT_NAME),
    }
