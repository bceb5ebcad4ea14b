"""The agent contract: every registered agent (qgf.agents.AGENT_NAMES), with each critic, obeys it.

Deterministic and bit-identical resume through a checkpoint, checkpoint round trip, the loss the
method declares falls on tiny data, `sample_actions` shapes, bounds and finiteness, weight changes
without recompiling where the run has a behaviour flow, a one-line error where it has none.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import equal_trees, make_dataset, small_config
from qgf import checkpoint as ckpt
from qgf.agents import AGENT_NAMES, agent_class
from qgf.agents import base as agent_base
from qgf.data.chunks import to_device
from qgf.errors import QGFError
from qgf.guidance import SamplerSpec

OBS_DIM, ACTION_DIM = 4, 2
CRITICS = ("iql", "td")
CASES = [(agent, critic) for agent in AGENT_NAMES for critic in CRITICS]


def config_for(agent: str, critic: str, **overrides):
    td = {"num_critics": 3, "critic_aggregation": "mean"} if critic == "td" else {}
    return small_config(agent=agent, critic=critic, **td, **overrides)


@pytest.fixture(scope="module")
def device_data():
    return to_device(make_dataset())


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{c}" for a, c in CASES])
def case(request, device_data):
    """(config, fresh agent, agent after 3 updates) for one (agent, critic)."""
    agent_name, critic = request.param
    config = config_for(agent_name, critic)
    fresh = agent_class(agent_name).create(0, OBS_DIM, ACTION_DIM, config)
    trained, metrics = fresh.update_many(device_data, 3)
    return config, fresh, trained, metrics


def test_registered_under_its_name(case):
    config, fresh, _, _ = case
    assert fresh.name == config.agent and agent_class(config.agent) is type(fresh)


def test_updates_are_finite_and_deterministic(case, device_data):
    config, fresh, trained, metrics = case
    assert int(trained.step) == 3
    assert all(np.isfinite(float(value)) for value in metrics.values()), metrics
    again, _ = agent_class(config.agent).create(0, OBS_DIM, ACTION_DIM, config).update_many(device_data, 3)
    assert equal_trees(trained, again)
    other_seed = agent_class(config.agent).create(1, OBS_DIM, ACTION_DIM, config)
    assert not equal_trees(fresh.params, other_seed.params)


def test_resume_through_a_checkpoint_is_bit_identical(case, device_data, tmp_path):
    """3 + 2 steps with a save/load in between equal 5 uninterrupted steps."""
    config, fresh, trained, _ = case
    ckpt.create_run(tmp_path / "run", config, obs_dim=OBS_DIM, action_dim=ACTION_DIM, extra={"env": "x"})
    ckpt.save_checkpoint(tmp_path / "run", trained)
    loaded = ckpt.load_run(tmp_path / "run")
    assert type(loaded.agent) is type(trained) and equal_trees(loaded.agent, trained)
    resumed, _ = loaded.agent.update_many(device_data, 2)
    straight, _ = fresh.update_many(device_data, 5)
    assert equal_trees(resumed, straight)


@pytest.mark.parametrize("best_of_n", [1, 3])
def test_own_policy_actions_have_the_right_shape_and_bounds(case, best_of_n):
    _, _, trained, _ = case
    observations = jnp.asarray(make_dataset().observations[:7])
    spec = SamplerSpec("policy", steps=trained.config.flow_steps, best_of_n=best_of_n)
    actions = np.asarray(trained.sample_actions(observations, jax.random.key(0), 0.0, spec))
    assert actions.shape == (7, trained.chunk_dim)
    assert np.all(np.isfinite(actions)) and np.all(np.abs(actions) <= 1.0)
    single = trained.sample_actions(observations[0], jax.random.key(0), 0.0, spec)
    assert single.shape == (trained.chunk_dim,)


def test_test_time_samplers_apply_exactly_where_there_is_a_behaviour_flow(case):
    _, _, trained, _ = case
    observations = jnp.asarray(make_dataset().observations[:5])
    spec = SamplerSpec("qgf", steps=trained.config.flow_steps)
    if trained.behavior_velocity_fn is None:
        with pytest.raises(QGFError, match="--sampler policy"):
            trained.sample_actions(observations, jax.random.key(0), 0.1, spec)
        return
    first = trained.sample_actions(observations, jax.random.key(0), 0.0, spec)
    compiled = agent_base._sample_actions._cache_size()
    guided = trained.sample_actions(observations, jax.random.key(0), 0.5, spec)
    assert agent_base._sample_actions._cache_size() == compiled  # a new weight never recompiles
    assert first.shape == guided.shape == (5, trained.chunk_dim)
    assert not np.allclose(first, guided)


def test_declared_loss_falls_on_tiny_data(device_data):
    """Each method's `contract_loss` (its policy's regression loss) falls over 300 steps."""
    for name in AGENT_NAMES:
        cls = agent_class(name)
        agent = cls.create(0, OBS_DIM, ACTION_DIM, config_for(name, "iql", learning_rate=1e-3))
        agent, first = agent.update_many(device_data, 20)
        agent, _ = agent.update_many(device_data, 260)
        _, last = agent.update_many(device_data, 20)
        loss = cls.contract_loss
        assert float(last[loss]) < 0.8 * float(first[loss]), (name, loss, first[loss], last[loss])
