"""Flow-matching and chunked-IQL losses against hand computations in numpy (QGF Eqs. 2, 11, 12)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf.agents.qgf import QGFAgent
from qgf.config import load_preset
from qgf.critics.losses import chunk_td_target, critic_loss, ema_update, expectile_loss, value_loss
from qgf.critics.networks import aggregate_q
from qgf.flow import chunk_step_weights, flow_matching_loss, sample_flow_times

# ------------------------------------------------------------------ building blocks, tiny numbers


def test_expectile_loss_by_hand():
    u = jnp.array([-2.0, 0.5, 0.0, 3.0])
    # |tau - 1(u<0)| u^2 with tau = 0.9: 0.1*4, 0.9*0.25, 0, 0.9*9
    np.testing.assert_allclose(expectile_loss(u, 0.9), [0.4, 0.225, 0.0, 8.1], rtol=1e-6)


def test_aggregation_min_and_mean():
    q = jnp.array([[1.0, -2.0, 5.0], [3.0, -4.0, 4.0]])
    np.testing.assert_allclose(aggregate_q(q, "min"), [1.0, -4.0, 4.0])
    np.testing.assert_allclose(aggregate_q(q, "mean"), [2.0, -3.0, 4.5])


def test_chunk_td_target_by_hand():
    # y = R + gamma^h * m * V(s'), gamma = 0.9, h = 3 -> gamma^h = 0.729
    rewards, masks, next_v = jnp.array([-2.71, 0.0]), jnp.array([1.0, 0.0]), jnp.array([-10.0, 7.0])
    np.testing.assert_allclose(
        chunk_td_target(rewards, masks, next_v, 0.9, 3), [-2.71 - 7.29, 0.0], rtol=1e-6
    )


def test_critic_loss_weights_rows_and_averages_heads():
    q = jnp.array([[1.0, 2.0, 3.0], [0.0, 2.0, 5.0]])  # K = 2 heads, B = 3
    targets = jnp.array([2.0, 2.0, 100.0])
    weights = jnp.array([1.0, 1.0, 0.0])  # the third chunk crosses a trajectory end
    # head 0: errors 1, 0 over 2 valid rows -> 0.5; head 1: 4, 0 -> 2.0; mean over heads 1.25
    np.testing.assert_allclose(critic_loss(q, targets, weights), 1.25, rtol=1e-6)


def test_value_loss_by_hand():
    target_q = jnp.array([1.0, -1.0, 50.0])
    values = jnp.array([0.0, 1.0, 0.0])
    weights = jnp.array([1.0, 1.0, 0.0])
    # u = Qbar - V = [1, -2]: 0.9*1 + 0.1*4 = 1.3 over 2 valid rows
    np.testing.assert_allclose(value_loss(target_q, values, 0.9, weights), 0.65, rtol=1e-6)


def test_ema_update_by_hand():
    target = {"w": jnp.array([1.0, 2.0])}
    online = {"w": jnp.array([3.0, -2.0])}
    np.testing.assert_allclose(ema_update(target, online, 0.25)["w"], [1.5, 1.0])


def test_flow_matching_loss_by_hand():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(3, 2)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(3, 4)).astype(np.float32)
    noise = rng.normal(size=(3, 4)).astype(np.float32)
    times = np.array([0.0, 0.3, 0.9], np.float32)
    matrix = rng.normal(size=(2 + 4 + 1, 4)).astype(np.float32)

    def velocity(o, a_t, t):
        return jnp.concatenate([o, a_t, t[:, None]], axis=1) @ matrix

    a_t = (1 - times[:, None]) * noise + times[:, None] * actions
    err = np.concatenate([obs, a_t, times[:, None]], 1) @ matrix - (actions - noise)
    np.testing.assert_allclose(
        flow_matching_loss(velocity, obs, actions, noise, times), np.mean(err**2), rtol=1e-5
    )

    weights = np.zeros((3, 4), np.float32)
    weights[0] = 1.0
    weights[1, :2] = 1.0  # six coordinates count
    expected = (np.sum(err[0] ** 2) + np.sum(err[1, :2] ** 2)) / 6.0
    np.testing.assert_allclose(
        flow_matching_loss(velocity, obs, actions, noise, times, jnp.asarray(weights)), expected, rtol=1e-5
    )


def test_chunk_step_weights_follow_row_major_chunks():
    valid = np.array([[1, 1, 0], [1, 0, 0]], np.float32)  # h = 3, A = 2
    expected = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(chunk_step_weights(jnp.asarray(valid), 2), expected)


def test_flow_time_sampling():
    grid = np.asarray(sample_flow_times(jax.random.PRNGKey(0), 2000, "grid", 10))
    np.testing.assert_allclose(np.unique(np.round(grid, 6)), np.arange(11) / 10, atol=1e-6)
    uniform = np.asarray(sample_flow_times(jax.random.PRNGKey(0), 2000, "uniform", 10))
    assert uniform.min() >= 0.0 and uniform.max() < 1.0 and len(np.unique(uniform)) > 1900
    assert abs(uniform.mean() - 0.5) < 0.03


# ------------------------------------------------------------------ the agent's composite loss


OBS_DIM, ACTION_DIM = 3, 2


@functools.cache
def base_agent():
    config = load_preset(
        "tiny", {"actor_hidden_dims": (16,), "critic_hidden_dims": (16,), "horizon": 3, "discount": 0.9}
    )
    return QGFAgent.create(0, OBS_DIM, ACTION_DIM, config)


def tiny_agent(**overrides):
    """The same parameters under config variants (no re-initialisation, no recompiling create)."""
    agent = base_agent()
    return agent.replace(config=agent.config.replace(**overrides))


def tiny_batch(seed=0, batch_size=5, horizon=3):
    rng = np.random.default_rng(seed)
    valid = np.ones((batch_size, horizon), np.float32)
    valid[1, 2:] = 0.0  # crosses a trajectory end at its last step
    valid[3, 1:] = 0.0
    return {
        "observations": jnp.asarray(rng.normal(size=(batch_size, OBS_DIM)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, size=(batch_size, horizon * ACTION_DIM)), jnp.float32),
        "rewards": jnp.asarray(rng.normal(size=batch_size), jnp.float32),
        "masks": jnp.asarray([1.0, 1.0, 0.0, 1.0, 0.0], jnp.float32),
        "valid": jnp.asarray(valid),
        "next_observations": jnp.asarray(rng.normal(size=(batch_size, OBS_DIM)), jnp.float32),
    }


def perturb(params, scale=0.3, seed=3):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef,
        [leaf + scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)],
    )


@pytest.mark.parametrize("aggregation", ["min", "mean"])
def test_agent_critic_and_value_losses_by_hand(aggregation):
    agent = tiny_agent(critic_aggregation=aggregation)
    # Move the target critic away from the online one so the test tells them apart.
    agent = agent.replace(target_params={"critic": perturb(agent.params["critic"])})
    batch = tiny_batch()
    params = agent.params
    _, metrics = agent.losses(params, batch, jax.random.PRNGKey(0))

    obs, actions = batch["observations"], batch["actions"]
    q_online = np.asarray(agent.q_values(obs, actions), np.float64)  # (K, B)
    q_target = np.asarray(agent.q_values(obs, actions, target=True), np.float64)
    v_obs = np.asarray(agent.value(obs), np.float64)
    v_next = np.asarray(agent.value(batch["next_observations"]), np.float64)
    rewards, masks = np.asarray(batch["rewards"], np.float64), np.asarray(batch["masks"], np.float64)
    w = np.array([1.0, 0.0, 1.0, 0.0, 1.0])  # valid[:, -1]

    target = rewards + 0.9**3 * masks * v_next
    expected_q_loss = np.mean([np.sum(w * (q_online[k] - target) ** 2) / w.sum() for k in range(2)])
    qbar = q_target.min(0) if aggregation == "min" else q_target.mean(0)
    u = qbar - v_obs
    expected_v_loss = np.sum(w * np.where(u < 0, 0.1, 0.9) * u**2) / w.sum()

    np.testing.assert_allclose(metrics["critic_loss"], expected_q_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["value_loss"], expected_v_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["td_target_mean"], target.mean(), rtol=1e-5)


@pytest.mark.parametrize("mask_invalid", [True, False])
def test_agent_bc_loss_by_hand(mask_invalid):
    """Eq. 2 on the batch, with the noise and times the agent draws from its key; with masking,
    only chunk steps inside the trajectory (valid) count."""
    agent = tiny_agent(bc_mask_invalid=mask_invalid)
    batch = tiny_batch()
    key = jax.random.PRNGKey(4)
    params = agent.params
    bc_loss = float(agent.losses(params, batch, key)[1]["bc_loss"])

    noise_key, time_key = jax.random.split(key)
    actions = np.asarray(batch["actions"], np.float64)
    noise = np.asarray(jax.random.normal(noise_key, actions.shape), np.float64)
    times = np.asarray(jax.random.uniform(time_key, (actions.shape[0],)), np.float64)
    a_t = (1 - times[:, None]) * noise + times[:, None] * actions
    velocity = np.asarray(
        agent.velocity_fn(batch["observations"], jnp.asarray(a_t, jnp.float32), jnp.asarray(times))
    )
    squared = (velocity - (actions - noise)) ** 2
    valid = np.asarray(batch["valid"])
    weights = np.repeat(valid, ACTION_DIM, axis=1) if mask_invalid else np.ones_like(squared)
    np.testing.assert_allclose(bc_loss, np.sum(weights * squared) / np.sum(weights), rtol=1e-5)


def grads_of(agent, batch):
    params = agent.params
    return jax.grad(lambda p: agent.losses(p, batch, jax.random.PRNGKey(0))[0])(params)


def trees_close(a, b):
    return all(
        np.allclose(x, y, atol=1e-7) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_gradients_do_not_cross_networks():
    """Rewards enter only the critic target; the value loss's Qbar and the critic's V(s') are
    held fixed (stop_gradient). So changing rewards moves only the critic's gradient, and the
    expectile moves only the value's."""
    agent = tiny_agent()
    batch = tiny_batch()
    base = grads_of(agent, batch)
    new_rewards = dict(batch, rewards=batch["rewards"] + 5.0)
    moved = grads_of(agent, new_rewards)
    assert trees_close(base["actor"], moved["actor"]) and trees_close(base["value"], moved["value"])
    assert not trees_close(base["critic"], moved["critic"])

    other_expectile = grads_of(agent.replace(config=agent.config.replace(expectile=0.6)), batch)
    assert trees_close(base["actor"], other_expectile["actor"]) and trees_close(
        base["critic"], other_expectile["critic"]
    )
    assert not trees_close(base["value"], other_expectile["value"])


def test_rows_crossing_trajectory_end_do_not_train_the_critic():
    agent = tiny_agent()
    batch = tiny_batch()
    rewards = np.asarray(batch["rewards"]).copy()
    rewards[[1, 3]] += 100.0  # rows with valid[:, -1] == 0
    assert trees_close(
        grads_of(agent, batch)["critic"], grads_of(agent, dict(batch, rewards=jnp.asarray(rewards)))["critic"]
    )


def test_update_applies_adam_and_ema_by_hand():
    """First Adam step: delta = -lr * m_hat / (sqrt(v_hat) + eps) = -lr * g / (|g| + eps); then
    target <- (1 - rate) target + rate * new online critic."""
    agent = tiny_agent(learning_rate=0.01, target_update_rate=0.2)
    agent = agent.replace(target_params={"critic": perturb(agent.params["critic"])})
    batch = tiny_batch()
    new, _ = agent.update(batch)
    # update() draws its loss key from the agent's rng; reproduce the gradient with that key.
    loss_key = jax.random.split(agent.rng)[1]
    params = agent.params
    grads = jax.grad(lambda p: agent.losses(p, batch, loss_key)[0])(params)
    olds = [agent.params[n] for n in ("actor", "critic", "value")]
    news = [new.params[n] for n in ("actor", "critic", "value")]
    for old, fresh, grad in zip(olds, news, [grads[n] for n in ("actor", "critic", "value")], strict=True):
        for o, f, g in zip(jax.tree.leaves(old), jax.tree.leaves(fresh), jax.tree.leaves(grad), strict=True):
            g = np.asarray(g, np.float64)
            np.testing.assert_allclose(
                np.asarray(f) - np.asarray(o), -0.01 * g / (np.abs(g) + 1e-8), atol=1e-6
            )
    for t_old, t_new, c_new in zip(
        jax.tree.leaves(agent.target_params["critic"]),
        jax.tree.leaves(new.target_params["critic"]),
        jax.tree.leaves(new.params["critic"]),
        strict=True,
    ):
        np.testing.assert_allclose(t_new, 0.8 * np.asarray(t_old) + 0.2 * np.asarray(c_new), atol=1e-6)
    assert int(new.step) == 1
