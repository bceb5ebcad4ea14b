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
# Many test modules compile the same small programs (same configs, same shapes): a persistent
# compilation cache compiles each once per worker and reuses it in later local runs (entries are
# keyed by the program, JAX version and flags, so a stale hit cannot happen). One directory per
# xdist worker and checkout: JAX's unbounded cache writes an entry in place and reads it without a
# lock, and a worker that read an entry another process was still writing segfaulted (a CI run
# beside sweeps and another test run). QGF_TEST_JAX_CACHE=0 turns it off.
if os.environ.get("QGF_TEST_JAX_CACHE", "1") != "0":
    import hashlib
    import tempfile

    checkout = hashlib.sha256(os.path.dirname(os.path.abspath(__file__)).encode()).hexdigest()[:8]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    cache = os.path.join(tempfile.gettempdir(), f"qgf-test-jax-cache-{os.getuid()}-{checkout}-{worker}")
    # the controller's setting reaches the workers through the environment: each worker replaces
    # it with its own (a directory the user set is kept)
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ or os.environ.get("QGF_TEST_JAX_CACHE_OURS"):
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
        os.environ["QGF_TEST_JAX_CACHE_OURS"] = "1"
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
sys.path.insert(0, os.path.dirname(__file__))


def pytest_generate_tests(metafunc):
    """`agent_name` runs over the agents that the test module lists in CONTRACT_AGENTS."""
    if "agent_name" in metafunc.fixturenames:
        agents = getattr(metafunc.module, "CONTRACT_AGENTS", ())
        metafunc.parametrize("agent_name", agents, ids=list(agents), scope="module")
    if "td_agent_name" in metafunc.fixturenames:
        agents = getattr(metafunc.module, "TD_CONTRACT_AGENTS", ())
        metafunc.parametrize("td_agent_name", agents, ids=list(agents))
