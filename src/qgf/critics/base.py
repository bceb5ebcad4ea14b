"""The critic protocol every agent trains against, and the single-task Q regression iql and td share.

A critic is a component built from the run's config (`qgf.critics.critic_for(config)`). The agent
(`qgf.agents.base.Agent`) asks it, and nothing else, about the critic:

- `networks`: the parameters it trains, by name ('critic' is always the Q the policies and the
  guidance read); `init_params(key, obs, actions)` initialises them;
- `target_networks`: those with an EMA target copy (`target_params`);
- `losses(params, target_params, batch, next_actions)`: the sum of its networks' losses and
  metrics; every quantity that crosses from one network into another's loss is held fixed, so the
  gradient of the sum with respect to each network is that network's own loss gradient;
- `needs_next_actions`: whether its backup reads the policy's actions at s_{t+h} (the agent then
  samples them, held fixed, and passes them as `next_actions`);
- `q(critic_params, obs, actions)`: the policy-facing Q, aggregated over its heads;
  `value(params, obs)`: V, for the critics that train one (`has_value`);
- `retired_networks`: networks this critic no longer trains that checkpoints written by earlier
  versions may still hold (dropped on load).

Imports the shared networks and losses of this package and `qgf.errors`, nothing else of qgf.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from qgf.critics.losses import chunk_td_target, critic_loss
from qgf.critics.networks import QEnsemble, aggregate_q, q_ensemble, value_network
from qgf.errors import QGFError

Params = dict[str, Any]
Batch = dict[str, jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class Critic:
    """A critic of `config` (a TrainConfig's learner config). Subclasses set the class variables
    and implement `init_params` and `losses`."""

    config: Any

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    networks: ClassVar[tuple[str, ...]] = ()
    target_networks: ClassVar[tuple[str, ...]] = ()
    needs_next_actions: ClassVar[bool] = False
    retired_networks: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ what a critic provides

    def init_params(self, key: jax.Array, observations: jnp.ndarray, actions: jnp.ndarray) -> Params:
        """Initial parameters of `networks` for example inputs (1, D) and (1, h*A)."""
        raise NotImplementedError

    def losses(
        self, params: Params, target_params: Params, batch: Batch, next_actions: jnp.ndarray | None = None
    ) -> tuple[jnp.ndarray, dict]:
        """Sum of the critic's losses at `params` (the agent's, by network name) and metrics.
        `target_params` are the EMA copies of `target_networks`; `next_actions` (B, h*A) are the
        policy's samples at `batch['next_observations']` when `needs_next_actions`, else None."""
        raise NotImplementedError

    # ------------------------------------------------------------------ what the agent reads

    @property
    def q_network(self) -> QEnsemble:
        """The policy-facing Q ensemble ('critic'): what policy losses, guidance and best-of-N read."""
        return q_ensemble(self.config)

    def q_heads(self, critic_params: Params, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        """All heads (K, B) of the policy-facing Q at `critic_params` (online or target)."""
        return self.q_network.apply(critic_params, observations, actions)

    def q(self, critic_params: Params, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        """The policy-facing Q (B,), aggregated over its heads by `critic_aggregation`."""
        return aggregate_q(self.q_heads(critic_params, observations, actions), self.config.critic_aggregation)

    @property
    def has_value(self) -> bool:
        return "value" in self.networks

    def value(self, params: Params, observations: jnp.ndarray) -> jnp.ndarray:
        """V(obs) (B,) from the agent's `params`; a one-line error for a critic without V."""
        if not self.has_value:
            raise QGFError(
                f"a critic={self.name} run has no value network V (its backup does not read one, so none "
                "is trained); what needs V (the cfgrl add-on's advantage Q - V) needs a critic that "
                "trains it: critic=iql (or dqc, goal-conditioned)"
            )
        return value_network(self.config).apply(params["value"], observations)


def chunk_q_regression(config, critic_params: Params, batch: Batch, bootstrap: jnp.ndarray) -> tuple:
    """The single-task Q loss (QGF Eq. 11 and QAM Eq. 26, chunked): each head of Q(s_t, a_{t:t+h})
    regresses onto y = R + gamma^h m b(s_{t+h}) for a bootstrap value `bootstrap` (B,), held fixed.
    Rows whose chunk crosses a trajectory end (valid[:, -1] == 0) weigh 0.

    Returns (loss, q_values (K, B), targets (B,), row_weights (B,))."""
    row_weights = batch["valid"][:, -1].astype(jnp.float32)
    targets = chunk_td_target(
        batch["rewards"], batch["masks"], jax.lax.stop_gradient(bootstrap), config.discount, config.horizon
    )
    q_values = q_ensemble(config).apply(critic_params, batch["observations"], batch["actions"])
    return critic_loss(q_values, targets, row_weights), q_values, targets, row_weights


def q_metrics(q_values: jnp.ndarray, how: str) -> dict:
    """q_mean / q_min / q_max of the aggregated Q and the mean spread of its heads (K, B)."""
    q_aggregated = aggregate_q(q_values, how)
    return {
        "q_mean": jnp.mean(q_aggregated),
        "q_min": jnp.min(q_aggregated),
        "q_max": jnp.max(q_aggregated),
        "q_head_gap": jnp.mean(jnp.max(q_values, axis=0) - jnp.min(q_values, axis=0)),
    }
