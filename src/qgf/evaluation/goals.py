"""Goal-conditioned evaluation on OGBench's five evaluation goals: which goals and which env
(`check_goals`, `goal_env_name`), the size check of a run's [observation, goal] input, the view of
one goal on a shared policy (`GoalPolicy`), and the results: one `EvaluationResults` per goal
(`GoalEvaluation`), pooled over goals (`pool_goals`), with the summary files of
docs/evaluation.md. `qgf.evaluation.run.evaluate_goals` runs it.

Imports: numpy, the standard library and the light qgf modules (`qgf.envs`, `qgf.errors`,
`qgf.fileio`, `qgf.evaluation.{conditions,plots,results,rollout,stats}`); never JAX.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qgf.envs import MANIPULATION_DOMAINS, NUM_EVALUATION_GOALS, parse_name
from qgf.errors import QGFError
from qgf.evaluation.conditions import run_dataset_name
from qgf.evaluation.plots import write_plot
from qgf.evaluation.results import (
    JSON_NAME,
    PLOT_NAME,
    ConditionResult,
    EvaluationResults,
    read_results,
    write_all,
)
from qgf.evaluation.rollout import PolicyOutput
from qgf.evaluation.stats import wilson_interval
from qgf.fileio import atomic_write_json, atomic_write_text

# A goal-conditioned evaluation's directory: one results set per goal in goal<K>/, and the summary.
GOAL_DIR = "goal{goal}"
SUMMARY_SCHEMA = "qgf.goal_evaluation_summary"
SUMMARY_JSON_NAME = "summary.json"
SUMMARY_MARKDOWN_NAME = "summary.md"


# --------------------------------------------------------------------------------------------------
# Goals, their env and the policy's view of one goal


def is_goal_conditioned(run: Any) -> bool:
    """Whether a loaded run was trained goal-conditioned (its config or meta.json says so)."""
    return bool(getattr(run.config, "goal_conditioned", False) or run.meta.get("goal_conditioned", False))


def check_goals(goals: Sequence[int] | int | None) -> list[int]:
    """The evaluation goals to run, in order, without repeats: `None` is all of OGBench's goals
    (1..5); anything outside 1..5 is a one-line QGFError."""
    count = NUM_EVALUATION_GOALS
    if goals is None:
        return list(range(1, count + 1))
    if isinstance(goals, int):
        goals = [goals]
    checked = []
    for goal in goals:
        if isinstance(goal, bool) or not isinstance(goal, int | np.integer) or not 1 <= goal <= count:
            raise QGFError(f"evaluation goal {goal!r} does not exist: OGBench has goals 1..{count}")
        checked.append(int(goal))
    if not checked:
        raise QGFError(f"no evaluation goal given; OGBench has goals 1..{count}")
    return list(dict.fromkeys(checked))


def goal_env_name(run: Any) -> str:
    """The goal-conditioned env a goal-conditioned run is evaluated in (`puzzle-3x3-play-v0` ->
    `puzzle-3x3-v0`). A single-task run, or a run whose name has a task, is a one-line error."""
    name = run_dataset_name(run.meta)
    if not is_goal_conditioned(run):
        raise QGFError(
            f"run {run.path} was trained single-task on {name}, not goal-conditioned: it has no evaluation "
            "goals; evaluate it on a single task (qgf evaluate RUN [--task K], evaluate_run(run, task=K))"
        )
    parsed = parse_name(name)
    if parsed.singletask:
        raise QGFError(
            f"run {run.path} is goal-conditioned but names the single-task {name}; a goal-conditioned run "
            f"evaluates in {parsed.goal_env_name} (fix meta.json's env to {parsed.dataset_name})"
        )
    return parsed.goal_env_name


def goal_size_error(run: Any, env_name: str, env_dim: int) -> QGFError:
    meta = run.meta
    network = int(run.agent.obs_dim)
    observation = meta.get("observation_dim", network // 2)
    goal = meta.get("goal_dim", network - observation)
    return QGFError(
        f"run {run.path} takes {network} = {observation} (observation) + {goal} (goal) inputs, but "
        f"{env_name} gives {env_dim} = {env_dim // 2} + {env_dim - env_dim // 2}: the run was not trained "
        f"on this domain's observations; evaluate it on the domain of its data, or retrain it on "
        f"{env_name}'s play data (qgf data generate --env {run_dataset_name(meta)})"
    )


def check_goal_observation_size(run: Any, env_name: str) -> None:
    """Before any env is built: the run's input size against the domain's [observation, goal]
    size, where qgf knows the domain's observation size (manipulation domains; goals there are
    full observations). Other envs are checked at the first policy call (`GoalPolicy`)."""
    spec = MANIPULATION_DOMAINS.get(parse_name(env_name).domain)
    if spec is not None and 2 * spec.observation_dim != int(run.agent.obs_dim):
        raise goal_size_error(run, env_name, 2 * spec.observation_dim)


class GoalPolicy:
    """One goal's view of the `qgf.policy.AgentPolicy` shared by all goals of an evaluation (so each sampler
    compiles once, not once per goal): maps the rollout's condition indices (over the conditions
    still to run) to the shared list, and names the sizes if the env's observations do not fit."""

    def __init__(self, policy: Any, indices: Sequence[int], size_error: Callable[[int], QGFError]):
        self.policy = policy
        self.indices = np.asarray(indices, np.int64)
        self.size_error = size_error

    def warmup(self, batch_size: int) -> None:
        self.policy.warmup(batch_size, [self.policy.specs[index] for index in self.indices])

    def __call__(self, observations, condition_indices, noise_seeds) -> PolicyOutput:
        if observations.shape[1] != self.policy.agent.obs_dim:
            raise self.size_error(observations.shape[1])
        return self.policy(observations, self.indices[condition_indices], noise_seeds)


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
