"""CFGRL (QGF paper, App. I): an optimality-conditioned flow f_{o=1}(s, a_t, t), trained by flow
matching (Eq. 2) on the chunks the run's critic calls optimal, A(s, a) = Q(s, a) - V(s) > 0. The run's
BC flow is the unconditioned f. Sampler ``cfgrl`` follows v_cfg = f + w (f_{o=1} - f), no critic
gradient; its weight axis is tau_cfg (paper grid {1, 2, 3, 5, 10, 15}).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from qgf.addons.base import Addon
from qgf.flow import chunk_step_weights, flow_matching_loss
from qgf.guidance.estimators import estimators_of_addon


def optimality_weights(q_values, values, valid_weights):
    """Per-coordinate weights (B, d) of the conditioned flow's loss: the chunk's own validity
    weights where A = Q - V > 0, zero elsewhere. Both critics are held fixed."""
    advantage = jax.lax.stop_gradient(q_values - values)
    return valid_weights * (advantage > 0).astype(valid_weights.dtype)[:, None], advantage


def cfgrl_loss(
    optimal_velocity: Callable, q_fn: Callable, value_fn: Callable, batch, noise, times, action_dim
):
    """Flow matching of f_{o=1} on the A > 0 chunks: sum_i,j w_ij (f_{o=1} - (a - z))_ij^2 / sum w
    (`qgf.flow.flow_matching_loss`), w = optimality_weights; masked chunk steps never count."""
    observations, actions = batch["observations"], batch["actions"]
    weights, advantage = optimality_weights(
        q_fn(observations, actions), value_fn(observations), chunk_step_weights(batch["valid"], action_dim)
    )
    loss = flow_matching_loss(optimal_velocity, observations, actions, noise, times, weights)
    return loss, advantage


@dataclasses.dataclass(frozen=True)
class CFGRL(Addon):
    """f_{o=1}: the run's actor architecture, started from its BC flow parameters by default."""

    name = "cfgrl"
    summary = "optimality-conditioned flow f_{o=1} on chunks with A = Q - V > 0 (CFGRL)"
    samplers = estimators_of_addon(name)
    provides = ("optimal_velocity",)

    def init(self, base, key, batch):
        params, copied = self.init_from_actor(base, key, batch["observations"], batch["actions"])
        return params, {"initialised_from_actor": jnp.asarray(copied)}

    def optimal_velocity(self, params) -> Callable:
        return functools.partial(self.velocity_network().apply, params)

    def loss(self, params, constants, base, batch, key):
        noise_key, time_key = jax.random.split(key)
        actions = batch["actions"]
        noise = jax.random.normal(noise_key, actions.shape, actions.dtype)
        times = self.flow_times(time_key, actions.shape[0])
        if not self.run_config.bc_mask_invalid:  # mask chunk steps exactly as the run's BC flow does
            batch = {**batch, "valid": jnp.ones_like(batch["valid"])}
        loss, advantage = cfgrl_loss(
            self.optimal_velocity(params), base.q_fn, base.value, batch, noise, times, self.action_dim
        )
        return loss, {"cfgrl_loss": loss, "optimal_fraction": jnp.mean(advantage > 0)}

    def extras(self, params, constants, base):
        return {"optimal_velocity": self.optimal_velocity(params)}
