"""`rlpd`: RLPD (Ball et al., 2023; QAM App. C), soft actor-critic on offline ∪ online data.

The paper's online baseline: SAC trained from scratch in the online phase (`qgf train --steps 0
--online-steps N --online-sampling symmetric`, its preset sets the rest), on batches half offline,
half online (`qgf.data.replay.MixedSampler('symmetric')`), with an ensemble of K = 10 LayerNorm
critics (the shared td critic's Q ensemble, `presets/agents/rlpd.json`). Networks, on chunks of
h steps like every method here:

- 'actor': a tanh-Gaussian policy pi(a | s) = tanh(N(mu(s), sigma(s)^2)), log sigma clipped to
  [-5, 2]; log pi includes the tanh correction sum_i log(1 - tanh(u_i)^2);
- 'temperature': log alpha, one scalar;
- 'critic': the Q ensemble with its EMA target (the td critic's networks), trained here on the
  SAC backup of RLPD (REDQ's subset minimum):

      y = R + gamma^h m (min_{k in M} Qbar_k(s', a') - alpha log pi(a' | s')),  a' ~ pi(s'),

  M a random subset of `rlpd_min_qs` heads drawn per update, the entropy term with
  `rlpd_backup_entropy`;
- actor loss  E[alpha log pi(a|s) - mean_k Q_k(s, a)],  a ~ pi(s) reparameterised (the online
  critic, as RLPD; alpha held fixed);
- temperature loss  alpha * E[-log pi(a|s) - H_target] (log pi held fixed), H_target =
  `rlpd_target_entropy` * h*A (RLPD: -dim(A)/2).

Acting: the stochastic policy while collecting (`exploration_actions`, SAC's exploration),
tanh(mu(s)) when evaluated (`policy_actions_from`). Choices: docs/fidelity.md, "RLPD".
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from qgf.agents.base import Agent, Batch, Params
from qgf.config import TrainConfig
from qgf.critics.base import chunk_q_regression, q_metrics
from qgf.critics.networks import q_ensemble
from qgf.errors import QGFError
from qgf.nets import MLP

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class GaussianPolicy(nn.Module):
    """s -> (mu, log sigma) of the pre-tanh Gaussian over a chunk, log sigma clipped."""

    hidden_dims: tuple
    chunk_dim: int
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations):
        out = MLP(self.hidden_dims, 2 * self.chunk_dim, self.layer_norm)(observations)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


def tanh_gaussian_log_prob(pre_tanh, mean, log_std):
    """log pi(tanh(u)) for u ~ N(mean, exp(log_std)^2), summed over the chunk: Gaussian log-density
    minus sum log(1 - tanh(u)^2), the latter as 2 (log 2 - u - softplus(-2u)) (stable)."""
    gaussian = -0.5 * jnp.square((pre_tanh - mean) / jnp.exp(log_std)) - log_std - 0.5 * jnp.log(2 * jnp.pi)
    correction = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.sum(gaussian - correction, axis=-1)


class RLPDAgent(Agent):
    """tanh-Gaussian 'actor', 'temperature' and the td critic's Q ensemble, trained by SAC."""

    name = "rlpd"
    summary = "RLPD: SAC with 50/50 offline/online batches and a LayerNorm critic ensemble (Ball et al. 2023)"
    contract_losses = ("actor_loss",)

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        if config.critic != "td":
            raise QGFError(
                f"rlpd trains its Q ensemble by the SAC backup: use critic=td, not {config.critic}"
            )
        if config.rlpd_min_qs > config.num_critics:
            raise QGFError(
                f"rlpd_min_qs={config.rlpd_min_qs} exceeds num_critics={config.num_critics}; lower it"
            )
        policy = GaussianPolicy(tuple(config.actor_hidden_dims), actions.shape[-1], config.layer_norm)
        return {
            "actor": policy.init(key, observations),
            "temperature": {"log_alpha": jnp.asarray(jnp.log(config.rlpd_init_temperature), jnp.float32)},
        }

    def _policy(self, params: Params, observations):
        policy = GaussianPolicy(tuple(self.config.actor_hidden_dims), self.chunk_dim, self.config.layer_norm)
        return policy.apply(params["actor"], observations)

    def sample_with_log_prob(self, params: Params, observations, key):
        """(a ~ pi(s) reparameterised, log pi(a | s))."""
        mean, log_std = self._policy(params, observations)
        pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
        return jnp.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std)

    @property
    def target_entropy(self) -> float:
        return self.config.rlpd_target_entropy * self.chunk_dim

    def losses(self, params: Params, batch: Batch, key: jax.Array):
        """SAC's critic, actor and temperature losses (module docstring); each network's gradient
        is its own loss's (every cross-network quantity is held fixed)."""
        config = self.config
        next_key, subset_key, actor_key = jax.random.split(key, 3)
        fixed = jax.lax.stop_gradient(params)
        alpha = jnp.exp(fixed["temperature"]["log_alpha"])

        next_actions, next_log_prob = self.sample_with_log_prob(fixed, batch["next_observations"], next_key)
        next_q = q_ensemble(config).apply(
            self.target_params["critic"], batch["next_observations"], next_actions
        )
        subset = jax.random.choice(subset_key, next_q.shape[0], (config.rlpd_min_qs,), replace=False)
        bootstrap = jnp.min(next_q[subset], axis=0)
        if config.rlpd_backup_entropy:
            bootstrap = bootstrap - alpha * next_log_prob
        critic_loss, q_values, targets, row_weights = chunk_q_regression(
            config, params["critic"], batch, bootstrap
        )

        actions, log_prob = self.sample_with_log_prob(params, batch["observations"], actor_key)
        q_policy = jnp.mean(q_ensemble(config).apply(fixed["critic"], batch["observations"], actions), axis=0)
        actor_loss = jnp.mean(alpha * log_prob - q_policy)
        entropy = -jnp.mean(log_prob)
        temperature_loss = jnp.exp(params["temperature"]["log_alpha"]) * jax.lax.stop_gradient(
            entropy - self.target_entropy
        )
        metrics = {
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "temperature_loss": temperature_loss,
            "alpha": alpha,
            "entropy": entropy,
            "td_target_mean": jnp.mean(targets),
            "valid_fraction": jnp.mean(row_weights),
            **q_metrics(q_values, config.critic_aggregation),
        }
        return critic_loss + actor_loss + temperature_loss, metrics

    def policy_losses(self, params, batch, key):  # `losses` covers every network
        raise NotImplementedError

    def policy_actions_from(self, params: Params, observations, key):
        """tanh(mu(s)): the deterministic policy RLPD evaluates."""
        del key
        mean, _ = self._policy(params, observations)
        return jnp.tanh(mean)

    def exploration_actions(self, observations, key):
        """a ~ pi(s): how SAC acts while collecting (the online phase)."""
        return self.sample_with_log_prob(self.params, observations, key)[0]


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {"rlpd": {"class": "RLPDAgent", "order": 99.5, "sections": ["rlpd"]}}
CONFIG_SECTIONS = {
    "rlpd": {
        "title": "RLPD's soft actor-critic (Ball et al. 2023)",
        "settings": {
            "rlpd_min_qs": {
                "default": 2,
                "help": "rlpd: heads in the random subset whose minimum the backup takes (REDQ; RLPD: 2)",
                "min": 1,
            },
            "rlpd_backup_entropy": {"default": True, "help": "rlpd: subtract alpha log pi in the backup"},
            "rlpd_init_temperature": {"default": 1.0, "help": "rlpd: initial alpha", "above": 0.0},
            "rlpd_target_entropy": {
                "default": -0.5,
                "help": "rlpd: target entropy per action coordinate (RLPD: -dim(A)/2)",
            },
        },
    },
}
