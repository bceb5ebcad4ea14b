"""`fql`: Flow Q-Learning (Park et al., 2025), a training-time baseline of the QGF paper (§6).

Two policy networks (QGF App. I Eq. 23; QAM App. C Eqs. 41-43):

- 'actor', a behaviour-cloning velocity field v_theta(s, a_t, t) trained by flow matching only
  (L_FM, QGF Eq. 2 / QAM Eq. 41's first term);
- 'onestep', a noise-conditioned one-step policy mu_omega(s, z) -> chunk, trained by

      L_onestep(omega) = alpha * mean_coords ||mu_omega(s, z) - ODE(v_theta(s, ., .), z)||^2
                         - Q(s, clip(mu_omega(s, z)))                                    (Eq. 23 / 42)

  where ODE(v, z) is the unguided Euler solution of the BC flow from the SAME noise z, clipped to
  [-1, 1] (QAM Eq. 39), and held fixed (it moves neither v_theta nor, through it, anything else).
  Q is the guidance critic aggregated over its heads (`Agent.target_q`), also held fixed, or with
  `q_term_critic=online-mean` the online critic's mean over heads (`q_term_values`).
  With `config.normalize_q_loss` the -Q term is divided by stop_gradient(mean_batch |Q|).

The agent acts with clip(mu_omega(s, z)), z ~ N(0, I) (and with `critic=td` the critic bootstraps
on those actions, QAM Eq. 43). The BC flow is `behavior_velocity_fn`, so every test-time sampler
(QGF, BFN, GradStep, ...) also applies to an FQL run. Choices: docs/fidelity.md, "FQL and EDP".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from qgf.agents.base import Agent, Batch, Params
from qgf.config import TrainConfig
from qgf.flow import bc_flow_loss, build_velocity_field, flow_policy_actions, init_velocity_field
from qgf.nets import MLP, mlp_style, policy_layer_norm

# Guards the Q normaliser against a batch whose Q values are all exactly 0 (a fresh critic can
# output tiny values, never exactly 0 in practice); far below any real |Q|.
Q_NORMALIZER_FLOOR = 1e-6


class OneStepPolicy(nn.Module):
    """mu(s, z) -> (B, chunk_dim): an MLP on [s, z], the same widths as the velocity field."""

    hidden_dims: Sequence[int]
    chunk_dim: int
    layer_norm: bool = True
    style: str = "qgf"

    @nn.compact
    def __call__(self, observations: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
        inputs = jnp.concatenate([observations, noise], axis=-1)
        return MLP(self.hidden_dims, self.chunk_dim, self.layer_norm, self.style)(inputs)


def build_onestep_policy(config: TrainConfig, chunk_dim: int) -> OneStepPolicy:
    return OneStepPolicy(
        hidden_dims=config.actor_hidden_dims,
        chunk_dim=chunk_dim,
        layer_norm=policy_layer_norm(config),
        style=mlp_style(config, "policy"),
    )


def q_term_values(agent: Agent, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
    """The Q (B,) that FQL's and EDP's -Q term ascends, held fixed, by `config.q_term_critic`:
    'guidance' = `Agent.target_q` (the guidance critic, EMA target by default, aggregated by
    `critic_aggregation`); 'online-mean' = the online critic's mean over heads (the authors' FQL)."""
    if agent.config.q_term_critic == "online-mean":
        params = jax.lax.stop_gradient(agent.params["critic"])
        return jnp.mean(agent.critic.q_heads(params, observations, actions), axis=0)
    return agent.target_q(observations, actions)


def q_ascent_loss(q: jnp.ndarray, normalize: bool) -> jnp.ndarray:
    """-mean_batch Q; with `normalize`, divided by stop_gradient(mean_batch |Q|) (FQL's
    normalisation: the term's gradient no longer scales with the reward scale and discount)."""
    loss = -jnp.mean(q)
    if normalize:
        scale = jnp.maximum(jnp.mean(jnp.abs(q)), Q_NORMALIZER_FLOOR)
        loss = loss / jax.lax.stop_gradient(scale)
    return loss


class FQLAgent(Agent):
    """BC flow ('actor') + one-step policy ('onestep') + shared critic; acts with the one-step policy."""

    name = "fql"
    summary = "Flow Q-learning: one-step policy distilled from a BC flow, ascending Q (QGF App. I Eq. 23)"
    clipped_networks = ("onestep",)
    contract_losses = ("bc_loss", "distill_loss")

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        actor_key, onestep_key = jax.random.split(key)
        onestep = build_onestep_policy(config, actions.shape[-1])
        return {
            "actor": init_velocity_field(config, actor_key, observations, actions),
            "onestep": onestep.init(onestep_key, observations, jnp.zeros_like(actions)),
        }

    def velocity_from(self, params: Params) -> Callable:
        """v(obs, a_t, t) of the BC flow at `params`."""
        return functools.partial(build_velocity_field(self.config, self.chunk_dim).apply, params["actor"])

    def onestep_from(self, params: Params) -> Callable:
        """mu(obs, z), unclipped, at `params`."""
        return functools.partial(build_onestep_policy(self.config, self.chunk_dim).apply, params["onestep"])

    @property
    def behavior_velocity_fn(self) -> Callable:
        return self.velocity_from(self.params)

    def policy_noise(self, observations: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
        """z ~ N(0, I) of shape (B, h*A) drawn from `key` (acting and the one-step loss)."""
        return jax.random.normal(key, (observations.shape[0], self.chunk_dim), observations.dtype)

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        """L_FM(actor) + alpha * distill(onestep) - Q(onestep) (Eqs. 41, 42); `key` splits into
        (flow-matching key, one-step noise key)."""
        config = self.config
        bc_key, noise_key = jax.random.split(key)
        bc_loss, _, _ = bc_flow_loss(self, params, batch, bc_key)

        observations = batch["observations"]
        noise = self.policy_noise(observations, noise_key)
        # The distillation target moves neither the BC flow nor anything else.
        frozen_velocity = self.velocity_from(jax.lax.stop_gradient(params))
        target = jax.lax.stop_gradient(
            flow_policy_actions(frozen_velocity, observations, None, config, self.chunk_dim, noise=noise)
        )
        onestep_actions = self.onestep_from(params)(observations, noise)
        distill_loss = jnp.mean(jnp.square(onestep_actions - target))

        # The critic only knows actions in [-1, 1]; the distillation term (unclipped) pulls
        # out-of-range outputs back.
        q = q_term_values(self, observations, jnp.clip(onestep_actions, -1.0, 1.0))
        q_loss = q_ascent_loss(q, config.normalize_q_loss)

        total = bc_loss + config.fql_alpha * distill_loss + q_loss
        return total, {
            "bc_loss": bc_loss,
            "distill_loss": distill_loss,
            "q_loss": q_loss,
            "q_policy_mean": jnp.mean(q),
        }

    def policy_actions_from(self, params: Params, observations, key):
        """clip(mu(s, z), -1, 1) with z = `policy_noise(observations, key)`."""
        noise = self.policy_noise(observations, key)
        return jnp.clip(self.onestep_from(params)(observations, noise), -1.0, 1.0)


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {"fql": {"class": "FQLAgent", "order": 20, "sections": ["fql", "q-term", "policy-optimiser"]}}
CONFIG_SECTIONS = {
    "fql": {
        "title": "FQL's one-step policy (QGF App. I Eq. 23)",
        "settings": {
            "fql_alpha": {
                "default": 300.0,
                "help": "fql: weight of the distillation term (Eq. 23's alpha)",
                "min": 0.0,
            },
        },
    },
    "q-term": {
        "title": "the -Q term of FQL and EDP (q_ascent_loss)",
        "settings": {
            "normalize_q_loss": {
                "default": True,
                "help": "fql / edp: divide the -Q term by the batch's mean |Q| (held fixed), so alpha is "
                "scale-free",
            },
            "q_term_critic": {
                "default": "guidance",
                "choices": ["guidance", "online-mean"],
                "help": "fql / edp: the critic the -Q term ascends: 'guidance' (the guidance critic, "
                "min over heads with critic_aggregation=min) or 'online-mean' (online critic, mean over "
                "heads: the authors' FQL)",
            },
        },
    },
}
