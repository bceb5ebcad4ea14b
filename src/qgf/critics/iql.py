"""`critic=iql`: chunked IQL (QGF Appendix F, Eqs. 11 and 12), the paper's Fig. 5 setting.

    Q_k(s_t, a_{t:t+h})  ->  y = sum_{i<h} gamma^i r_{t+i} + gamma^h * m * V(s_{t+h})     (Eq. 11)
    V(s_t)               ->  expectile_tau of  Qbar(s_t, a_{t:t+h})                         (Eq. 12)

Qbar is the EMA target ensemble aggregated over its K heads (`critic_aggregation`); Eq. 11's V is
the online V, held fixed. Rows whose chunk crosses a trajectory end carry weight 0. In-sample: the
backup never reads the policy. Imports the modules of this package only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qgf.critics.base import Critic, chunk_q_regression, q_metrics
from qgf.critics.losses import value_loss
from qgf.critics.networks import aggregate_q, q_ensemble, value_network


class IQLCritic(Critic):
    """Q ensemble ('critic', with an EMA target) and V ('value')."""

    name = "iql"
    summary = "in-sample chunked IQL: Q onto R + gamma^h V(s'), V the expectile of the target Q (QGF App. F)"
    networks = ("critic", "value")
    target_networks = ("critic",)

    def init_params(self, key, observations, actions):
        critic_key, value_key = jax.random.split(key)
        return {
            "critic": q_ensemble(self.config).init(critic_key, observations, actions),
            "value": value_network(self.config).init(value_key, observations),
        }

    def losses(self, params, target_params, batch, next_actions=None):
        """Eq. 11 (Q) + Eq. 12 (V) at `params`, and metrics; `next_actions` is not read."""
        config, value = self.config, value_network(self.config)
        observations, actions = batch["observations"], batch["actions"]
        bootstrap = value.apply(params["value"], batch["next_observations"])
        q_loss, q_values, targets, row_weights = chunk_q_regression(
            config, params["critic"], batch, bootstrap
        )

        target_q = jax.lax.stop_gradient(
            aggregate_q(
                q_ensemble(config).apply(target_params["critic"], observations, actions),
                config.critic_aggregation,
            )
        )
        values = value.apply(params["value"], observations)
        v_loss = value_loss(target_q, values, config.expectile, row_weights)
        metrics = {
            "critic_loss": q_loss,
            "value_loss": v_loss,
            **q_metrics(q_values, config.critic_aggregation),
            "v_mean": jnp.mean(values),
            "v_min": jnp.min(values),
            "v_max": jnp.max(values),
            "td_target_mean": jnp.mean(targets),
            "valid_fraction": jnp.mean(row_weights),
        }
        return q_loss + v_loss, metrics
