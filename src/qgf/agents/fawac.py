"""`fawac`: FAWAC, advantage-weighted actor-critic with a flow policy (Park et al., 2025), an
advantage-weighted baseline of the QAM paper (App. C Eqs. 73-76, 91).

One policy network, 'actor', a velocity field v_theta(s, a_t, t) trained by advantage-weighted flow
matching on the batch's chunks:

    L(theta) = sum_{b,c} w_b m_bc (v_theta(s_b, a_t, t) - (a_b - z))_c^2 / sum_{b,c} m_bc      (Eq. 73)
    w_b      = min(exp(tau (Q(s_b, a_b) - V(s_b))), W_MAX),   W_MAX = 100                      (Eq. 73)

with m the `bc_mask_invalid` coordinate mask (all ones without it), so w = 1 is exactly the BC flow
loss. Q is the guidance critic aggregated over its heads (`Agent.target_q`) and V the critic's V
(with critic=iql its expectile V: IQL's own AWR extraction); a critic without V (critic=td) gets
FAWAC's own 'fawac_value', regressed onto the aggregated target Q at the dataset chunk (the
authors' code; Eq. 76 regresses it onto the TD target, whose mean is the same). Both are held fixed
in the weights. The agent acts with, and a td critic backs up on, the Euler ODE of its flow, which
is Q-tilted, so the run has no `behavior_velocity_fn` (only `--sampler policy`). Choices:
docs/fidelity.md, "ReBRAC, FBRAC, FAWAC, IFQL".
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from qgf.agents.base import Agent, Batch, Params
from qgf.config import TrainConfig
from qgf.critics import critic_for
from qgf.critics.losses import value_loss
from qgf.critics.networks import value_network
from qgf.flow import (
    build_velocity_field,
    chunk_step_weights,
    flow_policy_actions,
    init_velocity_field,
    interpolate,
    sample_flow_times,
)

# The weights' upper clip (QAM App. C Eq. 73; IQL's code).
MAX_WEIGHT = 100.0


def advantage_weights(q: jnp.ndarray, v: jnp.ndarray, inv_temperature: float) -> jnp.ndarray:
    """min(exp(tau (Q - V)), MAX_WEIGHT) per row, held fixed."""
    return jax.lax.stop_gradient(jnp.minimum(jnp.exp(inv_temperature * (q - v)), MAX_WEIGHT))


def weighted_flow_matching_loss(squared_errors, row_weights, weights=None):
    """sum_{b,c} w_b m_bc err_bc / sum m_bc for flow-matching squared errors err (B, d), row weights
    w (B,) and a coordinate mask m (all ones when `weights` is None): with every w_b = 1 it is
    `qgf.flow.flow_matching_loss`."""
    mask = jnp.ones_like(squared_errors) if weights is None else weights
    return jnp.sum(row_weights[:, None] * mask * squared_errors) / jnp.maximum(jnp.sum(mask), 1.0)


class FAWACAgent(Agent):
    """An advantage-weighted flow policy ('actor'; 'fawac_value' where the critic has no V)."""

    name = "fawac"
    summary = "FAWAC: flow matching weighted by min(exp(tau (Q - V)), 100) (advantage-weighted flow policy)"
    clipped_networks = ("actor",)
    contract_losses = ("bc_loss",)

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        actor_key, value_key = jax.random.split(key)
        params = {"actor": init_velocity_field(config, actor_key, observations, actions)}
        if not critic_for(config).has_value:
            params["fawac_value"] = value_network(config).init(value_key, observations)
        return params

    def velocity_from(self, params: Params) -> Callable:
        return functools.partial(build_velocity_field(self.config, self.chunk_dim).apply, params["actor"])

    def baseline_value(self, params: Params, observations: jnp.ndarray) -> jnp.ndarray:
        """V(s) of the advantage: the critic's V, or FAWAC's own."""
        if "fawac_value" in params:
            return value_network(self.config).apply(params["fawac_value"], observations)
        return self.critic.value(params, observations)

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        """Eq. 73's weighted flow matching (+ the own V's regression where there is one)."""
        config = self.config
        observations, actions = batch["observations"], batch["actions"]
        noise_key, time_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, actions.shape, actions.dtype)
        times = sample_flow_times(time_key, actions.shape[0], config.time_sampling, config.flow_steps)
        mask = chunk_step_weights(batch["valid"], self.action_dim) if config.bc_mask_invalid else None

        q = self.target_q(observations, actions)
        values = self.baseline_value(params, observations)
        weights = advantage_weights(q, jax.lax.stop_gradient(values), config.fawac_inv_temperature)
        noisy_actions = interpolate(noise, actions, times)
        velocity = self.velocity_from(params)(observations, noisy_actions, times)
        squared_errors = jnp.square(velocity - (actions - noise))
        awr_loss = weighted_flow_matching_loss(squared_errors, weights, mask)
        bc_loss = weighted_flow_matching_loss(
            jax.lax.stop_gradient(squared_errors), jnp.ones_like(weights), mask
        )  # the unweighted flow-matching loss, a metric
        metrics = {
            "awr_loss": awr_loss,
            "bc_loss": bc_loss,
            "awr_weight_mean": jnp.mean(weights),
            "awr_weight_max": jnp.max(weights),
            "advantage_mean": jnp.mean(q - values),
        }
        total = awr_loss
        if "fawac_value" in params:
            row_weights = batch["valid"][:, -1].astype(jnp.float32)
            own_value_loss = value_loss(q, values, 0.5, row_weights)
            total = total + own_value_loss
            metrics["fawac_value_loss"] = own_value_loss
        return total, metrics

    def policy_actions_from(self, params: Params, observations, key):
        return flow_policy_actions(self.velocity_from(params), observations, key, self.config, self.chunk_dim)


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {"fawac": {"class": "FAWACAgent", "order": 93, "sections": ["fawac", "policy-optimiser"]}}
CONFIG_SECTIONS = {
    "fawac": {
        "title": "FAWAC's advantage-weighted flow matching (QAM paper Eq. 73)",
        "settings": {
            "fawac_inv_temperature": {
                "default": 0.8,
                "help": "fawac: inverse temperature tau of the weights min(exp(tau (Q - V)), 100) (Eq. 73)",
                "min": 0.0,
            },
        },
    },
}
