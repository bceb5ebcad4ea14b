"""Fig. 4 of the QGF paper: the final actions of every method and their Q.

Every method acts on the same observations from the same noise (common random numbers), so the
paired differences to BFN and BC are the honest comparison.

Imports JAX, `qgf.guidance` and `qgf.analysis.methods`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from qgf.analysis.methods import Method, PolicyAndCritic, summarize, summarize_rows
from qgf.guidance.sampler import sample_with_info

Array = jax.Array


def method_sampler(model: PolicyAndCritic, method: Method) -> Callable[[Any, Array, Array, Array], Array]:
    """A jitted ``(obs, noise, key, weight (B,)) -> actions`` for `method`.

    `noise` is a_0: (B, d), or (B, N, d) for best-of-N. BC is given no critic, so its cost is the
    actor's alone.
    """
    q_fn = model.q_fn if method.spec.uses_critic else None

    @jax.jit
    def run(obs, noise, key, weight):
        actions, _ = sample_with_info(
            model.velocity_fn,
            q_fn,
            obs,
            key,
            weight,
            method.spec,
            model.action_dim,
            noise=noise,
            extras=model.extras,
        )
        return actions

    return run


def method_noise(method: Method, noise: Array) -> Array:
    """Common random numbers: every single-sample method starts from noise[:, 0]; BFN(N) uses the
    first N draws, so its candidates include the BC sample and Q(BFN) >= Q(BC) row by row."""
    n = method.spec.best_of_n
    return noise[:, 0] if n == 1 else noise[:, :n]


def q_value_report(
    q_values: Mapping[str, np.ndarray], reference: str, baseline: str, weights: Mapping[str, float]
) -> dict[str, Any]:
    """Fig. 4 numbers: per method the mean Q of its final actions, and its paired differences to
    `reference` (BFN) and `baseline` (BC). Every method acts on the same observations from the same
    noise, so the paired standard error is the honest one for comparing two methods."""
    methods = {}
    for label, values in q_values.items():
        values = np.asarray(values, np.float64)
        entry = summarize_rows(values)
        entry["minus_reference"] = summarize(values - np.asarray(q_values[reference], np.float64))
        entry["minus_baseline"] = summarize(values - np.asarray(q_values[baseline], np.float64))
        if label in weights:
            entry["weight"] = weights[label]
        methods[label] = entry
    return {"reference": reference, "baseline": baseline, "methods": methods}
