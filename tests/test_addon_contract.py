"""The add-on contract: every registered add-on (`qgf.addons.ADDON_NAMES`) obeys it, tested through
the public API only (`train_addon`, `load_addon`, `qgf.guidance.make_sampler` with the add-on's
extras), whatever loop trains it underneath:

- its own loss (ADDON_LOSSES, the metric its `loss` reports) falls by a fifth over 200 steps on tiny
  data, from a fresh initialisation (started from the run's BC flow, cfgrl's flow matching on the
  A > 0 chunks begins near its floor and has little room to fall);
- training is deterministic: two trainings from scratch on two copies of a run are bit-identical;
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
FIRST = {"steps": 20, "batch_size": 32, "log_every": 20, "ckpt_every": 20, "init_from_actor": False}
# resumed to 200 steps; logs at 90, 180 and 200, so the last log line is the mean of steps 181-200
LAST = {"steps": 200, "log_every": 90, "ckpt_every": 200}


def test_every_registered_addon_declares_its_loss():
    assert set(ADDON_LOSSES) == set(ADDON_NAMES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two identical copies of a tiny qgf run (100 steps)."""
    from qgf.train import train

    root = tmp_path_factory.mktemp("addon-contract")
    config = small_config(steps=100, log_every=50, ckpt_every=100)
    train(config, root / "a", dataset=make_dataset(), progress=False)
    shutil.copytree(root / "a", root / "b")
    return root / "a", root / "b"


@pytest.fixture(scope="module", params=ADDON_NAMES)
def trained(request, runs):
    """(name, 20 steps on run a, the same on run b, a resumed to 200 steps, whether a and b's add-on
    states after 20 steps are bit-identical)."""
    name, (a, b) = request.param, runs
    first = train_addon(a, name, overrides=FIRST, dataset=make_dataset(), progress=False)
    again = train_addon(b, name, overrides=FIRST, dataset=make_dataset(), progress=False)
    identical = equal_trees(load_addon(load_run(a), name).state, load_addon(load_run(b), name).state)
    last = train_addon(a, name, overrides=LAST, dataset=make_dataset(), progress=False)
    return name, first, again, last, identical


def test_own_loss_falls_on_tiny_data(trained):
    name, first, _, last, _ = trained
    loss = ADDON_LOSSES[name]
    assert (first.step, last.resumed_from, last.step) == (20, 20, 200)
    assert last.metrics[loss] < 0.8 * first.metrics[loss], (name, first.metrics[loss], last.metrics[loss])


def test_training_is_deterministic(trained):
    name, first, again, _, identical = trained
    assert identical, name
    assert first.metrics[ADDON_LOSSES[name]] == again.metrics[ADDON_LOSSES[name]]


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
