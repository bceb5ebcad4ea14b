"""Test-session settings: headless MuJoCo, JAX on the CPU, and `tests/` importable (helpers)."""

import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))


def pytest_generate_tests(metafunc):
    """`agent_name` runs over the agents that the test module lists in CONTRACT_AGENTS."""
    if "agent_name" in metafunc.fixturenames:
        agents = getattr(metafunc.module, "CONTRACT_AGENTS", ())
        metafunc.parametrize("agent_name", agents, ids=list(agents), scope="module")
    if "td_agent_name" in metafunc.fixturenames:
        agents = getattr(metafunc.module, "TD_CONTRACT_AGENTS", ())
        metafunc.parametrize("td_agent_name", agents, ids=list(agents))
