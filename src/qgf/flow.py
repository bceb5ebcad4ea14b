"""Behaviour-cloning flow-matching policy: the velocity field v(s, a_t, t) and its loss (QGF Eq. 2).

Conventions (docs/architecture.md): t = 0 is noise, t = 1 is data; the interpolant is
a_t = (1 - t) z + t a with z ~ N(0, I), and the regression target is the constant velocity a - z.
Action chunks are flattened, (B, h*A), row-major in time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from qgf.nets import MLP, time_features


class VelocityField(nn.Module):
    """v(s, a_t, t) -> (B, chunk_dim): an MLP on [s, a_t, features(t)]."""

    hidden_dims: Sequence[int]
    chunk_dim: int
    time_embedding: str = "sinusoidal"
    time_embedding_dim: int = 16
    layer_norm: bool = True

    @nn.compact
    def __call__(
        self, observations: jnp.ndarray, noisy_actions: jnp.ndarray, times: jnp.ndarray
    ) -> jnp.ndarray:
        features = time_features(times, self.time_embedding, self.time_embedding_dim)
        inputs = jnp.concatenate([observations, noisy_actions, features], axis=-1)
        return MLP(self.hidden_dims, self.chunk_dim, self.layer_norm)(inputs)


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
