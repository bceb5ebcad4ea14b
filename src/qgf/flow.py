"""Behaviour-cloning flow-matching policy: the velocity field v(s, a_t, t) and its loss (QGF Eq. 2),
and the BC-flow helpers every flow-based agent uses (build / initialise the actor of a config, its
flow-matching loss on a chunk batch, its unguided actions).

Conventions (docs/architecture.md): t = 0 is noise, t = 1 is data; the interpolant is
a_t = (1 - t) z + t a with z ~ N(0, I), and the regression target is the constant velocity a - z.
Action chunks are flattened, (B, h*A), row-major in time.

Imports `qgf.nets` and the sampler loop of `qgf.guidance` (never `qgf.agents`: agents import this).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qgf.guidance.estimators import SamplerSpec
from qgf.guidance.sampler import sample, sample_with_info
from qgf.nets import MLP, mlp_style, policy_layer_norm, time_features

if TYPE_CHECKING:
    from qgf.config import TrainConfig


class VelocityField(nn.Module):
    """v(s, a_t, t) -> (B, chunk_dim): an MLP on [s, a_t, features(t)]."""

    hidden_dims: Sequence[int]
    chunk_dim: int
    time_embedding: str = "sinusoidal"
    time_embedding_dim: int = 16
    layer_norm: bool = True
    style: str = "qgf"

    @nn.compact
    def __call__(
        self, observations: jnp.ndarray, noisy_actions: jnp.ndarray, times: jnp.ndarray
    ) -> jnp.ndarray:
        features = time_features(times, self.time_embedding, self.time_embedding_dim)
        inputs = jnp.concatenate([observations, noisy_actions, features], axis=-1)
        return MLP(self.hidden_dims, self.chunk_dim, self.layer_norm, self.style)(inputs)


def sample_flow_times(key: jax.Array, batch_size: int, how: str, grid_steps: int) -> jnp.ndarray:
    """Training times (B,): 'uniform' t ~ U[0, 1] (paper Eq. 2) or 'grid' t ~ U{0, 1/T, ..., 1}."""
    if how == "uniform":
        return jax.random.uniform(key, (batch_size,))
    if how == "grid":
        return jax.random.randint(key, (batch_size,), 0, grid_steps + 1).astype(jnp.float32) / grid_steps
    raise ValueError(f"unknown time sampling {how!r}")


def interpolate(noise: jnp.ndarray, actions: jnp.ndarray, times: jnp.ndarray) -> jnp.ndarray:
    """a_t = (1 - t) z + t a, with t broadcast over the chunk dimension."""
    t = times[:, None]
    return (1.0 - t) * noise + t * actions


def chunk_step_weights(valid: jnp.ndarray, action_dim: int) -> jnp.ndarray:
    """Per-coordinate weights (B, h*A) from per-step validity (B, h): step i covers coordinates
    [i*A, (i+1)*A) of the flattened chunk."""
    return jnp.repeat(valid.astype(jnp.float32), action_dim, axis=1)


def flow_matching_loss(
    velocity_fn: Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray],
    observations: jnp.ndarray,
    actions: jnp.ndarray,
    noise: jnp.ndarray,
    times: jnp.ndarray,
    weights: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Mean squared flow-matching error: E ||v(s, a_t, t) - (a - z)||^2 / d.

    Eq. 2 divided by the chunk dimension d (same minimiser, and Adam's updates are invariant to
    the constant). With `weights` (B, d), the mean runs over the weighted coordinates only, so
    masked chunk steps neither count nor dilute the loss.
    """
    noisy_actions = interpolate(noise, actions, times)
    target_velocity = actions - noise
    squared_error = jnp.square(velocity_fn(observations, noisy_actions, times) - target_velocity)
    if weights is None:
        return jnp.mean(squared_error)
    return jnp.sum(weights * squared_error) / jnp.maximum(jnp.sum(weights), 1.0)


# --------------------------------------------------------------------------------------------------
# The BC-flow helpers of flow-based agents


def build_velocity_field(config: TrainConfig, chunk_dim: int) -> VelocityField:
    """The actor network v(s, a_t, t) of `config` (every flow-based agent uses this one)."""
    return VelocityField(
        hidden_dims=config.actor_hidden_dims,
        chunk_dim=chunk_dim,
        time_embedding=config.time_embedding,
        time_embedding_dim=config.time_embedding_dim,
        layer_norm=policy_layer_norm(config),
        style=mlp_style(config, "policy"),
    )


def init_velocity_field(config: TrainConfig, key, observations, actions) -> dict:
    """Fresh parameters of `build_velocity_field(config, d)` for (B, d) `actions`."""
    network = build_velocity_field(config, actions.shape[-1])
    return network.init(key, observations, actions, jnp.zeros((actions.shape[0],), jnp.float32))


def bc_flow_loss(agent: Any, params, batch: dict, key: jax.Array, network: str = "actor"):
    """Flow matching (Eq. 2) of `params[network]` on the batch's chunks, with the flow times and
    noise drawn from `key`; returns (loss, noise z, times t) so that callers can reuse the same
    interpolants. `agent` is a `qgf.agents.Agent` (its config, action_dim and chunk_dim are read)."""
    config = agent.config
    actions = batch["actions"]
    noise_key, time_key = jax.random.split(key)
    noise = jax.random.normal(noise_key, actions.shape, actions.dtype)
    times = sample_flow_times(time_key, actions.shape[0], config.time_sampling, config.flow_steps)
    weights = chunk_step_weights(batch["valid"], agent.action_dim) if config.bc_mask_invalid else None
    velocity = functools.partial(build_velocity_field(config, agent.chunk_dim).apply, params[network])
    loss = flow_matching_loss(velocity, batch["observations"], actions, noise, times, weights)
    return loss, noise, times


def flow_policy_actions(
    velocity_fn: Callable, observations, key, config: TrainConfig, chunk_dim: int, noise=None
):
    """ODE(v, z): the unguided Euler solution of `velocity_fn` with `config.flow_steps` steps,
    clipped to [-1, 1] (QAM Eq. 39), from N(0, I) noise drawn with `key`, or from the given `noise`
    z (B, d) (then `key` is unused and may be None). The sampler loop of `qgf.guidance`."""
    spec = SamplerSpec("none", steps=config.flow_steps)
    if noise is None:
        return sample(velocity_fn, None, observations, key, 0.0, spec, chunk_dim)
    # With the noise given, the key feeds nothing (the 'none' estimator draws no noise of its own).
    key = jax.random.key(0) if key is None else key
    actions, _ = sample_with_info(velocity_fn, None, observations, key, 0.0, spec, chunk_dim, noise=noise)
    return actions
