"""The critics every agent shares: one component, two ways of bootstrapping (`config.critic`).

`iql` — chunked IQL (QGF Appendix F, Eqs. 11 and 12), the paper's Fig. 5 setting:

    Q_k(s_t, a_{t:t+h})  ->  y = sum_{i<h} gamma^i r_{t+i} + gamma^h * m * V(s_{t+h})     (Eq. 11)
    V(s_t)               ->  expectile_tau of  Qbar(s_t, a_{t:t+h})                         (Eq. 12)

`td` — TD backups on the agent's own policy samples a' ~ pi(s_{t+h}) with a pessimistic ensemble
target (QAM paper Eq. 26, chunked like everything else):

    Q_k(s_t, a_{t:t+h})  ->  y = R + gamma^h * m * (mean_k Qbar_k(s', a') - rho * std_k Qbar_k(s', a'))

V is trained by the same expectile regression in both modes (the td backup does not use it; the
add-ons that need an advantage do). Qbar is the EMA target ensemble, aggregated over its K heads
by min (or mean). Rows whose chunk crosses a trajectory end (valid[:, -1] == 0) carry weight 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from qgf.nets import MLP, Ensemble


class QEnsemble(nn.Module):
    """K independent Q heads on [s, a_chunk]: output (K, B)."""

    hidden_dims: Sequence[int]
    num_critics: int = 2
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        inputs = jnp.concatenate([observations, actions], axis=-1)
        return Ensemble(self.hidden_dims, 1, self.num_critics, self.layer_norm)(inputs)[..., 0]


class ValueNetwork(nn.Module):
    """V(s): output (B,)."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> jnp.ndarray:
        return MLP(self.hidden_dims, 1, self.layer_norm)(observations)[..., 0]


def aggregate_q(q_values: jnp.ndarray, how: str) -> jnp.ndarray:
    """Combine the heads (K, B) -> (B,): 'min' (pessimistic, the paper's choice) or 'mean'."""
    if how == "min":
        return jnp.min(q_values, axis=0)
    if how == "mean":
        return jnp.mean(q_values, axis=0)
    raise ValueError(f"unknown critic aggregation {how!r}")


def chunk_td_target(
    rewards: jnp.ndarray, masks: jnp.ndarray, next_values: jnp.ndarray, discount: float, horizon: int
) -> jnp.ndarray:
    """y = R + gamma^h * m * V(s_{t+h}); `rewards` already holds the discounted chunk sum R."""
    return rewards + (discount**horizon) * masks * next_values


def weighted_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """Mean over rows with weight; rows of weight 0 neither count nor dilute."""
    return jnp.sum(weights * values) / jnp.maximum(jnp.sum(weights), 1.0)


def critic_loss(q_values: jnp.ndarray, targets: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """Eq. 11 for each head (K, B) against shared targets (B,), averaged over heads and rows."""
    squared_error = jnp.square(q_values - jax.lax.stop_gradient(targets)[None, :])
    return jnp.mean(jax.vmap(weighted_mean, in_axes=(0, None))(squared_error, weights))


def expectile_loss(differences: jnp.ndarray, expectile: float) -> jnp.ndarray:
    """L_2^tau(u) = |tau - 1(u < 0)| u^2, elementwise."""
    weight = jnp.where(differences < 0, 1.0 - expectile, expectile)
    return weight * jnp.square(differences)


def value_loss(
    target_q: jnp.ndarray, values: jnp.ndarray, expectile: float, weights: jnp.ndarray
) -> jnp.ndarray:
    """Eq. 12: expectile regression of V (B,) onto the target critic's aggregated Qbar (B,)."""
    differences = jax.lax.stop_gradient(target_q) - values
    return weighted_mean(expectile_loss(differences, expectile), weights)


def pessimistic_target(q_values: jnp.ndarray, rho: float) -> jnp.ndarray:
    """mean_k Q_k - rho * std_k Q_k over the heads (K, B) -> (B,): QAM Eq. 26's backup value.
    The std is the population std (ddof = 0) of the K heads."""
    return jnp.mean(q_values, axis=0) - rho * jnp.std(q_values, axis=0)


def build_critic_networks(config) -> tuple[QEnsemble, ValueNetwork]:
    """(Q ensemble, value network) of `config` (TrainConfig)."""
    return (
        QEnsemble(config.critic_hidden_dims, config.num_critics, config.layer_norm),
        ValueNetwork(config.critic_hidden_dims, config.layer_norm),
    )


def init_critic_params(config, key: jax.Array, observations: jnp.ndarray, actions: jnp.ndarray) -> dict:
    """{'critic': ..., 'value': ...} initial parameters for example inputs (1, D) and (1, d)."""
    critic, value = build_critic_networks(config)
    critic_key, value_key = jax.random.split(key)
    return {
        "critic": critic.init(critic_key, observations, actions),
        "value": value.init(value_key, observations),
    }


def critic_losses(
    config,
    params: dict,
    target_critic_params,
    batch: dict,
    next_actions: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, dict]:
    """Q loss + V loss of `config.critic` at `params` ({'critic', 'value', ...}), and metrics.

    `next_actions` (B, d) are the agent's policy samples at `batch['next_observations']`, required
    by (and only used by) the td critic; they are held fixed (stop_gradient). Every quantity that
    crosses from one network into another's loss is a stop_gradient, so the gradient of the sum is
    the two separate gradients.
    """
    critic, value = build_critic_networks(config)
    observations, actions = batch["observations"], batch["actions"]
    row_weights = batch["valid"][:, -1].astype(jnp.float32)

    if config.critic == "iql":
        bootstrap = value.apply(params["value"], batch["next_observations"])
    elif config.critic == "td":
        if next_actions is None:
            raise ValueError("the td critic needs the policy's next actions")
        next_q = critic.apply(
            target_critic_params, batch["next_observations"], jax.lax.stop_gradient(next_actions)
        )
        bootstrap = pessimistic_target(next_q, config.critic_pessimism)
    else:
        raise ValueError(f"unknown critic {config.critic!r}")
    targets = chunk_td_target(
        batch["rewards"], batch["masks"], jax.lax.stop_gradient(bootstrap), config.discount, config.horizon
    )
    q_values = critic.apply(params["critic"], observations, actions)
    q_loss = critic_loss(q_values, targets, row_weights)

    target_q = jax.lax.stop_gradient(
        aggregate_q(critic.apply(target_critic_params, observations, actions), config.critic_aggregation)
    )
    values = value.apply(params["value"], observations)
    v_loss = value_loss(target_q, values, config.expectile, row_weights)

    q_aggregated = aggregate_q(q_values, config.critic_aggregation)
    metrics = {
        "critic_loss": q_loss,
        "value_loss": v_loss,
        "q_mean": jnp.mean(q_aggregated),
        "q_min": jnp.min(q_aggregated),
        "q_max": jnp.max(q_aggregated),
        "q_head_gap": jnp.mean(jnp.max(q_values, axis=0) - jnp.min(q_values, axis=0)),
        "v_mean": jnp.mean(values),
        "v_min": jnp.min(values),
        "v_max": jnp.max(values),
        "td_target_mean": jnp.mean(targets),
        "valid_fraction": jnp.mean(row_weights),
    }
    return q_loss + v_loss, metrics


def ema_update(target_params, online_params, rate: float):
    """target <- (1 - rate) * target + rate * online, leaf by leaf."""
    return jax.tree_util.tree_map(lambda t, o: (1.0 - rate) * t + rate * o, target_params, online_params)
