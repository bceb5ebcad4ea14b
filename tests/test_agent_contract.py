"""The agent contract (tests/agent_contract.py) for the QGF agent and the training-time baselines
of QGF Fig. 5; tests/test_agent_contract_qam.py runs it for the QAM family."""

import jax
import jax.numpy as jnp
import numpy as np

from agent_contract import *  # noqa: F403  (the contract's tests and fixtures)
from agent_contract import ACTION_DIM, OBS_DIM, TOY_CENTER, TOY_SCALE, config_for
from qgf.agents import AGENT_NAMES
from qgf.critics import critic_for
from toy_critic import toy_critic_params, toy_q

CONTRACT_AGENTS = ("qgf", "fql", "edp", "dac", "qsm-bc")
# td critic: a flow ODE (qgf, i.e. QFQL) and a one-step policy (fql); each policy kind's sampling
# itself is covered by the IQL contract, the td backup's math by tests/test_losses.py
TD_CONTRACT_AGENTS = ("qgf", "fql")


def test_the_contract_files_cover_every_registered_agent():
    import test_agent_contract_baselines
    import test_agent_contract_baselines_a
    import test_agent_contract_qam
    import test_agent_rlpd

    covered = CONTRACT_AGENTS + test_agent_contract_qam.CONTRACT_AGENTS + test_agent_rlpd.CONTRACT_AGENTS
    covered += test_agent_contract_baselines_a.CONTRACT_AGENTS + test_agent_contract_baselines.CONTRACT_AGENTS
    assert sorted(covered) == sorted(AGENT_NAMES)


def test_the_toy_critic_network_computes_the_analytic_q():
    """tests/toy_critic.py's parameters make the shared critic network compute its Q exactly (to
    float32 rounding), in every head, whatever the observation."""
    config = config_for("qgf", "iql")
    critic, chunk = critic_for(config.learner_config()), config.horizon * ACTION_DIM
    template = jax.eval_shape(
        lambda: critic.init_params(jax.random.key(0), jnp.zeros((1, OBS_DIM)), jnp.zeros((1, chunk)))
    )["critic"]
    params = toy_critic_params(template, OBS_DIM, TOY_CENTER, TOY_SCALE)
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(64, OBS_DIM)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(64, chunk)).astype(np.float32)
    q = np.asarray(jax.jit(critic.q_heads)(params, observations, actions))
    assert q.shape == (config.num_critics, 64)
    expected = np.broadcast_to(toy_q(actions, TOY_CENTER, TOY_SCALE), q.shape)
    np.testing.assert_allclose(q, expected, rtol=2e-6, atol=2e-4)
