"""`dsrl`: diffusion steering by RL in the noise space of a BC flow (Wagenmaker et al., 2025), in the
form the QAM paper compares (App. C Eqs. 80-83).

Networks:

- 'actor', the BC velocity field v_theta (flow matching only, L_FM); its Euler ODE maps a noise z to
  an action, F(s, z) = clip(ODE(v_theta(s, ., .), z), -1, 1);
- 'noise_critic', Q_psi^z(s, z): a K-head ensemble on [s, z] (the critic's architecture), each head
  regressed onto the same head of the guidance critic at the action the flow makes of z (Eq. 82):

      L(psi) = mean_{k, rows} (Q_psi,k(s, z) - Q_k(s, F(s, z)))^2,   z ~ N(0, I)   (target held fixed)

- 'latent', a tanh-Gaussian noise policy pi_omega(Delta | s), Delta in (-1, 1)^d, whose noise is
  z = sigma_z Delta (sigma_z = `dsrl_noise_scale`, so z lies in [-sigma_z, sigma_z]^d, the behaviour
  support's approximation of QAM App. B), trained against the distilled critic with SAC's
  temperature ('latent_temperature', target entropy `dsrl_target_entropy` per coordinate):

      L(omega) = E[alpha log pi(Delta | s) - Q_psi^z(s, sigma_z Delta)]      (Eq. 81 + entropy)

  where Q_psi^z is aggregated over its heads like the run's critic and held fixed.

It acts with a = F(s, sigma_z Delta), Delta ~ pi_omega(. | s); a td critic backs up on those actions
(Eq. 83). The BC flow is `behavior_velocity_fn`, so the test-time samplers apply to a DSRL run.
Choices (which critic the distillation reads, no EMA copy of the BC flow): docs/fidelity.md,
"CGQL, DSRL and FEdit".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qgf.agents.base import Batch, Params
from qgf.agents.gaussian_policy import (
    entropy_regularised_terms,
    initial_temperature,
    tanh_gaussian_policy,
    tanh_gaussian_sample,
)
from qgf.agents.qgf import QGFAgent
from qgf.config import TrainConfig
from qgf.critics.networks import aggregate_q, q_ensemble
from qgf.flow import bc_flow_loss, flow_policy_actions


class DSRLAgent(QGFAgent):
    """BC flow ('actor') + noise-space critic ('noise_critic') + latent noise policy ('latent',
    'latent_temperature') + shared critic; acts with the flow's ODE from the policy's noise."""

    name = "dsrl"
    summary = "Latent-noise Gaussian policy on a BC flow's noise space with a distilled noise critic (DSRL)"
    clipped_networks = ("latent",)
    contract_losses = ("bc_loss",)
    # (its noise critic regresses onto Q values, which the contract's fixed critic rescales 300x
    # beyond what 50 updates follow: tests/agent_contract.py, CRITIC_COPY_POLICIES)

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        actor_key, critic_key, latent_key = jax.random.split(key, 3)
        return {
            **super().init_policy_params(config, actor_key, observations, actions),
            "noise_critic": q_ensemble(config).init(critic_key, observations, actions),
            "latent": tanh_gaussian_policy(config, actions.shape[-1]).init(latent_key, observations),
            "latent_temperature": initial_temperature(),
        }

    def flow_actions(self, params: Params, observations, noise):
        """F(s, z) = clip(ODE(v_theta(s, ., .), z)) from the given noise z (B, d)."""
        velocity = self.velocity_from(params)
        return flow_policy_actions(velocity, observations, None, self.config, self.chunk_dim, noise=noise)

    def noise_q_heads(self, params: Params, observations, noise):
        """Q_psi^z(s, z) of every head (K, B)."""
        return q_ensemble(self.config).apply(params["noise_critic"], observations, noise)

    def latent_noise(self, params: Params, observations, key):
        """(z = sigma_z Delta, log pi(Delta)) with Delta ~ pi_omega(. | s)."""
        policy = tanh_gaussian_policy(self.config, self.chunk_dim)
        mean, log_std = policy.apply(params["latent"], observations)
        delta, log_prob = tanh_gaussian_sample(mean, log_std, key)
        return self.config.dsrl_noise_scale * delta, log_prob

    def distillation_targets(self, params: Params, observations, noise):
        """Q_k(s, F(s, z)) (K, B) of the guidance critic, held fixed: Eq. 82's regression targets."""
        actions = self.flow_actions(jax.lax.stop_gradient(params), observations, noise)
        return jax.lax.stop_gradient(self.critic.q_heads(self.guidance_critic_params, observations, actions))

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        """L_FM(actor) + Eq. 82 (noise_critic) + Eq. 81 with SAC's entropy terms (latent,
        latent_temperature); `key` splits into (flow matching, distillation noise, latent noise)."""
        bc_key, noise_key, latent_key = jax.random.split(key, 3)
        bc_loss, _, _ = bc_flow_loss(self, params, batch, bc_key)
        observations = batch["observations"]

        noise = jax.random.normal(noise_key, (observations.shape[0], self.chunk_dim), observations.dtype)
        targets = self.distillation_targets(params, observations, noise)
        noise_critic_loss = jnp.mean(jnp.square(self.noise_q_heads(params, observations, noise) - targets))

        latent_loss, metrics = self.latent_terms(params, observations, latent_key)
        return bc_loss + noise_critic_loss + latent_loss, {
            "bc_loss": bc_loss,
            "noise_critic_loss": noise_critic_loss,
            **metrics,
        }

    def latent_terms(self, params: Params, observations, key):
        """Eq. 81 with SAC's entropy terms: E[alpha log pi(Delta | s) - Q_psi^z(s, sigma_z Delta)]
        (alpha and Q_psi^z held fixed) plus the temperature loss, and metrics."""
        latent, log_prob = self.latent_noise(params, observations, key)
        frozen_critic = {"noise_critic": jax.lax.stop_gradient(params["noise_critic"])}
        heads = self.noise_q_heads(frozen_critic, observations, latent)
        q = aggregate_q(heads, self.config.critic_aggregation)
        latent_loss, temperature_loss, entropy, alpha = entropy_regularised_terms(
            log_prob,
            q,
            params["latent_temperature"]["log_alpha"],
            self.config.dsrl_target_entropy * self.chunk_dim,
        )
        return latent_loss + temperature_loss, {
            "latent_loss": latent_loss,
            "latent_q": jnp.mean(q),
            "latent_entropy": entropy,
            "latent_temperature": alpha,
        }

    def policy_actions_from(self, params: Params, observations, key):
        noise, _ = self.latent_noise(params, observations, key)
        return self.flow_actions(params, observations, noise)


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {"dsrl": {"class": "DSRLAgent", "order": 98, "sections": ["dsrl", "policy-optimiser"]}}
CONFIG_SECTIONS = {
    "dsrl": {
        "title": "DSRL's latent noise policy (QAM App. C Eqs. 80-83)",
        "settings": {
            "dsrl_noise_scale": {
                "default": 1.0,
                "help": "dsrl: sigma_z, the noise policy's z lies in [-sigma_z, sigma_z]^d",
                "above": 0.0,
            },
            "dsrl_target_entropy": {
                "default": -0.5,
                "help": "dsrl: the noise policy's target entropy per chunk coordinate (SAC temperature "
                "tuning)",
            },
        },
    },
}
