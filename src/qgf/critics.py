"""Chunked IQL critic (QGF Appendix F, Eqs. 11 and 12): Q ensemble, V, expectile loss, EMA target.

    Q_k(s_t, a_{t:t+h})  ->  y = sum_{i<h} gamma^i r_{t+i} + gamma^h * m * V(s_{t+h})     (Eq. 11)
    V(s_t)               ->  expectile_tau of  Qbar(s_t, a_{t:t+h})                         (Eq. 12)

with Qbar the EMA target ensemble aggregated by min (or mean) over its K heads. Rows whose chunk
crosses a trajectory end (valid[:, -1] == 0) carry weight 0 in both losses.
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


def ema_update(target_params, online_params, rate: float):
    """target <- (1 - rate) * target + rate * online, leaf by leaf."""
    return jax.tree_util.tree_map(lambda t, o: (1.0 - rate) * t + rate * o, target_params, online_params)
