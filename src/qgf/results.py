"""Evaluation results: the documented results.json schema, its validating reader, and the CSV,
markdown and PNG views. The schema is documented in docs/evaluation.md; keep the two in step.

Every file is written atomically (a temporary file in the same directory, then `os.replace`), so an
interrupted evaluation never leaves a half-written results file behind.

Only per-condition numbers are reported: there is deliberately no "best weight" field, because a
maximum over weights on the same episodes is an optimistically biased (oracle) number.
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
from qgf.fileio import atomic_path, atomic_write_json, atomic_write_text

SCHEMA = "qgf.evaluation"
SCHEMA_VERSION = 1

JSON_NAME = "results.json"
CSV_NAME = "results.csv"
MARKDOWN_NAME = "results.md"
PLOT_NAME = "success_vs_weight.png"
# A goal-conditioned evaluation's directory: one results set per goal in goal<K>/, and the summary.
GOAL_DIR = "goal{goal}"
SUMMARY_SCHEMA = "qgf.goal_evaluation_summary"
SUMMARY_JSON_NAME = "summary.json"
SUMMARY_MARKDOWN_NAME = "summary.md"


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


def write_plot(results: EvaluationResults, path: str | os.PathLike) -> Path:
    """Success rate against guidance weight, one line per sampler label with its interval as a band
    (the QGF paper's Fig. 20 view). A label evaluated at a single weight (e.g. BC, whose samples
    do not depend on the weight) is drawn as a dashed horizontal reference."""
    import matplotlib

    matplotlib.use("Agg")  # headless, whatever the user's backend
    import matplotlib.pyplot as plt

    path = Path(path)
    by_label: dict[str, list[ConditionResult]] = {}
    for item in results.results:
        by_label.setdefault(item.label, []).append(item)
    weights = sorted({item.weight for item in results.results})
    margin = 0.03 * (weights[-1] - weights[0]) or 0.5  # keep the end markers inside the frame
    span = (weights[0] - margin, weights[-1] + margin)

    figure, axis = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, items) in enumerate(by_label.items()):
        color = colors[index % len(colors)]
        items = sorted(items, key=lambda item: item.weight)
        if len(items) == 1:
            (item,) = items
            axis.axhline(item.success_rate, color=color, linestyle="--", label=f"{label} (any weight)")
            axis.axhspan(item.ci_low, item.ci_high, color=color, alpha=0.12, linewidth=0)
            continue
        x = [item.weight for item in items]
        axis.plot(x, [item.success_rate for item in items], marker="o", color=color, label=label)
        axis.fill_between(
            x, [item.ci_low for item in items], [item.ci_high for item in items], color=color, alpha=0.18
        )
    axis.set_xlim(*span)
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("guidance weight w")
    axis.set_ylabel("success rate")
    level = round(100 * results.interval["level"])
    axis.set_title(
        f"{results.title}\n{results.episodes_per_condition} episodes per point, {level}% "
        f"{results.interval['method'].title()} interval",
        fontsize=10,
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png")
    finally:
        plt.close(figure)
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


# --------------------------------------------------------------------------------------------------
# Goal-conditioned evaluations: one EvaluationResults per evaluation goal, and their summary


@dataclasses.dataclass(frozen=True)
class GoalEvaluation:
    """A goal-conditioned evaluation: one `EvaluationResults` per OGBench evaluation goal (same
    env, conditions, seed and episodes), keyed by goal id in evaluation order."""

    env: str
    per_goal: dict[int, EvaluationResults]

    @property
    def goals(self) -> list[int]:
        return list(self.per_goal)

    def overall(self) -> EvaluationResults:
        return pool_goals(self.per_goal)


def _condition_key(item: ConditionResult) -> tuple:
    return (item.sampler, item.weight, item.bfn, item.label)


def pool_goals(per_goal: dict[int, EvaluationResults]) -> EvaluationResults:
    """Every condition over all goals' episodes: success_rate = successes / episodes = the mean
    of the per-goal success rates (every goal has the same number of episodes), its interval the
    Wilson interval over all episodes; return, length and episode lists pooled (goal-major, so
    episode i is still paired across conditions); q_mean the mean of the goals' q_mean;
    policy_seconds, wall-clock and env steps summed. `task` is None and `extra` records the goals
    (`extra["goals"]`, `extra["pooled_over_goals"] = True`)."""
    from qgf.evaluate import wilson_interval

    if not per_goal:
        raise QGFError("no goals to pool")
    goals = list(per_goal)
    first = per_goal[goals[0]]
    keys = [_condition_key(item) for item in first.results]
    for goal, results in per_goal.items():
        if not results.goal_conditioned or results.task != goal:
            raise QGFError(f"the results given for goal {goal} are not goal {goal} of a goal-conditioned run")
        if [_condition_key(item) for item in results.results] != keys:
            raise QGFError(f"goal {goal} has other conditions than goal {goals[0]}; cannot pool them")
        for field in ("env", "seed", "episodes_per_condition", "run"):
            if getattr(results, field) != getattr(first, field):
                raise QGFError(
                    f"goal {goal} has {field} {getattr(results, field)!r}, goal {goals[0]} "
                    f"{getattr(first, field)!r}; cannot pool them"
                )
    pooled = []
    for index, key in enumerate(keys):
        items = [per_goal[goal].results[index] for goal in goals]
        episodes = sum(item.episodes for item in items)
        successes = sum(item.successes for item in items)
        low, high = wilson_interval(successes, episodes)
        returns = [value for item in items for value in item.episode_return]
        mean_return = math.fsum(returns) / episodes
        q_values = [item.q_mean for item in items]
        pooled.append(
            ConditionResult(
                sampler=key[0],
                weight=key[1],
                bfn=key[2],
                label=key[3],
                episodes=episodes,
                successes=successes,
                success_rate=successes / episodes,
                ci_low=low,
                ci_high=high,
                return_mean=mean_return,
                return_std=math.sqrt(math.fsum((value - mean_return) ** 2 for value in returns) / episodes),
                length_mean=sum(length for item in items for length in item.episode_length) / episodes,
                q_mean=None if None in q_values else math.fsum(q_values) / len(q_values),
                policy_seconds=math.fsum(item.policy_seconds for item in items),
                wall_clock_s=math.fsum(item.wall_clock_s for item in items),
                episode_success=[value for item in items for value in item.episode_success],
                episode_return=returns,
                episode_length=[value for item in items for value in item.episode_length],
            )
        )
    every = list(per_goal.values())
    return dataclasses.replace(
        first,
        task=None,
        episodes_per_condition=first.episodes_per_condition * len(goals),
        wall_clock_s=math.fsum(results.wall_clock_s for results in every),
        env_steps=sum(results.env_steps for results in every),
        num_envs=max(results.num_envs for results in every),
        results=pooled,
        extra={
            **{k: v for k, v in first.extra.items() if k not in ("goal", "startup_s")},
            "goal_conditioned": True,
            "goals": goals,
            "pooled_over_goals": True,
            "episodes_per_goal": first.episodes_per_condition,
        },
    )


def _rate(item: ConditionResult) -> dict[str, Any]:
    return {
        "successes": item.successes,
        "episodes": item.episodes,
        "success_rate": item.success_rate,
        "ci_low": item.ci_low,
        "ci_high": item.ci_high,
    }


def goal_summary(evaluation: GoalEvaluation) -> dict[str, Any]:
    """The summary.json document: per condition, success per goal and overall (docs/evaluation.md)."""
    overall = evaluation.overall()
    first = evaluation.per_goal[evaluation.goals[0]]
    conditions = []
    for index, pooled in enumerate(overall.results):
        conditions.append(
            {
                "sampler": pooled.sampler,
                "weight": pooled.weight,
                "bfn": pooled.bfn,
                "label": pooled.label,
                "goals": {
                    str(goal): _rate(results.results[index]) for goal, results in evaluation.per_goal.items()
                },
                "overall": _rate(pooled),
            }
        )
    return {
        "schema": SUMMARY_SCHEMA,
        "schema_version": 1,
        "env": evaluation.env,
        "goals": evaluation.goals,
        "episodes_per_goal": first.episodes_per_condition,
        "seed": first.seed,
        "run": first.run,
        "interval": first.interval,
        "overall": "success_rate: mean over goals (= successes / episodes over all goals: every goal has "
        "the same episodes); ci: Wilson interval over all episodes",
        "results": {str(goal): f"{GOAL_DIR.format(goal=goal)}/{JSON_NAME}" for goal in evaluation.goals},
        "conditions": conditions,
    }


def goal_summary_table(evaluation: GoalEvaluation) -> str:
    """The success table, one row per (sampler, N, weight): each goal's success rate with its
    interval, and overall (mean over goals, interval over all episodes), as GitHub markdown."""
    overall = evaluation.overall()
    level = round(100 * overall.interval["level"])
    goals = evaluation.goals
    lines = [
        "| sampler | N | weight | "
        + " | ".join(f"goal {goal}" for goal in goals)
        + f" | overall ({level}% CI) | episodes |",
        "|---|---:|---:|" + "---|" * len(goals) + "---|---:|",
    ]

    def cell(item: ConditionResult) -> str:
        return f"{item.success_rate:.2f} [{item.ci_low:.2f}, {item.ci_high:.2f}]"

    for index, pooled in enumerate(overall.results):
        per_goal = [cell(evaluation.per_goal[goal].results[index]) for goal in goals]
        lines.append(
            f"| {pooled.label} | {pooled.bfn} | {pooled.weight:g} | "
            + " | ".join(per_goal)
            + f" | {cell(pooled)} | {pooled.episodes} |"
        )
    return "\n".join(lines)


def goal_summary_report(evaluation: GoalEvaluation) -> str:
    overall = evaluation.overall()
    first = evaluation.per_goal[evaluation.goals[0]]
    header = [
        f"# Goal-conditioned evaluation: {evaluation.env}",
        "",
        f"- run: `{first.run}`" if first.run else "- run: (none)",
        f"- goals {', '.join(map(str, evaluation.goals))} (OGBench's evaluation task_id); "
        f"{first.episodes_per_condition} episodes per goal and condition, seed {first.seed}; chunks of "
        f"{first.action_horizon} actions executed open-loop; limit {first.max_episode_steps} steps",
        f"- success: {first.success_definition}; ogbench {first.ogbench_version}, "
        f"success_timing={first.success_timing}",
        "- overall: mean of the goals' success rates (every goal has the same episodes); interval: "
        f"{overall.interval['method']} score, {overall.interval['level']:.0%}, over all "
        f"{overall.episodes_per_condition} episodes",
        f"- per goal: {', '.join(GOAL_DIR.format(goal=goal) + '/' + JSON_NAME for goal in evaluation.goals)}",
        f"- wall-clock {overall.wall_clock_s:.1f} s for {overall.env_steps} env steps",
        "- Every condition is reported; no maximum over weights is a headline number.",
        "",
        "",
    ]
    return "\n".join(header) + goal_summary_table(evaluation) + "\n"


def write_goal_results(results: EvaluationResults, out_dir: str | os.PathLike) -> dict[str, Path]:
    """One goal's results.json, results.csv, results.md and success_vs_weight.png in
    ``out_dir/goal<K>/``."""
    if not results.goal_conditioned or results.task is None:
        raise QGFError("write_goal_results writes one goal of a goal-conditioned evaluation")
    return write_all(results, Path(out_dir) / GOAL_DIR.format(goal=results.task))


def write_goal_evaluation(evaluation: GoalEvaluation, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Every goal's files in ``out_dir/goal<K>/`` (`write_all`), and in ``out_dir`` summary.json,
    summary.md and success_vs_weight.png (overall success against weight, pooled over goals)."""
    out_dir = Path(out_dir)
    paths = {}
    for goal, results in evaluation.per_goal.items():
        paths[f"goal{goal}"] = write_goal_results(results, out_dir)["json"]
    summary = out_dir / SUMMARY_JSON_NAME
    atomic_write_json(summary, goal_summary(evaluation), allow_nan=False)
    paths["summary"] = summary
    paths["markdown"] = out_dir / SUMMARY_MARKDOWN_NAME
    atomic_write_text(paths["markdown"], goal_summary_report(evaluation))
    paths["plot"] = write_plot(evaluation.overall(), out_dir / PLOT_NAME)
    return paths


def read_goal_evaluation(out_dir: str | os.PathLike) -> GoalEvaluation:
    """The goal-conditioned evaluation written to ``out_dir`` (every ``goal<K>/results.json``,
    validated, in goal order); the goals must form one evaluation (`pool_goals`)."""
    out_dir = Path(out_dir)
    per_goal = {}
    for path in sorted(out_dir.glob("goal*/" + JSON_NAME)):
        suffix = path.parent.name[len("goal") :]
        if not suffix.isdigit():
            continue
        results = read_results(path)
        if not results.goal_conditioned or results.task != int(suffix):
            raise QGFError(f"{path}: not the goal-conditioned results of goal {suffix}")
        per_goal[int(suffix)] = results
    if not per_goal:
        raise QGFError(f"{out_dir}: no goal<K>/{JSON_NAME}; run `qgf evaluate` on a goal-conditioned run")
    per_goal = dict(sorted(per_goal.items()))
    evaluation = GoalEvaluation(env=next(iter(per_goal.values())).env, per_goal=per_goal)
    evaluation.overall()  # checks that the goals belong together
    return evaluation
