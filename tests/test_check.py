"""qgf check (qgf.analysis.trust): the spreads and disagreements against numpy recomputations from
the run's own heads, and the verdict rules."""

import jax
import numpy as np

from qgf import checkpoint
from qgf.analysis.trust import FLAT_RATIO, format_report, trust_report, verdict
from test_deploy import OBS_DIM, observations, write_run


def test_verdicts_follow_the_documented_thresholds():
    assert "nearly flat in the action" in verdict(0.1, FLAT_RATIO / 2, 5.0, 5.0)
    assert verdict(1.0, 0.5, 2.5, 0.5).startswith("w=1: guidance leaves the data (NN distance 2.50x")
    assert "leaves the data" in verdict(1.0, 0.5, 1.0, 2.5)
    assert verdict(0.03, 0.5, 1.1, 0.9).startswith("w=0.03: guided actions stay near the data")


def test_trust_report_on_a_run(tmp_path):
    run = checkpoint.load_run(write_run(tmp_path / "run"))
    obs = observations(8, seed=2)
    chunks = np.random.default_rng(3).uniform(-1, 1, size=(8, 4)).astype(np.float32)
    report = trust_report(run, obs, chunks, chunks, [0.0, 0.5], samples=4)
    heads = np.asarray(run.agent.q_heads_fn(obs, chunks), np.float64)  # (K, B)
    assert heads.shape[0] == run.config.num_critics
    np.testing.assert_allclose(report["disagreement_dataset_median"], np.median(heads.std(axis=0)), rtol=1e-5)
    assert report["suggested_gate"] == report["disagreement_dataset_q50"]
    assert report["q_action_over_state"] == report["q_action_spread"] / report["q_state_spread"]
    assert [row["weight"] for row in report["weights"]] == [0.0, 0.5]
    # the dataset chunks are the reference set: their own NN distance is 0, BC's is positive
    assert report["bc_nn_distance_median"] > 0
    assert all(row["verdict"].startswith(f"w={row['weight']:g}: ") for row in report["weights"])
    assert "suggested --gate" in format_report(report) and OBS_DIM == obs.shape[1]
    assert jax.default_backend() == "cpu"
