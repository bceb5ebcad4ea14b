"""Evaluating a trained run: `evaluate_run` (its single-task env, or one evaluation goal of a
goal-conditioned run) and `evaluate_goals` (several goals of a goal-conditioned run), sharing one
`EvaluationOptions` and one core (`_evaluate_in`: conditions -> resumable rollout -> results).

The policy is `qgf.policy.AgentPolicy` (the run's agent and add-ons, compiled); everything else is
the light modules of this package. Success (docs/evaluation.md): an episode counts as a success
when ``info['success']`` is true at its last step. OGBench singletask envs use
``success_timing='pre'`` (ogbench >= 1.2): success and ``terminated`` describe the state *before*
the step's action, so an episode ends one step after the goal state is reached and a goal reached
by the very last action of a truncated episode is not counted. OGBench's goal-conditioned envs
keep ``success_timing='post'``. The env's setting is recorded with the results.

Imports: `qgf.policy`, `qgf.checkpoint` (to load a run given by path) and `qgf.evaluation.*`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

from qgf import __version__
from qgf.envs import NUM_EVALUATION_GOALS
from qgf.errors import QGFError
from qgf.evaluation.conditions import (
    Condition,
    default_samplers,
    evaluation_env_name,
    run_dataset_name,
    sweep_conditions,
)
from qgf.evaluation.goals import (
    GoalEvaluation,
    GoalPolicy,
    check_goal_observation_size,
    check_goals,
    goal_env_name,
    goal_size_error,
    is_goal_conditioned,
)
from qgf.evaluation.results import EvaluationResults
from qgf.evaluation.resume import condition_identity, rollout_resumable
from qgf.evaluation.rollout import RolloutResult
from qgf.evaluation.stats import CONFIDENCE_LEVEL, summarize
from qgf.evaluation.workers import make_goal_evaluation_env
from qgf.policy import AgentPolicy
from qgf.precision import precision_in_force
from qgf.registry import unknown_name_error
from qgf.versions import package_version

SUCCESS_DEFINITION = "info['success'] at the episode's last step"


@dataclasses.dataclass(frozen=True)
class EvaluationOptions:
    """What to evaluate and how; shared by `evaluate_run` and `evaluate_goals`.

    samplers, weights, bfn: the (sampler, best-of-N, weight) grid (`sweep_conditions`); samplers
        default to the run's own method (`default_samplers`). `conditions` (a list of
        `Condition`) replaces the grid.
    episodes, seed: episodes per condition; the seed of resets and policy noise.
    workers, num_envs, groups: the env layout (see `qgf.evaluation.rollout.rollout`).
    progress: a progress bar over episodes.
    resume_dir: save each finished condition there and skip those already saved (same run step,
        env, goal, seed, episodes, sampler and weight): a killed evaluation resumes at the next
        condition, with the same results; its wall-clock is the sum of the parts.
    max_episode_steps: shorter episodes (toy sweeps; default the env's own limit).
    keep_envs: keep the env workers for the next single-task evaluation of the same task in this
        process (sweeps); goal-conditioned evaluations always close theirs.
    """

    samplers: Sequence[Any] | None = None
    weights: Sequence[float] = (0.0,)
    bfn: Sequence[int] = (1,)
    episodes: int = 50
    seed: int = 0
    conditions: Sequence[Condition] | None = None
    workers: int | None = None
    num_envs: int | None = None
    groups: int = 2
    progress: bool = False
    resume_dir: str | os.PathLike | None = None
    max_episode_steps: int | None = None
    keep_envs: bool = False

    @classmethod
    def of(cls, options: EvaluationOptions | None, fields: dict[str, Any]) -> EvaluationOptions:
        """`options` (default: the defaults) with `fields` replaced; an unknown field is a
        one-line error with close matches."""
        names = [field.name for field in dataclasses.fields(cls)]
        for name in fields:
            if name not in names:
                raise unknown_name_error("evaluation option", name, names)
        return dataclasses.replace(options or cls(), **fields)

    def condition_list(self, run: Any) -> list[Condition]:
        if self.conditions is not None:
            return list(self.conditions)
        samplers = self.samplers or default_samplers(run)
        return sweep_conditions(samplers, self.weights, self.bfn, run.config.flow_steps)

    def rollout_options(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "num_envs": self.num_envs,
            "groups": self.groups,
            "progress": self.progress,
            "max_episode_steps": self.max_episode_steps,
        }


def evaluate_run(
    run: Any, options: EvaluationOptions | None = None, *, task: int | None = None, **fields: Any
) -> EvaluationResults:
    """Evaluate a run (a `qgf.checkpoint.Run` or its path) on its single-task env (or task `task`)
    for every condition of `options` (`EvaluationOptions`; keyword `fields` override it:
    ``evaluate_run(run, samplers=["qgf"], weights=[0, 0.03], episodes=50)``); returns
    `qgf.evaluation.results.EvaluationResults`.

    A goal-conditioned run (`is_goal_conditioned`) is evaluated on OGBench's evaluation goal
    `task` (1..5, required) of its domain, with observations `concat(observation, goal)`; the
    results record the goal as `task` and `extra["goal_conditioned"] = True`. `evaluate_goals`
    evaluates several goals (default all five) and pools them."""
    options = EvaluationOptions.of(options, fields)
    run = _as_run(run)
    if is_goal_conditioned(run):
        if task is None:
            raise QGFError(
                f"run {run.path} is goal-conditioned: evaluate_run evaluates one OGBench evaluation goal "
                f"(task=1..{NUM_EVALUATION_GOALS}); evaluate_goals evaluates several (default all)"
            )
        (goal,) = check_goals([task])
        return evaluate_goals(run, options, goals=[goal]).per_goal[goal]
    env_name, env_task = evaluation_env_name(run_dataset_name(run.meta), task)
    conditions = options.condition_list(run)
    policy = AgentPolicy.for_run(run, conditions)  # checks the samplers before any env is built

    def make_policy(remaining: list[int]) -> AgentPolicy:
        return (
            policy
            if len(remaining) == len(conditions)
            else AgentPolicy.for_run(run, _pick(conditions, remaining))
        )

    return _evaluate_in(
        run, env_name, env_name, env_task, conditions, options, make_policy, keep_envs=options.keep_envs
    )


def evaluate_goals(
    run: Any,
    options: EvaluationOptions | None = None,
    *,
    goals: Sequence[int] | int | None = None,
    on_goal_done: Callable[[int, EvaluationResults], None] | None = None,
    **fields: Any,
) -> GoalEvaluation:
    """Evaluate a goal-conditioned run on OGBench's evaluation goals of its domain (`goals`,
    default all five: `task_id` 1..5 of the goal-conditioned env, goals given by the env) for every
    condition of `options` (keyword `fields` override it, as in `evaluate_run`); returns a
    `qgf.evaluation.goals.GoalEvaluation` (one `EvaluationResults` per goal, and `.overall()`:
    success pooled over goals).

    Each goal runs as its own rollout in `make_goal_evaluation_env(dataset, goal)`, whose
    observations are `concat(observation, goal)`; the goals share one compiled policy. Goal K's
    results record `task = K`, `env` = the goal-conditioned env (e.g. `puzzle-3x3-v0`) and
    `extra["goal_conditioned"] = True`. Episode e of every goal and condition starts from the same
    reset seed and chunk noise (common random numbers; the goal observation is a function of the
    seed, see `qgf.envs.GoalTaskEnv`). `options.resume_dir` saves and reuses finished (goal,
    condition) pairs; `on_goal_done(goal, results)` is called as each goal finishes (e.g. to write
    its files)."""
    options = EvaluationOptions.of(options, fields)
    run = _as_run(run)
    env_name = goal_env_name(run)
    goals = check_goals(goals)
    check_goal_observation_size(run, env_name)
    conditions = options.condition_list(run)
    policy = AgentPolicy.for_run(run, conditions)  # shared by the goals: each sampler compiles once
    dataset = run_dataset_name(run.meta)

    def make_policy(remaining: list[int]) -> GoalPolicy:
        return GoalPolicy(policy, remaining, lambda dim: goal_size_error(run, env_name, dim))

    per_goal = {}
    for goal in goals:
        env = functools.partial(make_goal_evaluation_env, dataset, goal)
        extra = {"goal_conditioned": True, "goal": goal, "goal_seeded_by_reset_seed": True}
        per_goal[goal] = _evaluate_in(
            run, env, env_name, goal, conditions, options, make_policy, goal=goal, extra=extra
        )
        if on_goal_done is not None:
            on_goal_done(goal, per_goal[goal])
    return GoalEvaluation(env=env_name, per_goal=per_goal)


def _pick(items: Sequence[Any], indices: Sequence[int]) -> list[Any]:
    return [items[index] for index in indices]


def _evaluate_in(
    run: Any,
    env: Any,
    env_name: str,
    task: int | None,
    conditions: list[Condition],
    options: EvaluationOptions,
    make_policy: Callable[[list[int]], Any],
    *,
    goal: int | None = None,
    extra: dict | None = None,
    keep_envs: bool = False,
) -> EvaluationResults:
    """The shared core: the resumable rollout of `conditions` in `env` (a name or a factory), and
    its results under `env_name` / `task`."""
    identities = [
        condition_identity(run, env_name, options.seed, options.episodes, condition, goal)
        for condition in conditions
    ]
    result = rollout_resumable(
        env,
        conditions,
        identities,
        options.episodes,
        options.seed,
        options.resume_dir,
        make_policy,
        keep_envs=keep_envs,
        **options.rollout_options(),
    )
    # the limit the episodes ran under: an override shortens them (None: the env's own)
    return _evaluation_results(run, env_name, task, result, options, extra)


def _as_run(run: Any) -> Any:
    if not isinstance(run, str | os.PathLike) and not hasattr(run, "agent"):
        raise QGFError(f"expected a run or a run directory, got {type(run).__name__}")
    if isinstance(run, str | os.PathLike):
        from qgf.checkpoint import load_run

        run = load_run(run)
    return run


def _evaluation_results(
    run, env_name, task, result: RolloutResult, options: EvaluationOptions, extra: dict | None
) -> EvaluationResults:
    return EvaluationResults(
        env=env_name,
        task=task,
        ogbench_version=package_version("ogbench"),
        success_timing=result.env.success_timing,
        success_definition=SUCCESS_DEFINITION,
        max_episode_steps=options.max_episode_steps or result.env.max_episode_steps,
        action_horizon=result.action_horizon,
        seed=options.seed,
        episodes_per_condition=options.episodes,
        interval={"method": "wilson", "level": CONFIDENCE_LEVEL},
        wall_clock_s=result.wall_clock_s,
        env_steps=result.env_steps,
        num_envs=result.num_envs,
        workers=result.workers,
        run=str(run.path),
        qgf_version=__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        results=summarize(result, lambda c: (c.spec.estimator, c.weight, c.spec.best_of_n, c.spec.label)),
        extra={
            "run_step": run.step,
            "agent": run.config.agent,
            "critic": run.config.critic,
            "flow_steps": run.config.flow_steps,
            "guidance_critic": run.config.guidance_critic,
            "matmul_precision": precision_in_force(run.config.matmul_precision),
            "startup_s": result.startup_s,
            "common_random_numbers": True,
            **(extra or {}),
        },
    )
