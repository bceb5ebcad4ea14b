"""`critic=dqc`: the Decoupled Q-Chunking critic of the goal-conditioned experiments (QGF paper
App. F, Eqs. 13-16), all of it: the equations as pure loss functions of network outputs, and the
component that applies them to the critic view of a goal-conditioned batch (`qgf.data.goals`).

Two critics with different chunk lengths h_a <= h_c share one goal-conditioned value V(s, g):

    Q_c(s_t, g, a_{t:t+h_c})  ->  sum_{i<h_c} gamma^i r_{t+i} + gamma^{h_c} m V(s_{t+h_c}, g)       (Eq. 13)
    V(s_t, g)                 ->  expectile_tau of Qbar_c(s_t, g, a_{t:t+h_c})                     (Eq. 14)
    Q_a(s_t, g, a_{t:t+h_a})  ->  expectile_kappa_d of Q_c(s_t, g, a_{t:t+h_c})                    (Eq. 15)
    Q_a(s_t, g, a_{t:t+h_a})  ~=  max_{a_{t+h_a:t+h_c}} Q_c(s_t, g, [a_{t:t+h_a}, a_{t+h_a:t+h_c}])  (Eq. 16)

Networks: 'long_critic' = Q_c (chunks of h_c = `dqc_horizon` steps), 'value' = V, 'critic' = Q_a
(the policy's h_a = `horizon` steps); Q_c and Q_a have EMA targets. Only Q_a is used by policies
and guidance: it is the run's 'critic', so everything that reads the critic uses Q_a only.

The batch is `qgf.data.goals.sample_goal_chunks` with horizon h_c: its `rewards` are the discounted
chunk sums of the sparse goal-reaching rewards and m (`masks`) is 0 when the chunk reaches its goal.
Eq. 13 as printed has no m; with rewards that end at the goal, bootstrapping past it would add a
value that is not part of the return, so m stays (as in Eq. 11's single-task critic and OGBench's
goal-conditioned agents). The partial chunk a_{t:t+h_a} is the first h_a steps of the dataset
chunk (`partial_chunk`).

Row weights: a chunk counts when all its h_c steps are transitions of its trajectory, or when it
reaches its goal before the end (`goal_chunk_weights`). Every quantity that one network regresses
onto is wrapped in `stop_gradient`, whatever network produced it; which network that is (online or
EMA target) is recorded in docs/fidelity.md.

Imports the shared networks and losses of this package and, when the losses run, the critic-view
key of `qgf.data.goals`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from qgf.critics.base import Critic
from qgf.critics.losses import chunk_td_target, critic_loss, expectile_loss, value_loss, weighted_mean
from qgf.critics.networks import aggregate_q, q_ensemble, value_network
from qgf.errors import QGFError


def goal_chunk_weights(valid: jnp.ndarray, masks: jnp.ndarray) -> jnp.ndarray:
    """Row weights (B,) of a goal-conditioned chunk batch: 1 if the chunk stays inside its trajectory
    (`valid` (B, h) all ones) or reaches its goal (`masks` 0, which only a valid step can cause: the
    return then ends at the goal and is complete), else 0."""
    return jnp.maximum(valid[:, -1], 1.0 - masks).astype(jnp.float32)


def partial_chunk(actions: jnp.ndarray, critic_horizon: int, policy_horizon: int) -> jnp.ndarray:
    """a_{t:t+h_a} (B, h_a·A) from flattened chunks a_{t:t+h_c} (B, h_c·A) (step-major, as gathered)."""
    if not 1 <= policy_horizon <= critic_horizon:
        raise ValueError(f"need 1 <= h_a <= h_c, got h_a={policy_horizon}, h_c={critic_horizon}")
    if actions.shape[-1] % critic_horizon:
        raise ValueError(f"chunk width {actions.shape[-1]} is not a multiple of h_c={critic_horizon}")
    action_dim = actions.shape[-1] // critic_horizon
    return actions[..., : policy_horizon * action_dim]


def long_critic_target(
    rewards: jnp.ndarray,
    masks: jnp.ndarray,
    next_values: jnp.ndarray,
    discount: float,
    critic_horizon: int,
) -> jnp.ndarray:
    """Eq. 13's target y = sum_{i<h_c} gamma^i r_{t+i} + gamma^{h_c} m V(s_{t+h_c}, g), all (B,).

    `rewards` already hold the discounted chunk sum; `next_values` = V(s_{t+h_c}, g) (stop-gradient).
    """
    return chunk_td_target(rewards, masks, jax.lax.stop_gradient(next_values), discount, critic_horizon)


def long_critic_loss(
    q_c_values: jnp.ndarray,
    rewards: jnp.ndarray,
    masks: jnp.ndarray,
    next_values: jnp.ndarray,
    discount: float,
    critic_horizon: int,
    weights: jnp.ndarray,
) -> jnp.ndarray:
    """Eq. 13: mean over heads k and weighted rows of (Q_c^k(s_t, g, a_{t:t+h_c}) - y)^2.

    `q_c_values` (K, B) are the online Q_c heads; y is `long_critic_target`.
    """
    targets = long_critic_target(rewards, masks, next_values, discount, critic_horizon)
    return critic_loss(q_c_values, targets, weights)


def dqc_value_loss(
    target_q_c: jnp.ndarray, values: jnp.ndarray, expectile: float, weights: jnp.ndarray
) -> jnp.ndarray:
    """Eq. 14: weighted mean of L_2^tau(Qbar_c(s_t, g, a_{t:t+h_c}) - V(s_t, g)) over rows (B,).

    `target_q_c` (B,) is the ensemble-aggregated Qbar_c (stop-gradient), `values` = V(s_t, g) (B,)
    from the parameters being trained (the printed Eq. 14 puts a bar on this V and drops the minus
    sign; see docs/fidelity.md). L_2^tau(u) = |tau - 1(u < 0)| u^2.
    """
    return value_loss(target_q_c, values, expectile, weights)


def distillation_loss(
    q_c: jnp.ndarray, q_a_values: jnp.ndarray, distill_expectile: float, weights: jnp.ndarray
) -> jnp.ndarray:
    """Eq. 15: L_2^{kappa_d}(Q_c(s_t, g, a_{t:t+h_c}) - Q_a(s_t, g, a_{t:t+h_a})), weighted mean over
    rows and mean over the Q_a heads.

    `q_c` (B,) is the aggregated Q_c of the full dataset chunk (stop-gradient: only Q_a learns here);
    `q_a_values` (K_a, B) or (B,) are the Q_a heads on its first h_a steps. kappa_d > 0.5 makes Q_a
    an optimistic (upper-expectile) summary of the chunk's completions (Eq. 16); kappa_d = 0.5
    makes it their mean.
    """
    q_a_values = jnp.reshape(q_a_values, (-1, q_c.shape[0]))
    differences = jax.lax.stop_gradient(q_c)[None, :] - q_a_values
    losses = expectile_loss(differences, distill_expectile)
    return jnp.mean(jax.vmap(weighted_mean, in_axes=(0, None))(losses, weights))


def completion_expectile(
    q_c_completions: jnp.ndarray, distill_expectile: float, axis: int = 0
) -> jnp.ndarray:
    """What Eq. 15 makes of Q_a for one partial chunk: its exact minimiser over Q_a, the
    kappa_d-expectile of the Q_c values of the chunk's completions (equally likely) along `axis`.

    kappa_d = 1 gives Eq. 16's right-hand side, the best completion's value max Q_c; kappa_d = 0.5
    their mean; in between it rises monotonically from one to the other. Closed form: with the
    completions' values sorted, v_1 <= ... <= v_M, and k of them below the expectile e,
    e = ((1 - kappa) sum_{i<=k} v_i + kappa sum_{i>k} v_i) / ((1 - kappa) k + kappa (M - k)),
    where k is the number of v_j at which the loss's derivative is negative.
    """
    values = jnp.sort(jnp.moveaxis(q_c_completions, axis, 0), axis=0)
    count = values.shape[0]
    kappa = jnp.asarray(distill_expectile, values.dtype)
    ranks = jnp.arange(count, dtype=values.dtype).reshape((count,) + (1,) * (values.ndim - 1))
    below = jnp.cumsum(values, axis=0) - values  # sum of the values ranked before v_j
    total = jnp.sum(values, axis=0)
    # Derivative (up to a factor 2) of the expectile loss at e = v_j; ties contribute 0 either way.
    slope = (1 - kappa) * (ranks * values - below) + kappa * (
        (count - 1 - ranks) * values - (total - below - values)
    )
    k = jnp.sum(slope < 0, axis=0)
    sum_low = jnp.sum(jnp.where(ranks < k, values, 0.0), axis=0)
    return ((1 - kappa) * sum_low + kappa * (total - sum_low)) / ((1 - kappa) * k + kappa * (count - k))


class DQCCritic(Critic):
    """Q_a ('critic'), V ('value') and Q_c ('long_critic'); Q_a and Q_c have EMA targets."""

    name = "dqc"
    summary = "goal-conditioned Decoupled Q-Chunking: Q_c, V and the policy-facing Q_a (QGF App. F)"
    networks = ("critic", "value", "long_critic")
    target_networks = ("critic", "long_critic")

    @property
    def long_critic_network(self):
        """Q_c on chunks of `dqc_horizon` steps (same widths and K as Q_a)."""
        return q_ensemble(self.config)

    def init_params(self, key, observations, actions):
        """Q_a and V on the example inputs; Q_c on chunks of `dqc_horizon` steps."""
        config = self.config
        critic_key, value_key, long_key = jax.random.split(key, 3)
        action_dim = actions.shape[-1] // config.horizon
        long_actions = jnp.zeros((actions.shape[0], config.dqc_horizon * action_dim), actions.dtype)
        return {
            "critic": q_ensemble(config).init(critic_key, observations, actions),
            "value": value_network(config).init(value_key, observations),
            "long_critic": self.long_critic_network.init(long_key, observations, long_actions),
        }

    def losses(self, params, target_params, batch, next_actions=None):
        """Eq. 13 (Q_c) + Eq. 14 (V) + Eq. 15 (Q_a) at `params`, and metrics, on the critic view
        `batch['critic']` of a goal-conditioned batch (observations already hold [s, g]).

        - Eq. 13's V(s_{t+h_c}, g) is the online V, held fixed (as the single-task iql critic does);
        - Eq. 14 regresses the online V onto the EMA target Q_c, aggregated over heads;
        - Eq. 15's teacher is the online Q_c (as printed: no bar), aggregated over heads, held fixed.

        All three weight rows by `goal_chunk_weights`. `critic_loss` reports Eq. 13 and
        `distill_loss` Eq. 15; q_* metrics describe Q_a. `next_actions` is not read.
        """
        from qgf.data.goals import CRITIC_VIEW

        config, batch = self.config, batch[CRITIC_VIEW]
        critic, value, long_critic = q_ensemble(config), value_network(config), self.long_critic_network
        observations, long_actions = batch["observations"], batch["actions"]
        row_weights = goal_chunk_weights(batch["valid"], batch["masks"])
        how = config.critic_aggregation

        next_values = value.apply(params["value"], batch["next_observations"])
        q_c_values = long_critic.apply(params["long_critic"], observations, long_actions)
        c_args = (batch["rewards"], batch["masks"], next_values, config.discount, config.dqc_horizon)
        c_loss = long_critic_loss(q_c_values, *c_args, row_weights)

        target_q_c = aggregate_q(
            long_critic.apply(target_params["long_critic"], observations, long_actions), how
        )
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


# ---- config section: read by qgf.config with ast.literal_eval (building a config imports nothing) ----
CONFIG_SECTIONS = {
    "dqc": {
        "title": "the dqc critic: goal-conditioned Decoupled Q-Chunking (QGF App. F Eqs. 13-16)",
        "applies": {"critic": "dqc"},
        "check": "qgf.critics.dqc:check_dqc",
        "settings": {
            "dqc_horizon": {
                "default": 25,
                "help": "dqc: chunk length h_c of the long critic Q_c (Eq. 13); `horizon` is h_a, the "
                "policy's and Q_a's",
                "min": 1,
            },
            "distill_expectile": {
                "default": 0.8,
                "help": "dqc: expectile kappa_d distilling Q_c into Q_a (Eq. 15); 0.5 = mean over "
                "completions",
                "above": 0.0,
                "below": 1.0,
            },
        },
    },
}


def check_dqc(values: Any, config: Any) -> None:
    """dqc is the goal-conditioned critic, and its long chunk holds the policy's chunk."""
    if not config.goal_conditioned:
        raise QGFError(
            "critic=dqc is the goal-conditioned critic: set goal_conditioned=true "
            "(qgf train --goal-conditioned) or use critic=iql or td"
        )
    if values.dqc_horizon < config.horizon:
        raise QGFError(
            f"critic=dqc needs dqc_horizon (h_c) >= horizon (h_a), got dqc_horizon={values.dqc_horizon} "
            f"< horizon={config.horizon}"
        )
