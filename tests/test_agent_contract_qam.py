"""The agent contract (tests/agent_contract.py) for the QAM family (QAM paper §4, App. C)."""

from agent_contract import *  # noqa: F403  (the contract's tests and fixtures)

CONTRACT_AGENTS = ("qam", "bam", "qam-fql", "qam-edit")
