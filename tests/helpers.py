"""Builders shared by the training tests: a tiny synthetic dataset in OGBench's compact layout and
one small learner config (so the update compiles once per agent and test session)."""

import dataclasses

import jax
import numpy as np

from qgf.config import load_preset


@dataclasses.dataclass
class ArrayDataset:
    """The fields `qgf.training` and `qgf.data.chunks.to_device` read from a dataset."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    masks: np.ndarray
    terminals: np.ndarray
    name: str = "synthetic-v0"
    path: str = "<memory>"
    fingerprint: str = "synthetic"

    @property
    def size(self) -> int:
        return len(self.observations)

    @property
    def num_transitions(self) -> int:
        return self.size - int(self.terminals.sum())


def make_dataset(num_trajectories=6, length=20, obs_dim=4, action_dim=2, success_rows=3, seed=0):
    """Trajectories of `length` rows; the state encodes (progress, trajectory features); actions
    are a fixed smooth function of the state; the last `success_rows` states solve the task
    (reward 0, mask 0), every other state has reward -1."""
    rng = np.random.default_rng(seed)
    progress = np.tile(np.arange(length) / (length - 1), num_trajectories)
    features = np.repeat(rng.normal(size=(num_trajectories, obs_dim - 1)), length, axis=0)
    observations = np.concatenate([progress[:, None], features], axis=1).astype(np.float32)
    projection = rng.normal(size=(obs_dim, action_dim))
    actions = np.tanh(observations @ projection).astype(np.float32) * 0.9
    solved = np.tile(np.arange(length) >= length - success_rows, num_trajectories)
    terminals = np.tile(np.arange(length) == length - 1, num_trajectories)
    return ArrayDataset(
        observations=observations,
        actions=actions,
        rewards=np.where(solved, 0.0, -1.0).astype(np.float32),
        masks=np.where(solved, 0.0, 1.0).astype(np.float32),
        terminals=terminals.astype(np.float32),
    )


# One learner config for every training test in the suite, so the update compiles once per run.
SMALL = {
    "actor_hidden_dims": (32, 32),
    "critic_hidden_dims": (32, 32),
    "batch_size": 64,
    "horizon": 2,
    "discount": 0.9,
    "target_update_rate": 0.05,
}


def small_config(**overrides):
    return load_preset("tiny", {**SMALL, **overrides})


def equal_trees(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def fake_sinks(monkeypatch):
    """Stand-in `tensorboardX` and `wandb` modules that record what the training loop sends them:
    returns {"logdirs", "scalars" [(name, step), ..., ("closed", None)], "wandb_configs",
    "wandb_steps" [step, ..., "finished"]}."""
    import importlib.machinery
    import sys
    import types

    seen = {"logdirs": [], "scalars": [], "wandb_configs": [], "wandb_steps": []}

    class SummaryWriter:
        def __init__(self, logdir):
            seen["logdirs"].append(logdir)

        def add_scalar(self, name, value, step):
            seen["scalars"].append((name, step))

        def close(self):
            seen["scalars"].append(("closed", None))

    class WandbRun:
        def log(self, record, step):
            seen["wandb_steps"].append(step)

        def finish(self):
            seen["wandb_steps"].append("finished")

    def init(**kwargs):
        seen["wandb_configs"].append(kwargs["config"])
        return WandbRun()

    for name, attributes in (("tensorboardX", {"SummaryWriter": SummaryWriter}), ("wandb", {"init": init})):
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    return seen


class SimulatedKill(Exception):
    """What a test raises to stand in for a job killed part-way (SIGKILL leaves no handler to run)."""


def run_killed(monkeypatch, module, name, run, *, before=None, after=None):
    """Run `run()` with `module.name` wrapped to raise SimulatedKill when `before(*args, **kwargs)`
    holds (instead of the call) or `after(...)` holds (once the real call has returned), check that
    the kill happened, and put the real function back."""
    import pytest

    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        if before is not None and before(*args, **kwargs):
            raise SimulatedKill
        out = real(*args, **kwargs)
        if after is not None and after(*args, **kwargs):
            raise SimulatedKill
        return out

    monkeypatch.setattr(module, name, wrapper)
    try:
        with pytest.raises(SimulatedKill):
            run()
    finally:
        monkeypatch.setattr(module, name, real)
