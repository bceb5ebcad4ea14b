"""The CGQL family: classifier-guidance Q-learning (QAM App. C Eqs. 58-72), three variants.

A BC velocity field v_beta ('actor', flow matching only) plus a guidance field made from a critic
read as the score of pi*(a | s) ∝ exp(tau Q(s, a)) (Eq. 58, the score-to-velocity conversion of the
linear path a^u = (1 - u) z + u a):

    v(s, a^u, u) = v_beta(s, a^u, u) + vartheta ((1 - u) tau grad_a Qhat(s, a^u, u) + a^u) / u  (Eqs. 61, 72)

with tau = `cgql_inv_temperature`, vartheta = `cgql_guidance`. The policy is the Euler ODE of v
(clipped), on the grid u_k = k/T; the guidance term is left out of the first step (u = 0, where
1/u diverges), as in the authors' code. With `critic=td` the critic backs up on that policy's
actions (Eq. 62). The variants differ in Qhat, the critic at a noisy action:

- `cgql` (Eq. 60): Qhat(s, a^u, u) = Q(s, a^u), the clean-action critic at the noisy action
  (classifier guidance's approximation); no network beyond v_beta and the critic;
- `cgql-mse` (Eq. 63): a time-conditioned K-head ensemble Q_zeta(s, a^u, u) ('noisy_critic', the
  critic's architecture on [s, u] and a^u), each head regressed onto the same head of the
  guidance critic at the clean dataset chunk: u ~ U[0, 1], z ~ N(0, I),
      L(zeta) = mean (Q_zeta,k(s, a^u, u) - Q_k(s, a))^2         (its optimum is E_z Q, Eq. 65);
- `cgql-linex` (Eqs. 64, 70): the same network with the clipped Linex loss, whose optimum is
  (1/tau) log E_z exp(tau Q) (Eq. 66, Eq. 59's Q^u): with Delta = tau (Q_k(s, a) - Q_zeta,k),
      loss = exp(Delta) + tau Q_zeta,k   where Delta <= 5,   Delta   where Delta > 5.

Qhat is aggregated over its heads like the run's critic (`critic_aggregation`). The regression
targets and Q are held fixed. The BC flow is `behavior_velocity_fn`, so every test-time sampler
(QGF, BFN, ...) also applies to a CGQL run. Choices (one network for the noisy critic apart from
the critic, so Eq. 71's varrho has no counterpart; which critic guides; Table 4's column order):
docs/fidelity.md, "CGQL, DSRL and FEdit".
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from qgf.agents.base import Batch, Params
from qgf.agents.qgf import QGFAgent
from qgf.config import TrainConfig
from qgf.critics.networks import aggregate_q, q_ensemble
from qgf.flow import flow_policy_actions, interpolate

# Eq. 70: above this Delta = tau (Q - Qhat) the Linex loss continues linearly (the authors' 5).
LINEX_CLIP = 5.0


def guidance_velocity(q_gradient, noisy_actions, times, inv_temperature: float):
    """((1 - u) tau grad_a Qhat + a^u) / u per row (Eqs. 60, 72), 0 at u = 0; times (B,)."""
    u = times[:, None]
    safe_u = jnp.where(u > 0.0, u, 1.0)
    guidance = ((1.0 - u) * inv_temperature * q_gradient + noisy_actions) / safe_u
    return jnp.where(u > 0.0, guidance, 0.0)


def noisy_regression_loss(noisy_q, target_q, row_weights, kind: str, inv_temperature: float):
    """The noisy critic's loss, heads (K, B) against targets (K, B), rows weighted (B,):
    'mse' (Eq. 63) or 'linex' (Eqs. 64, 70, clipped at Delta > LINEX_CLIP)."""
    if kind == "mse":
        per_row = jnp.square(noisy_q - target_q)
    else:
        delta = inv_temperature * (target_q - noisy_q)
        linear = delta > LINEX_CLIP
        per_row = jnp.where(
            linear, delta, jnp.exp(jnp.minimum(delta, LINEX_CLIP)) + inv_temperature * noisy_q
        )
    return jnp.mean(per_row * row_weights[None])


class CGQLAgent(QGFAgent):
    """BC flow ('actor') + critic; acts with the ODE of v_beta plus the critic's guidance field at
    the noisy action (Eq. 60)."""

    name = "cgql"
    summary = "Classifier-guidance Q-learning: BC flow + vartheta x the critic's score field (QAM Eq. 61)"
    contract_losses = ("bc_loss",)
    # None (Eq. 60: the critic itself), 'mse' (Eq. 63) or 'linex' (Eq. 70)
    noisy_critic_loss: ClassVar[str | None] = None

    def guided_velocity(self, params: Params):
        """v(s, a^u, u) = v_beta + vartheta * guidance at `params` (Eqs. 61, 72)."""
        config = self.config
        base = self.velocity_from(params)

        def velocity(observations, actions, times):
            q_gradient = jax.grad(lambda a: jnp.sum(self.noisy_q(params, observations, a, times)))(actions)
            guidance = guidance_velocity(q_gradient, actions, times, config.cgql_inv_temperature)
            return base(observations, actions, times) + config.cgql_guidance * guidance

        return velocity

    def noisy_q(self, params: Params, observations, noisy_actions, times):
        """Qhat(s, a^u, u) (B,): the guidance critic at the noisy action (Eq. 60)."""
        return self.target_q(observations, noisy_actions)

    def policy_actions_from(self, params: Params, observations, key):
        return flow_policy_actions(
            self.guided_velocity(params), observations, key, self.config, self.chunk_dim
        )


class RegressedCGQLAgent(CGQLAgent):
    """CGQL whose Qhat is a time-conditioned critic ('noisy_critic') regressed onto the critic."""

    # its regression onto Q values (not gradients) cannot follow the contract's 300x rescaled fixed
    # critic within its 50 updates (tests/agent_contract.py, CRITIC_COPY_POLICIES)

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        actor_key, critic_key = jax.random.split(key)
        timed = jnp.concatenate([observations, jnp.zeros((observations.shape[0], 1), observations.dtype)], -1)
        return {
            **super().init_policy_params(config, actor_key, observations, actions),
            "noisy_critic": q_ensemble(config).init(critic_key, timed, actions),
        }

    def noisy_q_heads(self, params: Params, observations, noisy_actions, times):
        """Q_zeta(s, a^u, u) of every head (K, B): the critic's network on [s, u] and a^u."""
        timed = jnp.concatenate([observations, times[:, None].astype(observations.dtype)], axis=-1)
        return q_ensemble(self.config).apply(params["noisy_critic"], timed, noisy_actions)

    def noisy_q(self, params: Params, observations, noisy_actions, times):
        heads = self.noisy_q_heads(jax.lax.stop_gradient(params), observations, noisy_actions, times)
        return aggregate_q(heads, self.config.critic_aggregation)

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        """L_FM(actor) + the noisy critic's regression (Eq. 63 or 70); `key` splits into (flow
        matching, regression noise and times)."""
        bc_key, noise_key, time_key = jax.random.split(key, 3)
        bc_loss, metrics = super().policy_losses(params, batch, bc_key)
        observations, actions = batch["observations"], batch["actions"]
        noise = jax.random.normal(noise_key, actions.shape, actions.dtype)
        times = jax.random.uniform(time_key, (actions.shape[0],), actions.dtype)
        targets = jax.lax.stop_gradient(
            self.critic.q_heads(self.guidance_critic_params, observations, actions)
        )
        noisy = self.noisy_q_heads(params, observations, interpolate(noise, actions, times), times)
        loss = noisy_regression_loss(
            noisy,
            targets,
            batch["valid"][:, -1].astype(jnp.float32),
            self.noisy_critic_loss,
            self.config.cgql_inv_temperature,
        )
        return bc_loss + loss, {**metrics, "noisy_critic_loss": loss, "noisy_q_mean": jnp.mean(noisy)}


class CGQLMSEAgent(RegressedCGQLAgent):
    name = "cgql-mse"
    summary = "CGQL with a time-conditioned critic regressed onto Q by MSE (QAM Eq. 63)"
    noisy_critic_loss = "mse"


class CGQLLinexAgent(RegressedCGQLAgent):
    name = "cgql-linex"
    summary = "CGQL with a time-conditioned critic regressed onto Q by the clipped Linex loss (QAM Eq. 70)"
    noisy_critic_loss = "linex"


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {
    "cgql": {"class": "CGQLAgent", "order": 95, "sections": ["cgql"]},
    "cgql-mse": {"class": "CGQLMSEAgent", "order": 96, "sections": ["cgql"]},
    "cgql-linex": {"class": "CGQLLinexAgent", "order": 97, "sections": ["cgql"]},
}
CONFIG_SECTIONS = {
    "cgql": {
        "title": "the CGQL family's guidance field (QAM App. C Eqs. 58-72)",
        "settings": {
            "cgql_guidance": {
                "default": 0.1,
                "help": "cgql family: vartheta, the weight of the guidance field added to the BC flow "
                "(Eq. 61)",
                "min": 0.0,
            },
            "cgql_inv_temperature": {
                "default": 1.0,
                "help": "cgql family: inverse temperature tau of pi* ∝ exp(tau Q) (Eqs. 58, 64)",
                "above": 0.0,
            },
        },
    },
}
