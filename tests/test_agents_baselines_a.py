"""ReBRAC, FBRAC, FAWAC and IFQL (QAM paper App. C) against independent computations: numpy
float64 losses and targets, finite differences through the Euler steps, an explicit Euler loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import make_dataset, small_config
from qgf.agents import agent_class
from qgf.agents.fawac import MAX_WEIGHT, advantage_weights
from qgf.data.chunks import sample_chunks, to_device
from toy_critic import toy_critic_params, toy_q

OBS_DIM, ACTION_DIM, HORIZON = 4, 2, 2
CENTER = np.array([-0.5, 0.5, -0.5, 0.5])


@pytest.fixture(scope="module")
def batch():
    config = small_config()
    data = to_device(make_dataset())
    return sample_chunks(data, jax.random.key(3), config.batch_size, config.horizon, config.discount)


def np64(x):
    return np.asarray(x, np.float64)


def coordinate_mask(batch):
    return np.repeat(np64(batch["valid"]), ACTION_DIM, axis=1)


def euler_ode(velocity_fn, observations, noise, steps):
    """The Euler solution a <- a + v(s, a, k/T) / T, k = 0..T-1, clipped (QAM Eqs. 38-39), as an
    explicit Python loop."""
    a = noise
    for k in range(steps):
        a = a + velocity_fn(observations, a, jnp.full((a.shape[0],), k / steps, a.dtype)) / steps
    return jnp.clip(a, -1.0, 1.0)


# ------------------------------------------------------------------------------ ReBRAC


def test_rebrac_actor_loss_is_td3_bc(batch):
    """-mean Q(s, mu) / mean |Q| + alpha * mean_B sum_coords m (mu - a)^2, in numpy float64."""
    config = small_config(agent="rebrac", rebrac_alpha=0.7)
    agent = agent_class("rebrac").create(0, OBS_DIM, ACTION_DIM, config)
    total, metrics = agent.policy_losses(agent.params, batch, jax.random.key(0))
    mu = agent.actor_from(agent.params["actor"])(batch["observations"])
    assert np.all(np.abs(np.asarray(mu)) < 1.0)
    q = np64(agent.q_fn(batch["observations"], mu))
    bc = np.mean(np.sum(coordinate_mask(batch) * np.square(np64(mu) - np64(batch["actions"])), axis=1))
    expected = -np.mean(q) / np.mean(np.abs(q)) + 0.7 * bc
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["bc_mse"]), bc, rtol=1e-5)


@pytest.fixture(scope="module")
def rebrac_td():
    """A td ReBRAC with a smoothing noise far above its clip, and its update compiled."""
    config = small_config(
        agent="rebrac", critic="td", num_critics=3, critic_aggregation="mean", rebrac_noise=5.0
    )
    return agent_class("rebrac").create(0, OBS_DIM, ACTION_DIM, config)


def test_rebrac_actor_and_targets_step_on_every_second_update(rebrac_td, batch):
    """The critic changes at every update; the actor, its Adam state and both target networks only
    at updates 2 and 4 (TD3's delay 2)."""
    agent = rebrac_td
    changed = []
    for _ in range(4):
        new, metrics = agent.update(batch)

        def moved(a, b):
            return not all(
                np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
            )

        changed.append(
            (
                moved(new.params["critic"], agent.params["critic"]),
                moved(new.params["actor"], agent.params["actor"]),
                moved(new.opt_state["actor"], agent.opt_state["actor"]),
                moved(new.target_params["actor"], agent.target_params["actor"]),
                moved(new.target_params["critic"], agent.target_params["critic"]),
                float(metrics["actor_updated"]),
            )
        )
        agent = new
    assert changed == [
        (True, False, False, False, False, 0.0),
        (True, True, True, True, True, 1.0),
        (True, False, False, False, False, 0.0),
        (True, True, True, True, True, 1.0),
    ]


def test_rebrac_td_target_uses_the_smoothed_clipped_target_actor(rebrac_td, batch):
    """y = R + gamma^h m (mean_K - rho std_K) Qbar(s', a'), a' = clip(mu_target(s') +
    clip(sigma eps, -0.5, 0.5), -1, 1): numpy float64 from the same eps (base.Agent.losses splits
    (key, next_key) and backs up on next_key)."""
    agent = rebrac_td
    for _ in range(2):  # the target actor now differs from the online one
        agent, _ = agent.update(batch)
    config = agent.config
    key = jax.random.key(5)
    _, metrics = jax.jit(agent.losses)(agent.params, batch, key)
    next_obs = batch["next_observations"]
    eps = np64(jax.random.normal(jax.random.split(key)[1], (next_obs.shape[0], agent.chunk_dim)))
    mu_target = np64(agent.actor_from(agent.target_params["actor"])(next_obs))
    noise = np.clip(5.0 * eps, -0.5, 0.5)
    assert np.mean(np.abs(noise) == 0.5) > 0.8  # the clip is what is being tested
    next_actions = np.clip(mu_target + noise, -1.0, 1.0)
    heads = np64(agent.q_values(next_obs, jnp.asarray(next_actions, jnp.float32), target=True))
    bootstrap = heads.mean(axis=0) - config.critic_pessimism * heads.std(axis=0)
    targets = np64(batch["rewards"]) + config.discount**HORIZON * np64(batch["masks"]) * bootstrap
    np.testing.assert_allclose(float(metrics["td_target_mean"]), targets.mean(), rtol=1e-5, atol=1e-5)
    online = np64(agent.actor_from(agent.params["actor"])(next_obs))
    assert np.abs(online - mu_target).max() > 1e-4  # so the check above tells the two apart


# ------------------------------------------------------------------------------ FBRAC


def test_fbrac_bptt_gradient_matches_finite_differences(batch):
    """d/dtheta of -mean Q(s, ODE(v_theta, z)) (alpha = 0: the BPTT term alone) along a random
    direction: autodiff of the training loss against central differences of an explicit float64
    Euler loop and the analytic Q."""
    config = small_config(agent="fbrac", fbrac_alpha=0.0)
    agent = agent_class("fbrac").create(0, OBS_DIM, ACTION_DIM, config)
    critic = toy_critic_params(agent.params["critic"], OBS_DIM, CENTER, 1.0)
    agent = agent.replace(
        params={**agent.params, "critic": critic}, target_params={**agent.target_params, "critic": critic}
    )
    key = jax.random.key(7)
    grads = jax.grad(lambda p: agent.policy_losses(p, batch, key)[0])(agent.params)["actor"]
    leaves, tree = jax.tree.flatten(agent.params["actor"])
    direction_leaves = [np.random.default_rng(i).normal(size=leaf.shape) for i, leaf in enumerate(leaves)]
    autodiff = sum(np.sum(np64(g) * u) for g, u in zip(jax.tree.leaves(grads), direction_leaves, strict=True))

    observations = batch["observations"]
    noise = jax.random.normal(jax.random.split(key)[1], (observations.shape[0], agent.chunk_dim))
    network = agent.velocity_from  # the module; parameters passed in float64 below
    with jax.enable_x64(True):
        obs64, noise64 = jnp.asarray(np64(observations)), jnp.asarray(np64(noise))

        def objective(eps):
            shifted = [
                jnp.asarray(np64(leaf) + eps * u) for leaf, u in zip(leaves, direction_leaves, strict=True)
            ]
            velocity = network({"actor": jax.tree.unflatten(tree, shifted)})
            actions = np64(euler_ode(velocity, obs64, noise64, config.flow_steps))
            return -np.mean(toy_q(actions, CENTER, 1.0))

        step = 1e-5
        finite = (objective(step) - objective(-step)) / (2 * step)
    assert abs(finite) > 1e-3
    np.testing.assert_allclose(autodiff, finite, rtol=2e-3)


# ------------------------------------------------------------------------------ FAWAC


def test_fawac_weights_are_clipped_exponentiated_advantages():
    q = np.array([0.0, 1.0, -2.0, 10.0, 3.0])
    v = np.array([0.0, 0.5, -1.0, 0.0, -5.0])
    expected = np.minimum(np.exp(0.8 * (q - v)), 100.0)
    np.testing.assert_allclose(
        np.asarray(advantage_weights(jnp.asarray(q), jnp.asarray(v), 0.8)), expected, rtol=1e-6
    )
    assert expected[3] == MAX_WEIGHT == 100.0 and expected[4] == 100.0


def test_fawac_loss_is_the_advantage_weighted_flow_matching_loss(batch):
    """sum w m err / sum m, w = min(exp(tau (Qbar(s, a) - V(s))), 100), from the loss's own noise
    and times (key -> (noise key, time key)), in numpy float64; tau large enough that some weights
    are clipped."""
    config = small_config(agent="fawac", fawac_inv_temperature=30.0)
    agent = agent_class("fawac").create(0, OBS_DIM, ACTION_DIM, config)
    key = jax.random.key(11)
    _, metrics = agent.policy_losses(agent.params, batch, key)
    observations, actions = batch["observations"], batch["actions"]
    noise_key, time_key = jax.random.split(key)
    noise = jax.random.normal(noise_key, actions.shape)
    times = jax.random.uniform(time_key, (actions.shape[0],))
    q, v = np64(agent.q_fn(observations, actions)), np64(agent.value(observations))
    weights = np.minimum(np.exp(30.0 * (q - v)), 100.0)
    assert 0 < np.mean(weights == 100.0) < 1
    t = np64(times)[:, None]
    noisy = (1 - t) * np64(noise) + t * np64(actions)
    velocity = np64(agent.velocity_from(agent.params)(observations, jnp.asarray(noisy, jnp.float32), times))
    squared = np.square(velocity - (np64(actions) - np64(noise)))
    mask = coordinate_mask(batch)
    expected = np.sum(weights[:, None] * mask * squared) / np.sum(mask)
    np.testing.assert_allclose(float(metrics["awr_loss"]), expected, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["bc_loss"]), np.sum(mask * squared) / np.sum(mask), rtol=1e-4)


# ------------------------------------------------------------------------------ IFQL


def test_ifql_acts_with_the_argmax_q_flow_sample(batch):
    """Eq. 86: of N = 5 BC-flow samples per row (explicit Euler loop from the same noise), the one
    with the largest Q."""
    config = small_config(agent="ifql", ifql_samples=5)
    agent = agent_class("ifql").create(0, OBS_DIM, ACTION_DIM, config)
    observations = batch["observations"][:16]
    noise = jax.random.normal(jax.random.key(2), (16, 5, agent.chunk_dim))
    actions, candidate_q = agent.best_of_n(agent.params, observations, noise)
    velocity = agent.behavior_velocity_fn
    candidates = np.stack(
        [np.asarray(euler_ode(velocity, observations, noise[:, j], config.flow_steps)) for j in range(5)], 1
    )
    q = np.stack([np.asarray(agent.q_fn(observations, jnp.asarray(candidates[:, j]))) for j in range(5)], 1)
    np.testing.assert_allclose(np.asarray(candidate_q), q, rtol=1e-5, atol=1e-5)
    chosen = np.argmax(q, axis=1)
    assert len(set(chosen.tolist())) > 1  # not always the same candidate
    np.testing.assert_allclose(np.asarray(actions), candidates[np.arange(16), chosen], atol=1e-5)
    own = agent.policy_actions_from(agent.params, observations, jax.random.key(4))
    assert own.shape == (16, agent.chunk_dim)
