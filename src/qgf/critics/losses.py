"""Loss primitives every critic shares, as pure functions of arrays (not of networks), and the EMA
update of target networks. Imports only JAX.

Every quantity one network regresses onto is wrapped in `stop_gradient` here, so a critic's total
loss has, for each network, exactly that network's own loss gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def chunk_td_target(
    rewards: jnp.ndarray, masks: jnp.ndarray, next_values: jnp.ndarray, discount: float, horizon: int
) -> jnp.ndarray:
    """y = R + gamma^h * m * V(s_{t+h}); `rewards` already holds the discounted chunk sum R."""
    return rewards + (discount**horizon) * masks * next_values


def weighted_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """Mean over rows with weight; rows of weight 0 neither count nor dilute."""
    return jnp.sum(weights * values) / jnp.maximum(jnp.sum(weights), 1.0)


def critic_loss(q_values: jnp.ndarray, targets: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """Squared error of each head (K, B) against shared targets (B,) (held fixed), averaged over
    heads and weighted rows (QGF Eq. 11 and every chunked TD regression)."""
    squared_error = jnp.square(q_values - jax.lax.stop_gradient(targets)[None, :])
    return jnp.mean(jax.vmap(weighted_mean, in_axes=(0, None))(squared_error, weights))


def expectile_loss(differences: jnp.ndarray, expectile: float) -> jnp.ndarray:
    """L_2^tau(u) = |tau - 1(u < 0)| u^2, elementwise."""
    weight = jnp.where(differences < 0, 1.0 - expectile, expectile)
    return weight * jnp.square(differences)


def value_loss(
    target_q: jnp.ndarray, values: jnp.ndarray, expectile: float, weights: jnp.ndarray
) -> jnp.ndarray:
    """QGF Eq. 12: expectile regression of V (B,) onto an aggregated Qbar (B,), held fixed."""
    differences = jax.lax.stop_gradient(target_q) - values
    return weighted_mean(expectile_loss(differences, expectile), weights)


def ema_update(target_params, online_params, rate: float):
    """target <- (1 - rate) * target + rate * online, leaf by leaf."""
    return jax.tree_util.tree_map(lambda t, o: (1.0 - rate) * t + rate * o, target_params, online_params)
