"""The networks every critic is made of: a K-head Q ensemble on [s, a_chunk], a value network on s,
and how the K heads combine into one Q. Imports only `qgf.nets` (and Flax/JAX).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from qgf.nets import MLP, Ensemble, mlp_style


class QEnsemble(nn.Module):
    """K independent Q heads on [s, a_chunk]: output (K, B)."""

    hidden_dims: Sequence[int]
    num_critics: int = 2
    layer_norm: bool = True
    style: str = "qgf"

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        inputs = jnp.concatenate([observations, actions], axis=-1)
        return Ensemble(self.hidden_dims, 1, self.num_critics, self.layer_norm, self.style)(inputs)[..., 0]


class ValueNetwork(nn.Module):
    """V(s): output (B,)."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True
    style: str = "qgf"

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> jnp.ndarray:
        return MLP(self.hidden_dims, 1, self.layer_norm, self.style)(observations)[..., 0]


def q_ensemble(config) -> QEnsemble:
    """The Q ensemble of `config` (TrainConfig): K = `num_critics` heads of `critic_hidden_dims`."""
    return QEnsemble(
        config.critic_hidden_dims, config.num_critics, config.layer_norm, mlp_style(config, "critic")
    )


def value_network(config) -> ValueNetwork:
    """The value network of `config`: the critic widths."""
    return ValueNetwork(config.critic_hidden_dims, config.layer_norm, mlp_style(config, "critic"))


def aggregate_q(q_values: jnp.ndarray, how: str) -> jnp.ndarray:
    """Combine the heads (K, B) -> (B,): 'min' (pessimistic, the paper's choice) or 'mean'."""
    if how == "min":
        return jnp.min(q_values, axis=0)
    if how == "mean":
        return jnp.mean(q_values, axis=0)
    raise ValueError(f"unknown critic aggregation {how!r}")
