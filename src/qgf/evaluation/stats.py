"""Statistics of an evaluation: the Wilson interval of a success rate, and `summarize`, which
turns a rollout's episodes into one `qgf.evaluation.results.ConditionResult` per condition.

Imports: numpy, the standard library and `qgf.evaluation.results` (the schema it fills in).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from qgf.evaluation.results import ConditionResult

if TYPE_CHECKING:
    from qgf.evaluation.rollout import RolloutResult

CONFIDENCE_LEVEL = 0.95
_Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def wilson_interval(successes: int, trials: int, z: float = _Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default: two-sided 95%).

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0 or n
    successes, which is where few-episode success rates often sit.
    """
    if trials < 1:
        raise ValueError("a confidence interval needs at least one trial")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}], got {successes}")
    p = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    center = (p + z2 / (2 * trials)) / denominator
    half_width = z / denominator * math.sqrt(p * (1.0 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, center - half_width), min(1.0, center + half_width)


def summarize(
    result: RolloutResult, describe: Callable[[Any], tuple[str, float, int, str]]
) -> list[ConditionResult]:
    """One `ConditionResult` per condition of ``result`` (a `qgf.evaluation.rollout.RolloutResult`).

    ``describe(condition) -> (sampler, weight, bfn, label)`` names a condition. Each condition's
    ``wall_clock_s`` is its share of the rollout's wall-clock, in proportion to the env and policy
    compute time its episodes used (conditions run interleaved, so no condition has a wall-clock of
    its own).
    """
    compute = [
        sum(r.env_seconds + r.policy_seconds for r in result.for_condition(i))
        for i in range(len(result.conditions))
    ]
    total_compute = sum(compute) or 1.0
    summaries = []
    for index, condition in enumerate(result.conditions):
        records = result.for_condition(index)
        sampler, weight, bfn, label = describe(condition)
        successes = sum(r.success for r in records)
        low, high = wilson_interval(successes, len(records))
        returns = np.array([r.episode_return for r in records])
        chunk_q = np.array([q for r in records for q in r.chunk_q], np.float64)
        q_mean = float(chunk_q.mean()) if chunk_q.size and np.isfinite(chunk_q).all() else None
        summaries.append(
            ConditionResult(
                sampler=sampler,
                weight=float(weight),
                bfn=int(bfn),
                label=label,
                episodes=len(records),
                successes=successes,
                success_rate=successes / len(records),
                ci_low=low,
                ci_high=high,
                return_mean=float(returns.mean()),
                return_std=float(returns.std()),
                length_mean=float(np.mean([r.length for r in records])),
                q_mean=q_mean,
                policy_seconds=float(sum(r.policy_seconds for r in records)),
                wall_clock_s=result.wall_clock_s * compute[index] / total_compute,
                episode_success=[bool(r.success) for r in records],
                episode_return=[float(r.episode_return) for r in records],
                episode_length=[int(r.length) for r in records],
            )
        )
    return summaries
