"""The agent contract (tests/agent_contract.py) for the QAM paper's guidance and post-processing
baselines (QAM App. C): the CGQL family, DSRL and FEdit."""

from agent_contract import *  # noqa: F403  (the contract's tests and fixtures)

CONTRACT_AGENTS = ("cgql", "cgql-mse", "cgql-linex", "dsrl", "fedit")
# td critic: a flow whose every Euler step reads the critic's gradient (cgql) and a flow driven by
# a learned noise policy (dsrl); fedit's edited action is sampled by the IQL contract
TD_CONTRACT_AGENTS = ("cgql", "dsrl")
