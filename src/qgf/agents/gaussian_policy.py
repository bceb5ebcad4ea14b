"""The tanh-Gaussian policy with SAC's entropy temperature that several agents put on top of a flow
(no agent of its own; imported by `qam`, `fedit` and `dsrl`):

- `TanhGaussianPolicy`: an MLP on the concatenated inputs -> (mean, log_std) of a Gaussian whose
  sample is squashed by tanh into (-1, 1)^d; `tanh_gaussian_sample` draws it with its log density;
- `entropy_regularised_terms`: the SAC policy loss E[alpha log pi - Q] (alpha held fixed) and the
  temperature loss alpha (H - H_target), so alpha rises while the entropy H is below its target and
  falls above it (Haarnoja et al., 2018; QAM App. C Eqs. 77, 80);
- `GaussianEdit`: the edit policy pi_omega(Delta | s, a~) of QAM-EDIT (QAM Eq. 30) and FEdit (QAM
  App. C Eqs. 77-79): the action is clip(a~ + sigma_a Delta, -1, 1) with Delta in the L-infinity unit
  ball, so it never leaves the ball of radius sigma_a around the base action a~.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from qgf.nets import MLP, mlp_style, policy_layer_norm

# Bounds of the policy's log standard deviation (before tanh): keeps exp() and log pi finite.
EDIT_LOG_STD_RANGE = (-5.0, 2.0)


class TanhGaussianPolicy(nn.Module):
    """(mean, log_std), each (B, d), of the Gaussian before the tanh, from an MLP on the inputs
    concatenated along their last axis ([s, a~] for an edit policy, s for DSRL's noise policy)."""

    hidden_dims: Sequence[int]
    chunk_dim: int
    layer_norm: bool = True
    style: str = "qgf"  # qgf.nets.MLP's network_style ('authors': their inits and LayerNorm placement)

    @nn.compact
    def __call__(self, *inputs: jnp.ndarray):
        mlp = MLP(self.hidden_dims, 2 * self.chunk_dim, self.layer_norm, self.style)
        outputs = mlp(jnp.concatenate(inputs, axis=-1))
        mean, log_std = jnp.split(outputs, 2, axis=-1)
        return mean, jnp.clip(log_std, *EDIT_LOG_STD_RANGE)


def tanh_gaussian_policy(config, chunk_dim: int) -> TanhGaussianPolicy:
    """The tanh-Gaussian policy of `config` (a TrainConfig): the actor widths."""
    return TanhGaussianPolicy(
        config.actor_hidden_dims, chunk_dim, policy_layer_norm(config), mlp_style(config, "policy")
    )


def tanh_gaussian_sample(mean: jnp.ndarray, log_std: jnp.ndarray, key: jax.Array):
    """Delta = tanh(mean + std * eps) in (-1, 1)^d and log pi(Delta) (B,), with the tanh change of
    variables: log pi = sum [log N(x; mean, std) - log(1 - tanh(x)^2)]."""
    std = jnp.exp(log_std)
    pre_tanh = mean + std * jax.random.normal(key, mean.shape, mean.dtype)
    gaussian_log_prob = -0.5 * jnp.square((pre_tanh - mean) / std) - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    # log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x)), stable for large |x|
    log_jacobian = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.tanh(pre_tanh), jnp.sum(gaussian_log_prob - log_jacobian, axis=-1)


def initial_temperature() -> dict:
    """The temperature's parameters: log alpha = 0, alpha = 1 at the start."""
    return {"log_alpha": jnp.zeros((), jnp.float32)}


def entropy_regularised_terms(log_prob: jnp.ndarray, q: jnp.ndarray, log_alpha: jnp.ndarray, target_entropy):
    """(policy loss mean(alpha log pi - q) with alpha held fixed, temperature loss
    alpha (H - H_target) with H = -mean(log pi) held fixed, H, alpha): SAC's two losses. The
    temperature's gradient d/dlog_alpha = alpha (H - H_target) is positive (alpha falls) when the
    entropy exceeds its target."""
    alpha = jax.lax.stop_gradient(jnp.exp(log_alpha))
    policy_loss = jnp.mean(alpha * log_prob - q)
    entropy = -jnp.mean(jax.lax.stop_gradient(log_prob))
    temperature_loss = jnp.exp(log_alpha) * (entropy - target_entropy)
    return policy_loss, temperature_loss, entropy, jnp.exp(log_alpha)


class GaussianEdit:
    """The edit policy ('edit') and its temperature ('edit_temperature') of an agent (mixed into a
    `qgf.agents.base.Agent`); the agent names its two config fields: the L-infinity radius
    sigma_a (`edit_sigma_field`) and the target entropy per chunk coordinate
    (`edit_entropy_field`)."""

    edit_sigma_field: ClassVar[str] = ""
    edit_entropy_field: ClassVar[str] = ""

    @staticmethod
    def init_edit_params(config, key, observations, actions) -> dict:
        network = tanh_gaussian_policy(config, actions.shape[-1])
        return {"edit": network.init(key, observations, actions), "edit_temperature": initial_temperature()}

    def edit_policy(self) -> TanhGaussianPolicy:
        return tanh_gaussian_policy(self.config, self.chunk_dim)

    def edited_actions(self, params, observations, base_actions, key):
        """(clip(a~ + sigma_a Delta), log pi(Delta)) with Delta ~ pi_omega(. | s, a~)."""
        mean, log_std = self.edit_policy().apply(params["edit"], observations, base_actions)
        edit, log_prob = tanh_gaussian_sample(mean, log_std, key)
        sigma = getattr(self.config, self.edit_sigma_field)
        return jnp.clip(base_actions + sigma * edit, -1.0, 1.0), log_prob

    def edit_terms(self, params, observations, base_actions, key, q_fn):
        """The edit policy's loss E[alpha log pi - Q(s, clip(a~ + sigma_a Delta))] plus the
        temperature loss, and metrics; `base_actions` a~ must be held fixed by the caller and
        `q_fn` is the critic the policy ascends (held fixed)."""
        actions, log_prob = self.edited_actions(params, observations, base_actions, key)
        q = q_fn(observations, actions)
        target_entropy = getattr(self.config, self.edit_entropy_field) * self.chunk_dim
        edit_loss, temperature_loss, entropy, alpha = entropy_regularised_terms(
            log_prob, q, params["edit_temperature"]["log_alpha"], target_entropy
        )
        return edit_loss + temperature_loss, {
            "edit_loss": edit_loss,
            "edit_q": jnp.mean(q),
            "edit_entropy": entropy,
            "edit_temperature": alpha,
        }
