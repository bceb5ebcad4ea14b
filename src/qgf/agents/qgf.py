"""`qgf`: the paper's own training — a BC flow policy and a critic, trained separately (QGF §5).

The velocity field is trained only by flow matching on dataset chunks (Eq. 2); the critic (IQL by
default, Eqs. 11-12) learns in the shared critic component. All policy improvement happens at test
time: `sample_actions` with any `qgf.guidance` sampler steers the frozen flow with the critic's
gradient. With `critic=td` the critic bootstraps on the BC flow's own (unguided) samples, which is
how QFQL trains (QFQL Alg. 1a): `qgf train critic=td` + `--sampler ood` is QFQL as its authors ran it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from qgf.agents.base import Agent, Batch, Params
from qgf.config import TrainConfig
from qgf.flow import VelocityField, chunk_step_weights, flow_matching_loss, sample_flow_times


def build_velocity_field(config: TrainConfig, chunk_dim: int) -> VelocityField:
    """The actor network v(s, a_t, t) of `config` (every flow-based agent uses this one)."""
    return VelocityField(
        hidden_dims=config.actor_hidden_dims,
        chunk_dim=chunk_dim,
        time_embedding=config.time_embedding,
        time_embedding_dim=config.time_embedding_dim,
        layer_norm=config.layer_norm,
    )


def init_velocity_field(config: TrainConfig, key, observations, actions) -> dict:
    network = build_velocity_field(config, actions.shape[-1])
    return network.init(key, observations, actions, jnp.zeros((actions.shape[0],), jnp.float32))


def bc_flow_loss(agent: Agent, params, batch: Batch, key: jax.Array, network: str = "actor"):
    """Flow matching (Eq. 2) of `params[network]` on the batch's chunks, with the flow times and
    noise drawn from `key`; returns (loss, noisy actions a_t, times t) so that callers can reuse
    the same interpolants."""
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
    from qgf.guidance import SamplerSpec, sample, sample_with_info

    spec = SamplerSpec("none", steps=config.flow_steps)
    if noise is None:
        return sample(velocity_fn, None, observations, key, 0.0, spec, chunk_dim)
    # With the noise given, the key feeds nothing (the 'none' estimator draws no noise of its own).
    key = jax.random.key(0) if key is None else key
    actions, _ = sample_with_info(velocity_fn, None, observations, key, 0.0, spec, chunk_dim, noise=noise)
    return actions


class QGFAgent(Agent):
    """BC flow ('actor') + shared critic ('critic', 'value'); guidance at test time."""

    name = "qgf"
    summary = "BC flow + critic trained separately; Q-gradient guidance at test time (QGF paper)"
    contract_losses = ("bc_loss",)

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        return {"actor": init_velocity_field(config, key, observations, actions)}

    @property
    def behavior_velocity_fn(self) -> Callable:
        """v(obs (B,D), a_t (B,d), t (B,)) -> (B,d) with the current actor parameters."""
        return functools.partial(
            build_velocity_field(self.config, self.chunk_dim).apply, self.params["actor"]
        )

    # The QGF run's only policy network is the BC flow; the name predates the agent family.
    velocity_fn = behavior_velocity_fn

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        bc_loss, _, _ = bc_flow_loss(self, params, batch, key)
        return bc_loss, {"bc_loss": bc_loss}

    def policy_actions_from(self, params: Params, observations, key):
        velocity = functools.partial(build_velocity_field(self.config, self.chunk_dim).apply, params["actor"])
        return flow_policy_actions(velocity, observations, key, self.config, self.chunk_dim)
