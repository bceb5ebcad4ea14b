"""Network building blocks: LayerNorm + GELU MLPs, the flow-time embedding, vmapped ensembles.

Two network styles (`TrainConfig.network_style`, docs/fidelity.md "Networks"): 'qgf' (LayerNorm
on every hidden layer, flax's lecun-normal init everywhere) and the QGF authors' networks, whose
MLP differs by role: 'authors-policy' (variance-scaling fan-avg uniform kernels in the hidden
layers, no LayerNorm on the last hidden layer, a lecun-normal output layer) and 'authors-critic'
(the uniform kernels in every layer, the output layer included, LayerNorm on every hidden layer).

Every layer acts on rows independently (LayerNorm normalises features, never the batch), so
`grad(sum(f(x)))` gives per-row gradients, as `qgf.guidance` requires of its callables.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Highest angular frequency of the sinusoidal time features. The lowest is 1 rad per unit t; with
# 16 features the frequencies are 1, 2.7, 7.2, ..., 1000, geometrically spaced. Frequencies near 1
# let the network interpolate smoothly in t; high ones let it tell the Euler grid points
# t = 0, 0.1, ..., 0.9 apart sharply (the velocity field changes fastest near t = 1).
TIME_EMBEDDING_MAX_FREQUENCY = 1000.0

MLP_STYLES = ("qgf", "authors-policy", "authors-critic")


def fan_avg_uniform():
    """The authors' kernel init: variance scaling 1 over (fan_in + fan_out) / 2, uniform."""
    return nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


def mlp_style(config, role: str) -> str:
    """The MLP style of a network of `role` ('policy' or 'critic') under `config.network_style`."""
    return "qgf" if config.network_style == "qgf" else f"authors-{role}"


def policy_layer_norm(config) -> bool:
    """Whether the policy networks of `config` have LayerNorm (`layer_norm` and `actor_layer_norm`)."""
    return bool(config.layer_norm and config.actor_layer_norm)


class MLP(nn.Module):
    """Dense -> [LayerNorm] -> GELU per hidden layer, then a linear output layer.

    GELU uses its tanh approximation (flax's default). LayerNorm sits before the activation so
    every hidden unit enters GELU with a controlled scale, which keeps critic targets with
    discount 0.999 from blowing up. `style` (one of MLP_STYLES, see the module docstring) sets the
    kernel inits and whether the last hidden layer has LayerNorm; biases start at 0 in every style.
    """

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = True
    style: str = "qgf"

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        if self.style not in MLP_STYLES:
            raise ValueError(f"unknown MLP style {self.style!r}")
        authors = self.style != "qgf"
        hidden_init = fan_avg_uniform() if authors else nn.linear.default_kernel_init
        output_init = fan_avg_uniform() if self.style == "authors-critic" else nn.linear.default_kernel_init
        x = inputs
        for index, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, kernel_init=hidden_init)(x)
            last = index == len(self.hidden_dims) - 1
            if self.layer_norm and not (last and self.style == "authors-policy"):
                x = nn.LayerNorm()(x)
            x = nn.gelu(x)
        return nn.Dense(self.output_dim, kernel_init=output_init)(x)


def time_features(times: jnp.ndarray, kind: str, dim: int) -> jnp.ndarray:
    """Features of flow time `times` (B,): 'raw' -> (B, 1); 'sinusoidal' -> (B, dim).

    Sinusoidal: [sin(w_k t), cos(w_k t)] for dim/2 frequencies w_k from 1 to
    TIME_EMBEDDING_MAX_FREQUENCY, geometrically spaced.
    """
    times = jnp.asarray(times, jnp.float32)
    if kind == "raw":
        return times[:, None]
    if kind == "sinusoidal":
        half = dim // 2
        exponents = np.arange(half, dtype=np.float32) / max(half - 1, 1)
        frequencies = jnp.asarray(TIME_EMBEDDING_MAX_FREQUENCY**exponents, jnp.float32)
        angles = times[:, None] * frequencies[None, :]
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    raise ValueError(f"unknown time embedding {kind!r}")


class Ensemble(nn.Module):
    """`num_members` independent copies of an MLP evaluated on the same input: output (K, B, out).

    `nn.vmap` stacks the members' parameters on a leading axis, so one call runs all K members
    as batched matrix products instead of K separate networks.
    """

    hidden_dims: Sequence[int]
    output_dim: int
    num_members: int
    layer_norm: bool = True
    style: str = "qgf"

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        members = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_members,
        )
        return members(self.hidden_dims, self.output_dim, self.layer_norm, self.style, name="members")(inputs)


def count_params(params) -> int:
    """Number of scalar parameters in a pytree."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))
