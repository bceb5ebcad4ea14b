"""The agent contract (tests/agent_contract.py) for the QAM paper's ReBRAC, FBRAC, FAWAC and IFQL."""

from agent_contract import *  # noqa: F403  (the contract's tests and fixtures)

CONTRACT_AGENTS = ("rebrac", "fbrac", "fawac", "ifql")
# td critic: ReBRAC's smoothed target actor (the one new kind of backup); the others back up on a
# flow ODE (covered by qgf) or best-of-N of one (their sampling is covered by the IQL contract)
TD_CONTRACT_AGENTS = ("rebrac",)
