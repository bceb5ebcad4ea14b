"""RLPD: the agent contract with the td critic's ensemble (its only critic), and SAC's losses and
temperature update against a float64 hand computation."""

import jax
import numpy as np
import pytest

from agent_contract import *  # noqa: F403  (the contract's tests and fixtures)
from agent_contract import make_case
from helpers import make_dataset, small_config
from qgf.agents import agent_class
from qgf.critics.networks import q_ensemble
from qgf.data.chunks import gather_chunks, to_device
from qgf.errors import QGFError

CONTRACT_AGENTS = ("rlpd",)
del test_td_critic_updates_are_finite_and_deterministic  # noqa: F821  (`case` is the td case here)


@pytest.fixture(scope="module")
def case(agent_name, device_data):  # noqa: F811  (rlpd's critic is the td ensemble)
    return make_case(agent_name, "td", device_data)


def _config(**overrides):
    return small_config(agent="rlpd", critic="td", num_critics=3, critic_aggregation="mean", **overrides)


def _log_prob(u, mean, log_std):
    """log pi(tanh u) in float64, by the textbook formula (no stabilised softplus)."""
    std = np.exp(log_std)
    gaussian = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    return np.sum(gaussian - np.log(1.0 - np.tanh(u) ** 2), axis=-1)


def test_sac_losses_and_temperature_step_match_a_hand_computation():
    config = _config(rlpd_init_temperature=0.7)
    agent = agent_class("rlpd").create(3, 4, 2, config)
    data = to_device(make_dataset())
    batch = gather_chunks(data, data["transition_starts"][:32], config.horizon, config.discount)
    key = jax.random.PRNGKey(5)
    _, metrics = agent.losses(agent.params, batch, key)

    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    next_key, subset_key, actor_key = jax.random.split(key, 3)
    alpha, d = 0.7, agent.chunk_dim
    q_net = q_ensemble(agent.config)

    def draw(observations, k):
        mean, log_std = (f64(x) for x in agent._policy(agent.params, observations))
        u = mean + np.exp(log_std) * f64(jax.random.normal(k, mean.shape))
        return np.tanh(u), _log_prob(u, mean, log_std)

    next_a, next_logp = draw(batch["next_observations"], next_key)
    next_q = f64(
        q_net.apply(agent.target_params["critic"], batch["next_observations"], next_a.astype(np.float32))
    )
    subset = np.asarray(jax.random.choice(subset_key, 3, (2,), replace=False))
    y = f64(batch["rewards"]) + config.discount**config.horizon * f64(batch["masks"]) * (
        next_q[subset].min(axis=0) - alpha * next_logp
    )
    w = f64(batch["valid"])[:, -1]
    q = f64(q_net.apply(agent.params["critic"], batch["observations"], batch["actions"]))
    critic_loss = np.mean([np.sum(w * (qk - y) ** 2) / np.sum(w) for qk in q])
    a, logp = draw(batch["observations"], actor_key)
    q_pi = f64(q_net.apply(agent.params["critic"], batch["observations"], a.astype(np.float32))).mean(axis=0)
    actor_loss = np.mean(alpha * logp - q_pi)
    entropy = -np.mean(logp)
    temperature_loss = alpha * (entropy - (-0.5 * d))
    for name, expected in (
        ("critic_loss", critic_loss),
        ("actor_loss", actor_loss),
        ("entropy", entropy),
        ("temperature_loss", temperature_loss),
    ):
        np.testing.assert_allclose(float(metrics[name]), expected, rtol=2e-4, atol=2e-4, err_msg=name)

    # One Adam step of log alpha: d loss / d log alpha = alpha (H - H_target); the first Adam step
    # moves by lr * g / (|g| + eps), i.e. lr against the sign of g.
    _, loss_key = jax.random.split(agent.rng)
    entropy_at_update = float(agent.losses(agent.params, batch, loss_key)[1]["entropy"])
    grad = alpha * (entropy_at_update + 0.5 * d)
    updated = agent.update(batch)[0]
    step = float(updated.params["temperature"]["log_alpha"]) - np.log(alpha)
    np.testing.assert_allclose(step, -config.learning_rate * np.sign(grad), rtol=1e-3)


def test_rlpd_refuses_a_critic_it_does_not_train():
    with pytest.raises(QGFError, match="critic=td"):
        agent_class("rlpd").create(0, 4, 2, small_config(agent="rlpd", critic="iql"))
    with pytest.raises(QGFError, match="rlpd_min_qs"):
        agent_class("rlpd").create(0, 4, 2, _config(rlpd_min_qs=4))
