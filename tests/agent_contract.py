"""The agent contract: every registered agent (qgf.agents.AGENT_NAMES) obeys it.

The tests live here and run from `test_agent_contract*.py`, each of which names its agents in
`CONTRACT_AGENTS` (conftest.py parametrises `agent_name` with them), so that parallel test workers
(`pytest -n 2 --dist loadfile`) share the agents' compilations out; `test_agent_contract.py`
checks that together they cover the registry.

With the shared IQL critic (the paper's Fig. 5 setting): deterministic and bit-identical resume
through a checkpoint, checkpoint round trip, the metrics of the method's own policy objective that
it declares (`contract_losses`) fall on tiny data, `sample_actions` shapes, bounds and finiteness
(own policy, best-of-N), weight changes without recompiling where the run has a behaviour flow, a
one-line error where it has none. Against a fixed analytic critic (tests/toy_critic.py, written into
the critic's parameters, so the same compiled update runs): the acting policy's Q rises from the
tiny-data start, except for a policy trained without the critic, which must not move; the
regressions onto critic quantities that the method declares (`contract_fixed_critic_losses`) fall.
With the td critic, which backs up on the agent's own policy samples: finite, deterministic
updates. (Every test compiles the agent's update or samplers, so the td cases stop there to keep
the suite within its time budget; the td backup's math is tested in tests/test_losses.py and per
agent.)
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
from toy_critic import phi, toy_critic_params, toy_q, train_against

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


@pytest.fixture(scope="module")
def trained(case, device_data):
    """(agent after 300 updates on tiny data, metrics of the first 20, metrics of the last 20): the
    tiny preset's learning rate, 1e-3; the same compiled update as the other tests."""
    _, fresh, _, _ = case
    agent, first = fresh.update_many(device_data, 20)
    agent, _ = agent.update_many(device_data, 260)
    agent, last = agent.update_many(device_data, 20)
    return agent, first, last


def fell(first: float, last: float, fraction: float = 0.2) -> bool:
    return last < first - fraction * abs(first)


def test_declared_losses_fall_on_tiny_data(trained):
    """Each metric of the method's own policy objective (`contract_losses`) falls by a fifth from
    the first 20 of 300 updates to the last 20."""
    agent, first, last = trained
    declared = type(agent).contract_losses + type(agent).contract_fixed_critic_losses
    assert declared and set(declared) <= set(first), (agent.name, declared)
    for loss in type(agent).contract_losses:
        assert fell(float(first[loss]), float(last[loss])), (agent.name, loss, first[loss], last[loss])


# The fixed critic: Q(s, a) = -TOY_SCALE * sum_i phi(a_i - TOY_CENTER_i), concave with its maximum at
# TOY_CENTER, a chunk (h = 2, A = 2) away from the dataset's actions (whose mean is about
# (0.17, -0.07)); the scale outweighs every tiny-preset behaviour weight (fql_alpha = 1000, ...).
TOY_CENTER = np.array([-0.5, 0.5, -0.5, 0.5])
TOY_SCALE = 300.0
TOY_STEPS = 50
# Trained without the critic (test-time guidance only): its acting policy must not move towards c.
CRITIC_FREE_POLICIES = ("qgf",)
# Acting through their own regressed copy of the critic (CGQL-MSE/Linex's noisy critic, QAM Eqs. 63,
# 70; DSRL's noise-space critic, Eq. 82): they climb the fixed critic only once the copy has learned
# it, and in TOY_STEPS updates at the tiny preset's learning rate a copy moves by far less than the
# toy critic's ~300x larger Q (their regressions sit at ~4e5 and do not fall); for CGQL-MSE/Linex
# the regression's optimum, Q averaged over the dataset actions given the noisy action, is moreover
# flat in the action on the tiny data, whose actions are a function of the state. Their copies'
# targets and losses are tested in tests/test_agents_cgql.py and tests/test_agents_dsrl_fedit.py.
CRITIC_COPY_POLICIES = ("cgql-mse", "cgql-linex", "dsrl")
# Weighted by exp(tau (Q - V)) with the critic's V: against the fixed critic they start from a V
# consistent with it (the mean fixed Q of the dataset's chunks), since the learned V never saw it
# (Q - V of about -600 would make every weight underflow to 0).
ADVANTAGE_WEIGHTED_POLICIES = ("fawac",)


def toy_distance(agent) -> float:
    """mean sum_i phi(a_i - c_i) over the acting policy's chunks (-Q / TOY_SCALE; 0 at a = c): 7
    observations spread over the 6 trajectories x 8 noise draws (the shape test's batch size, so its
    compiled sampler)."""
    observations = jnp.asarray(make_dataset().observations[3::17])
    spec = SamplerSpec("policy", steps=agent.config.flow_steps)
    actions = [np.asarray(agent.sample_actions(observations, jax.random.key(k), 0.0, spec)) for k in range(8)]
    return float(phi(np.concatenate(actions) - TOY_CENTER).sum(axis=-1).mean())


def with_toy_value(agent, device_data):
    """`agent` with V(s) = the mean fixed Q over dataset chunks (its value network's weights zero, the
    output bias that constant)."""
    config = agent.config
    batch = agent_base.training_sample_fn(config)(
        device_data, jax.random.key(0), 256, config.horizon, config.discount
    )
    level = float(np.mean(toy_q(np.asarray(batch["actions"]), TOY_CENTER, TOY_SCALE)))
    zeros = jax.tree.map(jnp.zeros_like, agent.params["value"])
    inner = zeros["params"]
    last = max((name for name in inner["MLP_0"] if name.startswith("Dense_")), key=lambda n: int(n[6:]))
    inner["MLP_0"][last]["bias"] = jnp.full_like(inner["MLP_0"][last]["bias"], level)
    return agent.replace(params={**agent.params, "value": zeros})


@pytest.fixture(scope="module")
def against_fixed_critic(trained, device_data):
    """(distance to c before, after, per-step metrics) over TOY_STEPS updates against the fixed
    critic, starting from the agent after its 300 updates on tiny data (its own updates with the
    learning critic, whose Q terms barely move a tiny-preset policy: near behaviour cloning)."""
    agent = trained[0]
    critic = toy_critic_params(agent.params["critic"], OBS_DIM, TOY_CENTER, TOY_SCALE)
    if agent.name in ADVANTAGE_WEIGHTED_POLICIES:
        agent = with_toy_value(agent, device_data)
    before = toy_distance(agent)
    agent, history = train_against(agent, critic, device_data, TOY_STEPS)
    return before, toy_distance(agent), history


def test_acting_policy_climbs_a_fixed_critic(trained, against_fixed_critic):
    """The acting policy's Q rises: its distance to the critic's maximum shrinks by at least a fifth
    in 50 updates (by 40% to 98% for the registered agents; with the Q term off, the same updates
    leave it at 0.97-1.05 times the start), and a policy trained without the critic does not move
    towards c by more than a tenth."""
    agent = trained[0]
    before, after, _ = against_fixed_critic
    if agent.name in CRITIC_FREE_POLICIES:
        assert after > 0.9 * before, (agent.name, before, after)
    elif agent.name in CRITIC_COPY_POLICIES:
        assert np.isfinite(after), (agent.name, before, after)
    elif agent.name in ADVANTAGE_WEIGHTED_POLICIES:
        # Reweighting the dataset's chunks moves the policy at most as far as the best of them:
        # measured 0.92 times the start for fawac (tau = 0.8).
        assert after < 0.95 * before, (agent.name, before, after)
    else:
        assert after < 0.8 * before, (agent.name, before, after)


def test_declared_critic_target_losses_fall_against_a_fixed_critic(trained, against_fixed_critic):
    """Each `contract_fixed_critic_losses` metric falls by a fifth from the first 10 of the 50
    updates against the fixed critic to the last 10."""
    agent = trained[0]
    history = against_fixed_critic[2]
    for loss in type(agent).contract_fixed_critic_losses:
        first = float(np.mean([m[loss] for m in history[:10]]))
        last = float(np.mean([m[loss] for m in history[-10:]]))
        assert fell(first, last), (agent.name, loss, first, last)
