"""QGFAgent: construction, fused multi-step updates on device batches, determinism, inference.

`ArrayDataset` / `make_dataset` build a tiny synthetic dataset in OGBench's compact layout; the
other training tests import them from here.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf import agent as agent_module
from qgf.agent import QGFAgent
from qgf.config import load_preset
from qgf.data.chunks import to_device


@dataclasses.dataclass
class ArrayDataset:
    """The fields `qgf.train` and `qgf.data.chunks.to_device` read from a dataset."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    masks: np.ndarray
    terminals: np.ndarray
    name: str = "synthetic-v0"
    path: str = "<memory>"
    fingerprint: str = "synthetic"

    @property
    def size(self) -> int:
        return len(self.observations)

    @property
    def num_transitions(self) -> int:
        return self.size - int(self.terminals.sum())


def make_dataset(num_trajectories=6, length=20, obs_dim=4, action_dim=2, success_rows=3, seed=0):
    """Trajectories of `length` rows; the state encodes (progress, trajectory features); actions
    are a fixed smooth function of the state; the last `success_rows` states solve the task
    (reward 0, mask 0), every other state has reward -1."""
    rng = np.random.default_rng(seed)
    progress = np.tile(np.arange(length) / (length - 1), num_trajectories)
    features = np.repeat(rng.normal(size=(num_trajectories, obs_dim - 1)), length, axis=0)
    observations = np.concatenate([progress[:, None], features], axis=1).astype(np.float32)
    projection = rng.normal(size=(obs_dim, action_dim))
    actions = np.tanh(observations @ projection).astype(np.float32) * 0.9
    solved = np.tile(np.arange(length) >= length - success_rows, num_trajectories)
    terminals = np.tile(np.arange(length) == length - 1, num_trajectories)
    return ArrayDataset(
        observations=observations,
        actions=actions,
        rewards=np.where(solved, 0.0, -1.0).astype(np.float32),
        masks=np.where(solved, 0.0, 1.0).astype(np.float32),
        terminals=terminals.astype(np.float32),
    )


# One learner config for every training test in the suite, so the update compiles once per run.
SMALL = {
    "actor_hidden_dims": (32, 32),
    "critic_hidden_dims": (32, 32),
    "batch_size": 64,
    "horizon": 2,
    "discount": 0.9,
    "target_update_rate": 0.05,
}


def small_config(**overrides):
    return load_preset("tiny", {**SMALL, **overrides})


def equal_trees(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


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
    assert equal_trees(agent.critic_params, agent.target_critic_params)
    assert equal_trees(agent.actor_params, QGFAgent.create(0, 4, 2, config).actor_params)
    assert not equal_trees(agent.actor_params, QGFAgent.create(1, 4, 2, config).actor_params)


def test_update_many_trains_and_is_deterministic(device_data):
    agent = QGFAgent.create(0, 4, 2, small_config())
    trained, metrics = agent.update_many(device_data, 6)
    assert int(trained.step) == 6
    assert set(metrics) >= {"bc_loss", "critic_loss", "value_loss", "q_mean", "v_mean", "critic_grad_norm"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert metrics["q_min"] <= metrics["q_mean"] <= metrics["q_max"]
    assert not equal_trees(trained.actor_params, agent.actor_params)
    assert not equal_trees(trained.target_critic_params, agent.target_critic_params)
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
