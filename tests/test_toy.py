"""The 1-D toy: its closed-form velocity against a Monte-Carlo posterior expectation, its BC samples
against the mixture's moments, and the paper's qualitative claims through the `qgf toy` command."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from qgf.cli import main
from qgf.toy import TARGET_ACTION, TOY_MIXTURE, mixture_velocity, run_toy


def monte_carlo_velocity(x_t, t, means, stds, probs, rng, draws=400_000):
    """E[x_1 - x_0 | x_t] by self-normalised importance sampling: draw x_1 from the mixture; then
    x_0 = (x_t - t x_1) / (1 - t) is determined, and p(x_1 | x_t) ∝ p(x_1) N(x_0; 0, 1)."""
    component = rng.choice(len(probs), size=draws, p=probs)
    x1 = rng.normal(np.asarray(means)[component], np.asarray(stds)[component])
    x0 = (x_t - t * x1) / (1 - t)
    log_weight = -0.5 * x0**2
    weight = np.exp(log_weight - log_weight.max())
    target = x1 - x0
    estimate = np.sum(weight * target) / np.sum(weight)
    standard_error = np.sqrt(np.sum(weight**2 * (target - estimate) ** 2)) / np.sum(weight)
    return estimate, standard_error


@pytest.mark.parametrize("t", [0.0, 0.2, 0.5, 0.75])
def test_closed_form_velocity_matches_monte_carlo(t):
    rng = np.random.default_rng(0)
    points = np.array([-1.5, -0.7, -0.2, 0.0, 0.3, 0.6, 1.1])
    velocity = mixture_velocity(TOY_MIXTURE)
    analytic = np.asarray(velocity(jnp.zeros((len(points), 1)), jnp.asarray(points)[:, None], jnp.full(7, t)))
    for x, value in zip(points, analytic[:, 0], strict=True):
        estimate, error = monte_carlo_velocity(
            x, t, TOY_MIXTURE.means, TOY_MIXTURE.stds, TOY_MIXTURE.probs, rng
        )
        assert abs(value - estimate) < 4 * error + 1e-3, (x, t, value, estimate, error)


def test_unguided_toy_samples_match_the_mixture_moments():
    means, stds, probs = np.array([-0.8, 0.0, 0.8]), np.array([0.05] * 3), np.array([0.3, 0.4, 0.3])
    assert TOY_MIXTURE.means == tuple(means) and TOY_MIXTURE.probs == tuple(probs)
    mean = np.sum(probs * means)
    std = np.sqrt(np.sum(probs * (stds**2 + means**2)) - mean**2)
    (bc,) = run_toy(samples=4000, estimators=("none",))["results"]
    assert bc["weight"] == 0.0
    assert abs(bc["mean"] - mean) < 0.03
    assert abs(bc["std"] - std) < 0.02
    np.testing.assert_allclose(bc["mode_fractions"], probs, atol=0.03)


def test_toy_command_reproduces_the_papers_qualitative_claims(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["toy", "--out", str(out), "--samples", "300", "--weights", "8,16"]) == 0
    table = capsys.readouterr().out
    assert "qgf-chain" in table and "mean" in table
    payload = json.loads((out / "toy.json").read_text())
    rows = {(r["estimator"], r["weight"]): r for r in payload["results"]}
    for r in payload["results"]:
        assert {"estimator", "weight", "mean_abs_error", "mean", "std"} <= set(r)
    assert set(e for e, _ in rows) == {"none", "ood", "bptt", "qgf", "qgf-jacobian", "qgf-chain"}
    assert rows[("none", 0.0)]["mean_abs_error"] > 0.5
    # QGF and BPTT end near a*; OOD ends biased away from it (all its samples land above a*).
    assert rows[("qgf", 8.0)]["mean_abs_error"] < 0.02
    assert rows[("bptt", 16.0)]["mean_abs_error"] < 0.15
    for weight in (8.0, 16.0):
        assert rows[("ood", weight)]["mean"] - TARGET_ACTION > 0.05
        assert rows[("ood", weight)]["mean_abs_error"] > 5 * rows[("qgf", weight)]["mean_abs_error"]
    assert rows[("bptt", 16.0)]["max_abs_trajectory"] > 20  # the instability: paths leave far away
    for name in (
        "toy_trajectories.png",
        "toy_histograms.png",
        "toy_error_vs_weight.png",
        "toy_bptt_instability.png",
    ):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp"))
