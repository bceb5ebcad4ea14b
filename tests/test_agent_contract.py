"""The agent contract (tests/agent_contract.py) for the QGF agent and the training-time baselines
of QGF Fig. 5; tests/test_agent_contract_qam.py runs it for the QAM family."""

from agent_contract import *  # noqa: F403  (the contract's tests and fixtures)
from qgf.agents import AGENT_NAMES

CONTRACT_AGENTS = ("qgf", "fql", "edp", "dac", "qsm-bc")
# td critic: a flow ODE (qgf, i.e. QFQL) and a one-step policy (fql); each policy kind's sampling
# itself is covered by the IQL contract, the td backup's math by tests/test_losses.py
TD_CONTRACT_AGENTS = ("qgf", "fql")


def test_the_contract_files_cover_every_registered_agent():
    import test_agent_contract_qam

    covered = CONTRACT_AGENTS + test_agent_contract_qam.CONTRACT_AGENTS
    assert sorted(covered) == sorted(AGENT_NAMES)
