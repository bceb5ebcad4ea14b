"""The agent contract: every registered agent (qgf.agents.AGENT_NAMES) obeys it.

The tests live here and run from `test_agent_contract*.py`, each of which names its agents in
`CONTRACT_AGENTS` (conftest.py parametrises `agent_name` with them), so that parallel test workers
(`pytest -n 2 --dist loadfile`) share the agents' compilations out; `test_agent_contract.py`
checks that together they cover the registry.

With the shared IQL critic (the paper's Fig. 5 setting): deterministic and bit-identical resume
through a checkpoint, checkpoint round trip, the loss the method declares falls on tiny data,
`sample_actions` shapes, bounds and finiteness (own policy, best-of-N), weight changes without
recompiling where the run has a behaviour flow, a one-line error where it has none. With the td
critic, which backs up on the agent's own policy samples: finite, deterministic updates. (Every
test compiles the agent's update or samplers, so the td cases stop there to keep the suite within
its time budget; the td backup's math is tested in tests/test_losses.py and per agent.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import equal_trees, make_dataset, small_config
from qgf import checkpoint as ckpt
from qgf.agents import agent_class
from qgf.agents import base as agent_base
from qgf.data.chunks import to_device
from qgf.errors import QGFError
from qgf.guidance import SamplerSpec

OBS_DIM, ACTION_DIM = 4, 2


def config_for(agent: str, critic: str, **overrides):
    td = {"num_critics": 3, "critic_aggregation": "mean"} if critic == "td" else {}
    return small_config(agent=agent, critic=critic, **td, **overrides)


@pytest.fixture(scope="module")
def device_data():
    return to_device(make_dataset())


def make_case(agent_name: str, critic: str, device_data):
    """(config, fresh agent, agent after 3 updates, their metrics) for one (agent, critic)."""
    config = config_for(agent_name, critic)
    fresh = agent_class(agent_name).create(0, OBS_DIM, ACTION_DIM, config)
    trained, metrics = fresh.update_many(device_data, 3)
    return config, fresh, trained, metrics


@pytest.fixture(scope="module")
def case(agent_name, device_data):
    """The agent with the shared IQL critic (the paper's Fig. 5 setting)."""
    return make_case(agent_name, "iql", device_data)


def test_registered_under_its_name(case):
    config, fresh, _, _ = case
    assert fresh.name == config.agent and agent_class(config.agent) is type(fresh)


def check_finite_and_deterministic(config, fresh, trained, metrics, device_data):
    assert int(trained.step) == 3
    assert all(np.isfinite(float(value)) for value in metrics.values()), metrics
    again, _ = agent_class(config.agent).create(0, OBS_DIM, ACTION_DIM, config).update_many(device_data, 3)
    assert equal_trees(trained, again)
    other_seed = agent_class(config.agent).create(1, OBS_DIM, ACTION_DIM, config)
    assert not equal_trees(fresh.params, other_seed.params)


def test_updates_are_finite_and_deterministic(case, device_data):
    check_finite_and_deterministic(*case, device_data)


def test_td_critic_updates_are_finite_and_deterministic(td_agent_name, device_data):
    """With critic=td an agent backs up on its own policy's samples (`policy_actions_from`). Run
    for one agent of each kind of policy (the module's TD_CONTRACT_AGENTS): each td compile costs
    about as much as the agent's whole IQL contract."""
    check_finite_and_deterministic(*make_case(td_agent_name, "td", device_data), device_data)


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


def test_own_policy_actions_have_the_right_shape_and_bounds(case):
    _, _, trained, _ = case
    # Best-of-N on the own policy is generic (base.Agent): one agent tests it, every agent N = 1.
    best_of_n = 3 if trained.name == "qgf" else 1
    observations = jnp.asarray(make_dataset().observations[:7])
    spec = SamplerSpec("policy", steps=trained.config.flow_steps, best_of_n=best_of_n)
    actions = np.asarray(trained.sample_actions(observations, jax.random.key(0), 0.0, spec))
    assert actions.shape == (7, trained.chunk_dim)
    assert np.all(np.isfinite(actions)) and np.all(np.abs(actions) <= 1.0)
    if trained.name == "qgf":  # the (D,) -> (h*A,) path is generic: test it once
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


def test_declared_loss_falls_on_tiny_data(case, device_data):
    """The method's `contract_loss` (its policy's regression loss) falls over 300 steps (the
    tiny preset's learning rate, 1e-3; the same compiled update as the other tests)."""
    config, fresh, _, _ = case
    agent, first = fresh.update_many(device_data, 20)
    agent, _ = agent.update_many(device_data, 260)
    _, last = agent.update_many(device_data, 20)
    loss = type(fresh).contract_loss
    assert float(last[loss]) < 0.8 * float(first[loss]), (config.agent, loss, first[loss], last[loss])
