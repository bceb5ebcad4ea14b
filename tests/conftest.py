"""Test-session settings: headless MuJoCo, JAX on the CPU, and `tests/` importable (helpers)."""

import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))
