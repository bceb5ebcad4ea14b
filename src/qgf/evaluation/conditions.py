"""What an evaluation evaluates: `Condition` (a sampler and a guidance weight), the (sampler,
best-of-N, weight) grid (`sweep_conditions`), a run's default samplers (its own method) and the
env a run is evaluated in (`run_dataset_name`, `evaluation_env_name`).

Imports: the standard library, `qgf.errors`, `qgf.envs` and `qgf.guidance.estimators` (the
estimator table and `SamplerSpec`: standard library only).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from qgf.envs import parse_name
from qgf.errors import QGFError
from qgf.guidance.estimators import SamplerSpec

# Agents whose method is test-time guidance of their behaviour flow: evaluated with QGF over the
# weight grid by default. Every other agent is a training-time method: its own policy.
TEST_TIME_AGENTS = ("qgf",)


@dataclasses.dataclass(frozen=True)
class Condition:
    """One evaluated condition: a sampler (`qgf.guidance.SamplerSpec`) and a guidance weight."""

    spec: SamplerSpec
    weight: float


def sweep_conditions(
    samplers: Sequence[Any],
    weights: Sequence[float],
    bfn: Sequence[int],
    steps: int,
    gradstep_steps: int | None = None,
):
    """The (sampler, N, weight) grid, sampler-major. A sampler given by name is crossed with every
    N in ``bfn`` (with `gradstep_steps` = GradStep's L when given); a `SamplerSpec` is used as given.
    Plain BC (``none``) and a method's own policy (``policy``) ignore the weight, so they are
    evaluated once, at weight 0."""
    if not samplers or not weights or not bfn:
        raise QGFError("need at least one sampler, one weight and one best-of-N")
    for weight in weights:
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
            raise QGFError(f"guidance weights must be finite numbers >= 0, got {weight!r}")
    specs = []
    for sampler in samplers:
        if isinstance(sampler, SamplerSpec):
            specs.append(sampler)
        else:
            options = {} if gradstep_steps is None else {"gradstep_steps": int(gradstep_steps)}
            specs.extend(
                SamplerSpec(estimator=sampler, steps=steps, best_of_n=int(n), **options) for n in bfn
            )
    conditions = []
    for spec in dict.fromkeys(specs):
        spec_weights = sorted(set(map(float, weights))) if spec.uses_weight else [0.0]
        conditions.extend(Condition(spec, weight) for weight in spec_weights)
    return conditions


def default_samplers(run: Any) -> tuple[str, ...]:
    """A run's own method: QGF (over the weight grid) for the qgf agent, whose method is test-time
    guidance of its behaviour flow; the trained policy (`policy`, evaluated once) for every
    training-time agent (fql, edp, dac, qsm-bc, the qam family), whatever test-time samplers its
    behaviour flow also supports."""
    return ("qgf",) if run.agent.name in TEST_TIME_AGENTS else ("policy",)


def run_dataset_name(meta: dict[str, Any]) -> str:
    """The OGBench name a run was trained on, from its meta.json."""
    dataset = meta.get("dataset") or {}
    for name in (
        meta.get("env"),
        meta.get("env_name"),
        dataset.get("name") if isinstance(dataset, dict) else None,
    ):
        if isinstance(name, str) and name:
            return name
    raise QGFError("the run's meta.json names no dataset or environment; cannot choose an evaluation env")


def evaluation_env_name(name: str, task: int | None = None) -> tuple[str, int | None]:
    """The single-task env to evaluate in, from a run's dataset or env name and an optional task
    override: ``(cube-double-play-singletask-task2-v0, 3) -> (cube-double-singletask-task3-v0, 3)``."""
    parsed = parse_name(name)
    if task is not None:
        parsed = parsed.with_task(task)
    elif not parsed.singletask:
        parsed = parsed.with_task(None)  # OGBench's default task
    return parsed.env_name, parsed.task
