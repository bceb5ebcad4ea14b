"""The add-on contract: every registered add-on (`qgf.addons.ADDON_NAMES`) obeys it, tested through
the public API only (`train_addon` with its `on_log`, `load_addon`, `qgf.guidance.make_sampler` with
the add-on's extras), whatever loop trains it underneath:

- its own loss (ADDON_LOSSES, the metric its `loss` reports) falls by a fifth from the first log
  line (steps 1-20) to the last (181-200) of 200 steps on tiny data, from a fresh initialisation
  (started from the run's BC flow, cfgrl's flow matching on the A > 0 chunks begins near its floor
  and has little room to fall);
- training is deterministic: two trainings from scratch on two copies of a run give bit-identical
  states and log lines (the same settings, so one compiled program serves both);
- every sampler it enables runs with its extras: finite chunks in [-1, 1] of the run's chunk size,
  and its weight moves them (weight 0 is the unguided flow).

The base run trains 100 steps, so that its critic calls some chunks optimal (A = Q - V > 0: about
a tenth; after 20 steps none is, and cfgrl would have nothing to learn). Batch size 32 as in
tests/test_addons.py, so the add-ons' compiled programs are shared through the compilation cache.
"""

import shutil

import jax
import numpy as np
import pytest

from helpers import equal_trees, make_dataset, small_config
from qgf.addons import ADDON_NAMES, addon_class
from qgf.addons.base import load_addon, train_addon
from qgf.checkpoint import load_run
from qgf.guidance import SamplerSpec, make_sampler

# The metric of each add-on's own loss.
ADDON_LOSSES = {"robustq": "robustq_loss", "cfgrl": "cfgrl_loss", "distill": "distill_loss"}
SETTINGS = {"steps": 200, "batch_size": 32, "log_every": 20, "ckpt_every": 200, "init_from_actor": False}


def test_every_registered_addon_declares_its_loss():
    assert set(ADDON_LOSSES) == set(ADDON_NAMES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two identical copies of a tiny qgf run (100 steps)."""
    from qgf.training import train

    root = tmp_path_factory.mktemp("addon-contract")
    config = small_config(steps=100, log_every=50, ckpt_every=100)
    train(config, root / "a", dataset=make_dataset(), progress=False)
    shutil.copytree(root / "a", root / "b")
    return root / "a", root / "b"


@pytest.fixture(scope="module", params=ADDON_NAMES)
def trained(request, runs):
    """(name, [(result, log lines)] of the add-on trained from scratch on each copy)."""
    name, trainings = request.param, []
    for run_dir in runs:
        lines = []
        result = train_addon(
            run_dir, name, overrides=SETTINGS, dataset=make_dataset(), progress=False, on_log=lines.append
        )
        trainings.append((result, lines))
    return name, trainings


def test_own_loss_falls_on_tiny_data(trained):
    name, [(result, lines), _] = trained
    loss = ADDON_LOSSES[name]
    assert result.step == 200 and [line["step"] for line in lines] == list(range(20, 201, 20))
    first, last = lines[0][loss], lines[-1][loss]
    assert last < 0.8 * first, (name, first, last)


def test_training_is_deterministic(trained, runs):
    name, [(_, lines_a), (_, lines_b)] = trained
    states = [load_addon(load_run(run_dir), name).state for run_dir in runs]
    assert equal_trees(*states), name
    loss = ADDON_LOSSES[name]
    assert [line[loss] for line in lines_a] == [line[loss] for line in lines_b]


def test_the_samplers_it_enables_run(trained, runs):
    name = trained[0]
    run = load_run(runs[0])
    agent = run.agent
    extras = load_addon(run, name).extras(agent)
    observations = np.asarray(make_dataset().observations[::15])
    for sampler in addon_class(name).samplers:
        spec = SamplerSpec(sampler, steps=run.config.flow_steps)
        sample = make_sampler(agent.behavior_velocity_fn, agent.q_fn, agent.chunk_dim, spec, extras=extras)
        unguided, guided = (np.asarray(sample(observations, jax.random.key(0), w)) for w in (0.0, 1.0))
        assert guided.shape == (len(observations), agent.chunk_dim), sampler
        assert np.all(np.isfinite(guided)) and np.all(np.abs(guided) <= 1.0), sampler
        assert not np.allclose(unguided, guided), sampler
