"""`fbrac`: FBRAC, the flow counterpart of diffusion Q-learning (Park et al., 2025), a backprop-family
baseline of the QAM paper (App. C Eqs. 36-39).

One policy network, 'actor', a velocity field v_theta(s, a_t, t) trained by

    L(theta) = alpha * L_FM(theta) - mean_B Q(s, ODE(v_theta(s, ., .), z)),   z ~ N(0, I)     (Eq. 36)

where L_FM is flow matching on the batch's chunks (QAM Eq. 17 / QGF Eq. 2) and ODE is the Euler
solution with `flow_steps` steps from z, clipped to [-1, 1] (Eq. 39), differentiated through
every Euler step (backpropagation through time, Eq. 37). Q is the guidance critic aggregated over
its heads (`Agent.target_q`), held fixed, and not normalised (the paper's alphas are calibrated to
the raw Q). The agent acts with, and a td critic backs up on, the same ODE of its own flow. That
flow is pushed towards high Q, so it is not a behaviour-cloning flow: the run has no
`behavior_velocity_fn` (only `--sampler policy`). Choices: docs/fidelity.md, "ReBRAC, FBRAC,
FAWAC, IFQL".
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from qgf.agents.base import Agent, Batch, Params
from qgf.agents.fql import q_ascent_loss
from qgf.config import TrainConfig
from qgf.flow import bc_flow_loss, build_velocity_field, flow_policy_actions, init_velocity_field


class FBRACAgent(Agent):
    """A flow policy ('actor') trained by alpha * flow matching - Q(its own ODE output), BPTT."""

    name = "fbrac"
    summary = "FBRAC: flow policy by alpha * flow matching - Q of its Euler ODE (backprop through time)"
    clipped_networks = ("actor",)
    contract_losses = ("bc_loss",)

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        return {"actor": init_velocity_field(config, key, observations, actions)}

    def velocity_from(self, params: Params) -> Callable:
        """v(obs, a_t, t) of the policy flow at `params`."""
        return functools.partial(build_velocity_field(self.config, self.chunk_dim).apply, params["actor"])

    def bptt_actions(self, params: Params, observations: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
        """ODE(v_theta, z) (Eq. 39), differentiable in `params` through all Euler steps."""
        return flow_policy_actions(
            self.velocity_from(params), observations, None, self.config, self.chunk_dim, noise=noise
        )

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        """alpha * L_FM - mean Q(s, ODE(v_theta, z)); `key` splits into (flow matching, z)."""
        bc_key, noise_key = jax.random.split(key)
        bc_loss, _, _ = bc_flow_loss(self, params, batch, bc_key)
        observations = batch["observations"]
        noise = jax.random.normal(noise_key, (observations.shape[0], self.chunk_dim), observations.dtype)
        q = self.target_q(observations, self.bptt_actions(params, observations, noise))
        q_loss = q_ascent_loss(q, normalize=False)
        total = self.config.fbrac_alpha * bc_loss + q_loss
        return total, {
            "bc_loss": bc_loss,
            "q_loss": q_loss,
            "q_policy_mean": jnp.mean(q),
            "fbrac_loss": total,
        }

    def policy_actions_from(self, params: Params, observations, key):
        return flow_policy_actions(self.velocity_from(params), observations, key, self.config, self.chunk_dim)


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {"fbrac": {"class": "FBRACAgent", "order": 92, "sections": ["fbrac", "policy-optimiser"]}}
CONFIG_SECTIONS = {
    "fbrac": {
        "title": "FBRAC's flow policy (QAM paper Eq. 36)",
        "settings": {
            "fbrac_alpha": {
                "default": 0.1,
                "help": "fbrac: weight alpha of the flow-matching term against -Q of the flow's ODE (Eq. 36)",
                "min": 0.0,
            },
        },
    },
}
