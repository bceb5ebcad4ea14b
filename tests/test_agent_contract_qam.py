"""The agent contract (tests/agent_contract.py) for the QAM family (QAM paper §4, App. C)."""

from agent_contract import *  # noqa: F403  (the contract's tests and fixtures)

CONTRACT_AGENTS = ("qam", "bam", "qam-fql", "qam-edit")
# td critic: the residual flow's ODE (qam); the others' own policies are sampled by the IQL contract
TD_CONTRACT_AGENTS = ("qam",)
