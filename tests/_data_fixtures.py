"""Fixtures and builders shared by the data tests (import them into a test module to use them)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

TINY_LENGTH = 40  # steps per generated episode: long enough for an oracle to move, short enough to be fast
TINY_EPISODES = 3
TINY_VAL_EPISODES = 1


@pytest.fixture(scope="session")
def generated_dir(tmp_path_factory) -> str:
    """A tiny cube-double play dataset (3 train + 1 val episodes of 40 steps) made by `qgf.data.generate`.

    Each test module that imports this fixture gets its own copy of it, so the data is generated once
    per session at a fixed path and reused.
    """
    from qgf.data import generate

    out = str(tmp_path_factory.getbasetemp() / "qgf-data-generated")
    if os.path.exists(os.path.join(out, "cube-double-play-v0.npz")):
        return out
    generate(
        "cube-double-play-v0",
        out,
        episodes=TINY_EPISODES,
        val_episodes=TINY_VAL_EPISODES,
        episode_length=TINY_LENGTH,
        seed=7,
        workers=1,
        progress=False,
    )
    return out


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if anything tries to open a network connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def synthetic_arrays(
    lengths=(4, 5), observation_dim: int = 37, action_dim: int = 5, seed: int = 0, qpos_dim: int = 28
) -> dict[str, np.ndarray]:
    """OGBench-layout arrays for trajectories of the given lengths (terminal on each last row)."""
    rng = np.random.default_rng(seed)
    size = int(sum(lengths))
    terminals = np.zeros(size, bool)
    terminals[np.cumsum(lengths) - 1] = True
    return {
        "observations": rng.normal(size=(size, observation_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(size, action_dim)).astype(np.float32),
        "terminals": terminals,
        "qpos": rng.normal(size=(size, qpos_dim)).astype(np.float32),
        "qvel": rng.normal(size=(size, qpos_dim - 2)).astype(np.float32),
    }


def write_npz(path, arrays: dict[str, np.ndarray]) -> str:
    np.savez_compressed(path, **arrays)
    return str(path)
