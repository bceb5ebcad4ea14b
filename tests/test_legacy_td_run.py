"""A critic=td run written before td stopped training the IQL value network (tests/fixtures/legacy_td,
written by qgf a5bea95 with its make_fixture.py) still loads, evaluates and resumes, to the numbers
that code computed: its checkpoint's 'value' network is dropped on load, and its policy and Q
continue to the same parameters (to float32 rounding: XLA's kernels round differently on other
CPUs, so bit equality held only on the machine that wrote the fixture).
"""

import importlib.util
import json
import shutil
from pathlib import Path

import flax.serialization
import jax
import numpy as np
import pytest

from qgf import checkpoint as ckpt
from qgf.config import load_preset
from qgf.errors import QGFError

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_td"
pytestmark = pytest.mark.filterwarnings("ignore:log_every=2")


def _fixture_module():
    spec = importlib.util.spec_from_file_location("legacy_td_fixture", FIXTURE / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKER = _fixture_module()
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def same(a, b) -> bool:
    """Equal to float32 rounding. The fixture was written on one CPU under the test session's XLA
    flags (conftest.py); another CPU (a fresh machine: 1.5e-8 apart after the resumed steps) or XLA's
    defaults (QGF_TEST_XLA_DEFAULTS=1) round differently. A changed update rule moves parameters by
    about the learning rate (3e-4) per step, far outside this tolerance."""
    return np.allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def legacy_run():
    return ckpt.load_run(FIXTURE / "run")


def test_loads_without_its_unused_value_network(legacy_run):
    agent = legacy_run.agent
    assert legacy_run.config.critic == "td" and legacy_run.step == 4
    assert set(agent.params) == set(agent.opt_state) == {"actor", "critic"}
    assert set(agent.target_params) == {"critic"}
    assert MAKER.digests(agent) == EXPECTED["loaded"]  # every kept array as stored
    with pytest.raises(QGFError, match="critic=td run has no value network"):
        agent.value(np.zeros((1, agent.obs_dim), np.float32))


def test_evaluates_as_before(legacy_run):
    from qgf.evaluation.run import evaluate_run

    results = evaluate_run(legacy_run, **EXPECTED["evaluation"])
    rows = results.to_dict()["results"]
    assert len(rows) == len(EXPECTED["evaluation_results"])
    for row, expected in zip(rows, EXPECTED["evaluation_results"], strict=True):
        for key in ("sampler", "weight", "episode_return", "episode_success", "episode_length"):
            assert row[key] == expected[key], key
        assert same(row["q_mean"], expected["q_mean"])


def test_resumes_to_the_parameters_the_old_code_reached(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE / "run", run_dir)
    config = load_preset("tiny", {**MAKER.OVERRIDES, "steps": MAKER.RESUMED_STEPS}, warn=False)
    result = MAKER.train(config, run_dir, dataset=MAKER.dataset(), progress=False)
    assert int(result.agent.step) == MAKER.RESUMED_STEPS
    old = flax.serialization.msgpack_restore((FIXTURE / "resumed.msgpack").read_bytes())
    assert "value" in old["params"]  # the old code kept training V
    for part, networks in (("params", ("actor", "critic")), ("target_params", ("critic",))):
        for network in networks:
            new_leaves = jax.tree.leaves(getattr(result.agent, part)[network])
            old_leaves = jax.tree.leaves(old[part][network])
            assert all(same(n, o) for n, o in zip(new_leaves, old_leaves, strict=True)), (part, network)
    written = flax.serialization.msgpack_restore(ckpt.checkpoint_path(run_dir, 6).read_bytes())
    assert set(written["params"]) == {"actor", "critic"}  # new checkpoints hold no V
    assert ckpt.load_run(run_dir).step == MAKER.RESUMED_STEPS
