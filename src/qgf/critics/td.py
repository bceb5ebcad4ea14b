"""`critic=td`: TD backups on the agent's own policy samples a' ~ pi(s_{t+h}) with a pessimistic
ensemble target (QAM paper Eq. 26, chunked like everything else):

    Q_k(s_t, a_{t:t+h})  ->  y = R + gamma^h * m * (mean_k Qbar_k(s', a') - rho * std_k Qbar_k(s', a'))

Qbar is the EMA target ensemble; a' (the agent's `policy_actions_from` at s' = s_{t+h}) is held
fixed. The backup reads no value network, so none is trained: a td run's parameters are its
policy's and 'critic'. Runs written before this held an (unused) IQL value network 'value'; it is
dropped when their checkpoints load (`retired_networks`), and their Q and policy continue exactly
as before. Imports the modules of this package only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qgf.critics.base import Critic, chunk_q_regression, q_metrics
from qgf.critics.networks import q_ensemble


def pessimistic_target(q_values: jnp.ndarray, rho: float) -> jnp.ndarray:
    """mean_k Q_k - rho * std_k Q_k over the heads (K, B) -> (B,): QAM Eq. 26's backup value.
    The std is the population std (ddof = 0) of the K heads."""
    return jnp.mean(q_values, axis=0) - rho * jnp.std(q_values, axis=0)


class TDCritic(Critic):
    """Q ensemble ('critic', with an EMA target), bootstrapped on the policy's next actions."""

    name = "td"
    summary = (
        "TD backups on the policy's own samples, target mean - rho * std of the target heads (QAM Eq. 26)"
    )
    networks = ("critic",)
    target_networks = ("critic",)
    needs_next_actions = True
    retired_networks = ("value",)

    def init_params(self, key, observations, actions):
        # The same split as iql's (critic, value) keys: Q starts where it started when td runs
        # also trained V, so their parameters stay bit-identical.
        critic_key, _ = jax.random.split(key)
        return {"critic": q_ensemble(self.config).init(critic_key, observations, actions)}

    def losses(self, params, target_params, batch, next_actions=None):
        """Eq. 26's regression of Q at `params`, and metrics; `next_actions` are required."""
        if next_actions is None:
            raise ValueError("the td critic needs the policy's next actions")
        config = self.config
        next_q = q_ensemble(config).apply(
            target_params["critic"], batch["next_observations"], jax.lax.stop_gradient(next_actions)
        )
        bootstrap = pessimistic_target(next_q, config.critic_pessimism)
        q_loss, q_values, targets, row_weights = chunk_q_regression(
            config, params["critic"], batch, bootstrap
        )
        metrics = {
            "critic_loss": q_loss,
            **q_metrics(q_values, config.critic_aggregation),
            "td_target_mean": jnp.mean(targets),
            "valid_fraction": jnp.mean(row_weights),
        }
        return q_loss, metrics


# ---- config section: read by qgf.config with ast.literal_eval (building a config imports nothing) ----
CONFIG_SECTIONS = {
    "td": {
        "title": "the td critic: TD backups on the agent's own policy samples (QAM Eq. 26)",
        "applies": {"critic": "td"},
        "settings": {
            "critic_pessimism": {
                "default": 0.5,
                "help": "rho of the td critic's target mean_K Qbar - rho * std_K Qbar (QAM Eq. 26)",
                "min": 0.0,
            },
        },
    },
}
