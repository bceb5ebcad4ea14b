"""QGFAgent: construction, fused multi-step updates on device batches, determinism, inference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import equal_trees, make_dataset, small_config
from qgf.agents import base as agent_module
from qgf.agents.qgf import QGFAgent
from qgf.data.chunks import to_device


@pytest.fixture(scope="module")
def device_data():
    return to_device(make_dataset())


def test_create_shapes_and_initial_state():
    config = small_config()
    agent = QGFAgent.create(0, 4, 2, config)
    assert agent.chunk_dim == 4
    obs, actions = jnp.zeros((5, 4)), jnp.zeros((5, 4))
    three_heads = QGFAgent.create(0, 4, 2, small_config(num_critics=3))
    assert three_heads.q_values(obs, actions).shape == (3, 5)
    assert agent.value(obs).shape == (5,)
    assert jax.eval_shape(agent.velocity_fn, obs, actions, jnp.zeros(5)).shape == (5, 4)
    assert jax.eval_shape(agent.q_fn, obs, actions).shape == (5,)
    assert int(agent.step) == 0
    assert equal_trees(agent.params["critic"], agent.target_params["critic"])
    assert equal_trees(agent.params["actor"], QGFAgent.create(0, 4, 2, config).params["actor"])
    assert not equal_trees(agent.params["actor"], QGFAgent.create(1, 4, 2, config).params["actor"])


def test_update_many_trains_and_is_deterministic(device_data):
    agent = QGFAgent.create(0, 4, 2, small_config())
    trained, metrics = agent.update_many(device_data, 6)
    assert int(trained.step) == 6
    assert set(metrics) >= {"bc_loss", "critic_loss", "value_loss", "q_mean", "v_mean", "critic_grad_norm"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert metrics["q_min"] <= metrics["q_mean"] <= metrics["q_max"]
    assert not equal_trees(trained.params["actor"], agent.params["actor"])
    assert not equal_trees(trained.target_params["critic"], agent.target_params["critic"])
    again, _ = agent.update_many(device_data, 6)
    assert equal_trees(trained, again)


def test_step_grouping_does_not_change_the_result(device_data):
    """Exact resume rests on this: 6 steps in one call == 3 + 3 steps in two calls."""
    agent = QGFAgent.create(0, 4, 2, small_config())
    straight, _ = agent.update_many(device_data, 6)
    first, _ = agent.update_many(device_data, 3)
    split, _ = first.update_many(device_data, 3, donate=True)
    assert equal_trees(straight, split)


def test_sample_actions_shapes_and_traced_weight(device_data):
    from qgf.guidance import SamplerSpec

    agent, _ = QGFAgent.create(0, 4, 2, small_config()).update_many(device_data, 3)
    obs = jnp.asarray(make_dataset().observations[:6])
    key = jax.random.PRNGKey(0)
    spec = SamplerSpec(estimator="qgf", steps=4)
    guided = agent.sample_actions(obs, key, 0.5, spec)
    assert guided.shape == (6, 4) and float(jnp.max(jnp.abs(guided))) <= 1.0
    compiled = agent_module._sample_actions._cache_size()
    assert not np.allclose(agent.sample_actions(obs, key, 0.7, spec), guided)
    assert agent_module._sample_actions._cache_size() == compiled  # a new weight never recompiles
    per_row = agent.sample_actions(obs, key, jnp.linspace(0.0, 1.0, 6), spec)
    assert per_row.shape == (6, 4)
    # Weight 0 is the unguided BC sampler with the same noise.
    bc = agent.sample_actions(obs, key, 0.0, SamplerSpec(estimator="none", steps=4))
    np.testing.assert_allclose(agent.sample_actions(obs, key, 0.0, spec), bc, atol=1e-6)
    assert not np.allclose(guided, bc)
    assert agent.sample_actions(obs[0], key, 0.5, spec).shape == (4,)


def test_q_fn_uses_the_configured_critic(device_data):
    trained, _ = QGFAgent.create(0, 4, 2, small_config()).update_many(device_data, 3)
    obs, actions = jnp.ones((3, 4)), jnp.zeros((3, 4))
    target_heads = np.asarray(trained.q_values(obs, actions, target=True))
    online_heads = np.asarray(trained.q_values(obs, actions))
    np.testing.assert_allclose(trained.q_fn(obs, actions), target_heads.min(0), rtol=1e-6)
    online = trained.replace(
        config=trained.config.replace(guidance_critic="online", critic_aggregation="mean")
    )
    np.testing.assert_allclose(online.q_fn(obs, actions), online_heads.mean(0), rtol=1e-6)
