"""The Decoupled Q-Chunking (DQC) critic of the goal-conditioned experiments (QGF paper App. F,
Eqs. 13-16), as pure loss functions of network outputs (arrays), not of networks.

Two critics with different chunk lengths h_a <= h_c share one goal-conditioned value V(s, g):

    Q_c(s_t, g, a_{t:t+h_c})  ->  sum_{i<h_c} gamma^i r_{t+i} + gamma^{h_c} m V(s_{t+h_c}, g)       (Eq. 13)
    V(s_t, g)                 ->  expectile_tau of Qbar_c(s_t, g, a_{t:t+h_c})                     (Eq. 14)
    Q_a(s_t, g, a_{t:t+h_a})  ->  expectile_kappa_d of Q_c(s_t, g, a_{t:t+h_c})                    (Eq. 15)
    Q_a(s_t, g, a_{t:t+h_a})  ~=  max_{a_{t+h_a:t+h_c}} Q_c(s_t, g, [a_{t:t+h_a}, a_{t+h_a:t+h_c}])  (Eq. 16)

Only Q_a is used by policies and guidance. The batch is `qgf.data.goals.sample_goal_chunks` with
horizon h_c: its `rewards` are the discounted chunk sums of the sparse goal-reaching rewards and m
(`masks`) is 0 when the chunk reaches its goal. Eq. 13 as printed has no m; with rewards that end
at the goal, bootstrapping past it would add a value that is not part of the return, so m stays
(as in Eq. 11's single-task critic and OGBench's goal-conditioned agents). The partial chunk
a_{t:t+h_a} is the first h_a steps of the dataset chunk (`partial_chunk`).

Row weights: a chunk counts when all its h_c steps are transitions of its trajectory, or when it
reaches its goal before the end (`goal_chunk_weights`). Every quantity that one network regresses
onto is wrapped in `stop_gradient` here, whatever network produced it; which network that is
(online or EMA target) is the caller's choice and recorded in docs/fidelity.md.

The shared primitives (expectile loss, weighted means, the chunk TD target) are those of
`qgf.critics`; this module names the equations and fixes their inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qgf.critics import chunk_td_target, critic_loss, expectile_loss, value_loss, weighted_mean


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
