"""The fused update loop: many training steps in one compiled `fori_loop`, metrics summarised in
the carry. Agents (`qgf.agents.base`) and add-ons (`qgf.addons.base`) both run their steps
through `run_steps`, so one compiled call of either does the same kind of work.

Imports only jax: the agents import it, so it must not import them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

State = TypeVar("State")


def metric_kind(name: str) -> str:
    """How a metric summarises over steps: 'min' / 'max' (names ending so) or 'mean'."""
    return "min" if name.endswith("_min") else "max" if name.endswith("_max") else "mean"


_METRIC_START = {"min": jnp.inf, "max": -jnp.inf, "mean": 0.0}
_METRIC_ACCUMULATE = {"min": jnp.minimum, "max": jnp.maximum, "mean": jnp.add}


def run_steps(
    one_step: Callable[[State], tuple[State, dict[str, Any]]], state: State, num_steps: jax.Array
) -> tuple[State, dict[str, jax.Array]]:
    """`num_steps` (traced) applications of `one_step(state) -> (state, metrics)` in one
    `fori_loop`; returns the final state and the metrics over the steps (means; extremes for
    names ending in _min / _max, see `metric_kind`).

    The step count is a traced value rather than a `lax.scan` length, so one compilation serves
    every call length (the last, shorter chunk of a run, resumption at any step). Call it inside
    a jitted function.
    """
    metric_names = jax.eval_shape(one_step, state)[1].keys()
    start = {name: jnp.asarray(_METRIC_START[metric_kind(name)], jnp.float32) for name in metric_names}

    def body(_, carry):
        state, totals = carry
        state, metrics = one_step(state)
        return state, {
            name: _METRIC_ACCUMULATE[metric_kind(name)](totals[name], metrics[name]) for name in totals
        }

    state, totals = jax.lax.fori_loop(0, num_steps, body, (state, start))
    return state, {
        name: total / num_steps if metric_kind(name) == "mean" else total for name, total in totals.items()
    }
