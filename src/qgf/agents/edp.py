"""`edp`: Efficient Diffusion Policies (Kang et al., 2023) on flows, a training-time baseline of the
QGF paper (§6 and App. I: "uses a first-order Euler approximation of the denoised action").

One policy network, 'actor', a velocity field v_theta(s, a_t, t) trained by

    L(theta) = w_BC * L_FM(theta) - Q(s, clip(a1_hat)),    a1_hat = a_t + (1 - t) v_theta(s, a_t, t)

where L_FM is flow matching on the batch's chunks (QGF Eq. 2) and a_t, t are the SAME noisy dataset
actions and times as that term; a1_hat is the one-step Euler estimate of the denoised action (QGF
Eq. 7, here with the gradient flowing through v_theta into the policy). Q is the guidance critic
aggregated over its heads (`Agent.target_q`; `q_term_critic` as for FQL), held fixed; with
`config.normalize_q_loss` the -Q term is divided by stop_gradient(mean_batch |Q|), as for FQL.
w_BC is `config.edp_bc_weight` (QGF Table 3 / Table 5 range {1, 10, 30, 100, 300}).

The agent acts with the Euler ODE of its own flow. That flow is pushed towards high Q, so it is not
a behaviour-cloning flow and the run has no `behavior_velocity_fn`: only `--sampler policy`
evaluates it. Choices: docs/fidelity.md, "FQL and EDP".
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from qgf.agents.base import Agent, Batch, Params
from qgf.agents.fql import q_ascent_loss, q_term_values
from qgf.config import TrainConfig
from qgf.flow import bc_flow_loss, build_velocity_field, flow_policy_actions, init_velocity_field, interpolate


class EDPAgent(Agent):
    """A flow policy ('actor') trained by w_BC * flow matching - Q(one-step Euler estimate)."""

    name = "edp"
    summary = "EDP: flow policy trained by w_BC * flow matching - Q at the one-step denoised estimate"
    clipped_networks = ("actor",)
    contract_losses = ("edp_loss",)

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        return {"actor": init_velocity_field(config, key, observations, actions)}

    def velocity_from(self, params: Params) -> Callable:
        """v(obs, a_t, t) of the policy flow at `params`."""
        return functools.partial(build_velocity_field(self.config, self.chunk_dim).apply, params["actor"])

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        """w_BC * L_FM - Q(s, clip(a1_hat)); metrics report the unweighted flow-matching loss."""
        config = self.config
        bc_loss, noise, times = bc_flow_loss(self, params, batch, key)

        observations = batch["observations"]
        noisy_actions = interpolate(noise, batch["actions"], times)
        velocity = self.velocity_from(params)(observations, noisy_actions, times)
        denoised = noisy_actions + (1.0 - times)[:, None] * velocity
        # The critic only knows actions in [-1, 1] (as for the guidance samplers' clip_hat).
        q = q_term_values(self, observations, jnp.clip(denoised, -1.0, 1.0))
        q_loss = q_ascent_loss(q, config.normalize_q_loss)

        total = config.edp_bc_weight * bc_loss + q_loss
        return total, {"bc_loss": bc_loss, "q_loss": q_loss, "q_policy_mean": jnp.mean(q), "edp_loss": total}

    def policy_actions_from(self, params: Params, observations, key):
        return flow_policy_actions(self.velocity_from(params), observations, key, self.config, self.chunk_dim)


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {"edp": {"class": "EDPAgent", "order": 30, "sections": ["edp", "q-term", "policy-optimiser"]}}
CONFIG_SECTIONS = {
    "edp": {
        "title": "EDP's flow policy (QGF Sec. 6 / App. I)",
        "settings": {
            "edp_bc_weight": {
                "default": 30.0,
                "help": "edp: weight w_BC of the flow-matching term against -Q",
                "min": 0.0,
            },
        },
    },
}
