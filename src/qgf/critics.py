"""The critics every agent shares: one component, two ways of bootstrapping (`config.critic`).

`iql` — chunked IQL (QGF Appendix F, Eqs. 11 and 12), the paper's Fig. 5 setting:

    Q_k(s_t, a_{t:t+h})  ->  y = sum_{i<h} gamma^i r_{t+i} + gamma^h * m * V(s_{t+h})     (Eq. 11)
    V(s_t)               ->  expectile_tau of  Qbar(s_t, a_{t:t+h})                         (Eq. 12)

`td` — TD backups on the agent's own policy samples a' ~ pi(s_{t+h}) with a pessimistic ensemble
target (QAM paper Eq. 26, chunked like everything else):

    Q_k(s_t, a_{t:t+h})  ->  y = R + gamma^h * m * (mean_k Qbar_k(s', a') - rho * std_k Qbar_k(s', a'))

V is trained by the same expectile regression in both modes (the td backup does not use it; the
add-ons that need an advantage do). Qbar is the EMA target ensemble, aggregated over its K heads
by min (or mean). Rows whose chunk crosses a trajectory end (valid[:, -1] == 0) carry weight 0.

`dqc` — goal-conditioned Decoupled Q-Chunking (QGF App. F, Eqs. 13-16; losses in
`qgf.critics_dqc`), on the critic view of a goal-conditioned batch (`qgf.data.goals`): a long
critic Q_c ('long_critic', chunks of h_c = `dqc_horizon` steps) backed up with the online V
(held fixed), V the expectile of the EMA target Q_c, and Q_a ('critic', the policy's h_a =
`horizon` steps) distilled from the online Q_c (held fixed) with expectile kappa_d. 'critic' is
Q_a, so everything that reads the critic (policy losses, guidance, best-of-N) uses only Q_a.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from qgf.nets import MLP, Ensemble


class QEnsemble(nn.Module):
    """K independent Q heads on [s, a_chunk]: output (K, B)."""

    hidden_dims: Sequence[int]
    num_critics: int = 2
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        inputs = jnp.concatenate([observations, actions], axis=-1)
        return Ensemble(self.hidden_dims, 1, self.num_critics, self.layer_norm)(inputs)[..., 0]


class ValueNetwork(nn.Module):
    """V(s): output (B,)."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> jnp.ndarray:
        return MLP(self.hidden_dims, 1, self.layer_norm)(observations)[..., 0]


def aggregate_q(q_values: jnp.ndarray, how: str) -> jnp.ndarray:
    """Combine the heads (K, B) -> (B,): 'min' (pessimistic, the paper's choice) or 'mean'."""
    if how == "min":
        return jnp.min(q_values, axis=0)
    if how == "mean":
        return jnp.mean(q_values, axis=0)
    raise ValueError(f"unknown critic aggregation {how!r}")


def chunk_td_target(
    rewards: jnp.ndarray, masks: jnp.ndarray, next_values: jnp.ndarray, discount: float, horizon: int
) -> jnp.ndarray:
    """y = R + gamma^h * m * V(s_{t+h}); `rewards` already holds the discounted chunk sum R."""
    return rewards + (discount**horizon) * masks * next_values


def weighted_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """Mean over rows with weight; rows of weight 0 neither count nor dilute."""
    return jnp.sum(weights * values) / jnp.maximum(jnp.sum(weights), 1.0)


def critic_loss(q_values: jnp.ndarray, targets: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """Eq. 11 for each head (K, B) against shared targets (B,), averaged over heads and rows."""
    squared_error = jnp.square(q_values - jax.lax.stop_gradient(targets)[None, :])
    return jnp.mean(jax.vmap(weighted_mean, in_axes=(0, None))(squared_error, weights))


def expectile_loss(differences: jnp.ndarray, expectile: float) -> jnp.ndarray:
    """L_2^tau(u) = |tau - 1(u < 0)| u^2, elementwise."""
    weight = jnp.where(differences < 0, 1.0 - expectile, expectile)
    return weight * jnp.square(differences)


def value_loss(
    target_q: jnp.ndarray, values: jnp.ndarray, expectile: float, weights: jnp.ndarray
) -> jnp.ndarray:
    """Eq. 12: expectile regression of V (B,) onto the target critic's aggregated Qbar (B,)."""
    differences = jax.lax.stop_gradient(target_q) - values
    return weighted_mean(expectile_loss(differences, expectile), weights)


def pessimistic_target(q_values: jnp.ndarray, rho: float) -> jnp.ndarray:
    """mean_k Q_k - rho * std_k Q_k over the heads (K, B) -> (B,): QAM Eq. 26's backup value.
    The std is the population std (ddof = 0) of the K heads."""
    return jnp.mean(q_values, axis=0) - rho * jnp.std(q_values, axis=0)


def build_critic_networks(config) -> tuple[QEnsemble, ValueNetwork]:
    """(Q ensemble, value network) of `config` (TrainConfig). With critic=dqc the Q ensemble is Q_a,
    the critic every policy and sampler uses."""
    return (
        QEnsemble(config.critic_hidden_dims, config.num_critics, config.layer_norm),
        ValueNetwork(config.critic_hidden_dims, config.layer_norm),
    )


def build_long_critic(config) -> QEnsemble:
    """critic=dqc: the long critic Q_c on chunks of `dqc_horizon` steps (same widths and K as Q_a)."""
    return QEnsemble(config.critic_hidden_dims, config.num_critics, config.layer_norm)


def target_networks(config) -> tuple[str, ...]:
    """The critic networks that have an EMA target copy: 'critic', and with dqc 'long_critic'."""
    return ("critic", "long_critic") if config.critic == "dqc" else ("critic",)


def init_critic_params(config, key: jax.Array, observations: jnp.ndarray, actions: jnp.ndarray) -> dict:
    """{'critic': ..., 'value': ...} initial parameters for example inputs (1, D) and (1, d); with
    critic=dqc also 'long_critic' (Q_c), on chunks of `dqc_horizon` steps."""
    critic, value = build_critic_networks(config)
    if config.critic != "dqc":
        critic_key, value_key = jax.random.split(key)
        return {
            "critic": critic.init(critic_key, observations, actions),
            "value": value.init(value_key, observations),
        }
    critic_key, value_key, long_key = jax.random.split(key, 3)
    action_dim = actions.shape[-1] // config.horizon
    long_actions = jnp.zeros((actions.shape[0], config.dqc_horizon * action_dim), actions.dtype)
    return {
        "critic": critic.init(critic_key, observations, actions),
        "value": value.init(value_key, observations),
        "long_critic": build_long_critic(config).init(long_key, observations, long_actions),
    }


def critic_losses(
    config,
    params: dict,
    target_params: dict,
    batch: dict,
    next_actions: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, dict]:
    """Q loss + V loss of `config.critic` at `params` ({'critic', 'value', ...}), and metrics.

    `target_params` are the agent's EMA copies by network name (`target_networks`). `next_actions`
    (B, d) are the agent's policy samples at `batch['next_observations']`, required by (and only
    used by) the td critic; they are held fixed (stop_gradient). The dqc critic reads the critic
    view `batch['critic']` of a goal-conditioned batch. Every quantity that crosses from one
    network into another's loss is a stop_gradient, so the gradient of the sum is the separate
    gradients.
    """
    if config.critic == "dqc":
        from qgf.data.goals import CRITIC_VIEW

        return dqc_critic_losses(config, params, target_params, batch[CRITIC_VIEW])
    target_critic_params = target_params["critic"]
    critic, value = build_critic_networks(config)
    observations, actions = batch["observations"], batch["actions"]
    row_weights = batch["valid"][:, -1].astype(jnp.float32)

    if config.critic == "iql":
        bootstrap = value.apply(params["value"], batch["next_observations"])
    elif config.critic == "td":
        if next_actions is None:
            raise ValueError("the td critic needs the policy's next actions")
        next_q = critic.apply(
            target_critic_params, batch["next_observations"], jax.lax.stop_gradient(next_actions)
        )
        bootstrap = pessimistic_target(next_q, config.critic_pessimism)
    else:
        raise ValueError(f"unknown critic {config.critic!r}")
    targets = chunk_td_target(
        batch["rewards"], batch["masks"], jax.lax.stop_gradient(bootstrap), config.discount, config.horizon
    )
    q_values = critic.apply(params["critic"], observations, actions)
    q_loss = critic_loss(q_values, targets, row_weights)

    target_q = jax.lax.stop_gradient(
        aggregate_q(critic.apply(target_critic_params, observations, actions), config.critic_aggregation)
    )
    values = value.apply(params["value"], observations)
    v_loss = value_loss(target_q, values, config.expectile, row_weights)

    q_aggregated = aggregate_q(q_values, config.critic_aggregation)
    metrics = {
        "critic_loss": q_loss,
        "value_loss": v_loss,
        "q_mean": jnp.mean(q_aggregated),
        "q_min": jnp.min(q_aggregated),
        "q_max": jnp.max(q_aggregated),
        "q_head_gap": jnp.mean(jnp.max(q_values, axis=0) - jnp.min(q_values, axis=0)),
        "v_mean": jnp.mean(values),
        "v_min": jnp.min(values),
        "v_max": jnp.max(values),
        "td_target_mean": jnp.mean(targets),
        "valid_fraction": jnp.mean(row_weights),
    }
    return q_loss + v_loss, metrics


def dqc_critic_losses(config, params: dict, target_params: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    """critic=dqc: Eq. 13 (Q_c) + Eq. 14 (V) + Eq. 15 (Q_a) at `params`, and metrics, on the critic
    view of a goal-conditioned batch (observations already hold [s, g]).

    - Eq. 13's V(s_{t+h_c}, g) is the online V, held fixed (as the single-task iql critic does);
    - Eq. 14 regresses the online V onto the EMA target Q_c, aggregated over heads;
    - Eq. 15's teacher is the online Q_c (as printed: no bar), aggregated over heads, held fixed.

    All three weight rows by `goal_chunk_weights` (the chunk stays in its trajectory or reaches its
    goal). `critic_loss` reports Eq. 13 and `distill_loss` Eq. 15; q_* metrics describe Q_a.
    """
    from qgf.critics_dqc import (
        distillation_loss,
        dqc_value_loss,
        goal_chunk_weights,
        long_critic_loss,
        long_critic_target,
        partial_chunk,
    )

    critic, value = build_critic_networks(config)
    long_critic = build_long_critic(config)
    observations, long_actions = batch["observations"], batch["actions"]
    row_weights = goal_chunk_weights(batch["valid"], batch["masks"])
    how = config.critic_aggregation

    next_values = value.apply(params["value"], batch["next_observations"])
    q_c_values = long_critic.apply(params["long_critic"], observations, long_actions)
    c_args = (batch["rewards"], batch["masks"], next_values, config.discount, config.dqc_horizon)
    c_loss = long_critic_loss(q_c_values, *c_args, row_weights)

    target_q_c = aggregate_q(long_critic.apply(target_params["long_critic"], observations, long_actions), how)
    values = value.apply(params["value"], observations)
    v_loss = dqc_value_loss(target_q_c, values, config.expectile, row_weights)

    q_c = aggregate_q(q_c_values, how)
    short_actions = partial_chunk(long_actions, config.dqc_horizon, config.horizon)
    q_a_values = critic.apply(params["critic"], observations, short_actions)
    a_loss = distillation_loss(q_c, q_a_values, config.distill_expectile, row_weights)

    q_a = aggregate_q(q_a_values, how)
    metrics = {
        "critic_loss": c_loss,
        "value_loss": v_loss,
        "distill_loss": a_loss,
        "q_mean": jnp.mean(q_a),
        "q_min": jnp.min(q_a),
        "q_max": jnp.max(q_a),
        "q_head_gap": jnp.mean(jnp.max(q_a_values, axis=0) - jnp.min(q_a_values, axis=0)),
        "q_chunk_mean": jnp.mean(q_c),
        "v_mean": jnp.mean(values),
        "v_min": jnp.min(values),
        "v_max": jnp.max(values),
        "td_target_mean": jnp.mean(long_critic_target(*c_args)),
        "goal_reached_fraction": jnp.mean(1.0 - batch["masks"]),
        "valid_fraction": jnp.mean(row_weights),
    }
    return c_loss + v_loss + a_loss, metrics


def ema_update(target_params, online_params, rate: float):
    """target <- (1 - rate) * target + rate * online, leaf by leaf."""
    return jax.tree_util.tree_map(lambda t, o: (1.0 - rate) * t + rate * o, target_params, online_params)
