"""Test-session settings: headless MuJoCo, JAX on the CPU (compiling fast), `tests/` importable."""

import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests check math and behaviour, not speed (bench/ measures speed with XLA's defaults): compiling
# with LLVM's cheapest settings cuts the suite's compile time by about a third on 2 cores. Set
# QGF_TEST_XLA_DEFAULTS=1 to test the default compiler settings instead.
if not os.environ.get("QGF_TEST_XLA_DEFAULTS"):
    fast_compile = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {fast_compile}".strip()
sys.path.insert(0, os.path.dirname(__file__))


def pytest_generate_tests(metafunc):
    """`agent_name` runs over the agents that the test module lists in CONTRACT_AGENTS."""
    if "agent_name" in metafunc.fixturenames:
        agents = getattr(metafunc.module, "CONTRACT_AGENTS", ())
        metafunc.parametrize("agent_name", agents, ids=list(agents), scope="module")
    if "td_agent_name" in metafunc.fixturenames:
        agents = getattr(metafunc.module, "TD_CONTRACT_AGENTS", ())
        metafunc.parametrize("td_agent_name", agents, ids=list(agents))
