"""Gated guidance (SamplerSpec.gate): w_eff = w * min(1, (kappa / delta)^2), delta = the critic
heads' std at the clipped one-step estimate; checked against a numpy float64 hand computation of
the whole sampler with closed-form velocity and critic heads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf.errors import QGFError
from qgf.guidance import SamplerSpec, sample_with_info
from qgf.guidance.sampler import ensemble_disagreement, gate_factor

OBS_DIM, D, B, T = 3, 4, 5, 3
RNG = np.random.default_rng(0)
W_OBS = RNG.normal(size=(OBS_DIM, D))
W_A = RNG.normal(size=(D, D)) * 0.5
CENTRES = np.stack([np.full(D, 0.3), np.full(D, -0.2)])  # head k: -|a - c_k|^2 * s_k
SCALES = np.array([1.0, 2.5])


def velocity_hand(obs, a, t):
    return np.tanh(obs @ W_OBS + a @ W_A) - a * t[:, None]


def heads_hand(obs, a):  # (K, B)
    return np.stack([-SCALES[k] * ((a - CENTRES[k]) ** 2).sum(-1) + obs.sum(-1) for k in range(2)])


def velocity_fn(obs, a, t):
    return (
        jnp.tanh(obs @ jnp.asarray(W_OBS, jnp.float32) + a @ jnp.asarray(W_A, jnp.float32)) - a * t[:, None]
    )


def q_heads(obs, a):
    centres, scales = jnp.asarray(CENTRES, jnp.float32), jnp.asarray(SCALES, jnp.float32)
    return -scales[:, None] * jnp.sum((a[None] - centres[:, None]) ** 2, axis=-1) + obs.sum(-1)[None]


def q_fn(obs, a):
    # mean aggregation: XLA's CPU backend at the test suite's -O0 (tests/conftest.py) returned inf
    # for grad(min over heads) of this function, while -O2 and the hand computation agree
    return jnp.mean(q_heads(obs, a), axis=0)


def gated_qgf_by_hand(obs, noise, weight, kappa):
    """Algorithm 1 with QGF's g = grad Q(clip(a_1_hat)) (Eq. 9) and the gated weight, float64."""
    a = noise.astype(np.float64)
    for k in range(T):
        t = np.full(B, k / T)
        v = velocity_hand(obs, a, t)
        a1_hat = np.clip(a + (1 - t)[:, None] * v, -1, 1)
        heads = heads_hand(obs, a1_hat)
        g = np.mean([-2 * SCALES[k] * (a1_hat - CENTRES[k]) for k in range(2)], axis=0)
        delta = heads.std(axis=0)
        w_eff = weight * np.minimum(1.0, (kappa / delta) ** 2) if kappa else np.full(B, weight)
        a = a + (v + w_eff[:, None] * g) / T
    return np.clip(a, -1, 1)


def test_gate_factor_by_hand():
    kappa = 0.4
    delta = np.array([0.0, 0.2, 0.4, 0.8, 4.0])
    np.testing.assert_allclose(
        np.asarray(gate_factor(jnp.asarray(delta, jnp.float32), kappa)), [1, 1, 1, 0.25, 0.01], rtol=1e-6
    )
    obs, a = RNG.normal(size=(B, OBS_DIM)), RNG.uniform(-1, 1, size=(B, D))
    np.testing.assert_allclose(
        np.asarray(ensemble_disagreement(q_heads, *(jnp.asarray(x, jnp.float32) for x in (obs, a)))),
        np.abs(np.subtract(*heads_hand(obs, a))) / 2,  # two heads: std = |Q1 - Q2| / 2
        rtol=1e-5,
    )


@pytest.mark.parametrize("kappa", [0.0, 0.3, 2.0, 50.0])
def test_gated_sampler_matches_the_hand_computation(kappa):
    rng = np.random.default_rng(1)
    obs, noise = rng.normal(size=(B, OBS_DIM)), rng.normal(size=(B, D))
    weights = np.array([0.0, 0.1, 0.5, 1.0, 3.0])
    spec = SamplerSpec("qgf", steps=T, gate=kappa)
    actions, _ = sample_with_info(
        velocity_fn,
        q_fn,
        jnp.asarray(obs, jnp.float32),
        jax.random.key(0),
        jnp.asarray(weights, jnp.float32),
        spec,
        D,
        noise=jnp.asarray(noise, jnp.float32),
        extras={"q_heads": q_heads},
    )
    np.testing.assert_allclose(np.asarray(actions), gated_qgf_by_hand(obs, noise, weights, kappa), atol=2e-5)


def test_the_gate_bites_between_no_guidance_and_full_guidance():
    rng = np.random.default_rng(2)
    obs, noise = rng.normal(size=(B, OBS_DIM)), rng.normal(size=(B, D))
    by_hand = {k: gated_qgf_by_hand(obs, noise, np.full(B, 2.0), k) for k in (0.0, 0.3)}
    bc = gated_qgf_by_hand(obs, noise, np.zeros(B), 0.0)
    # a gated step is a shorter step towards the critic: strictly between BC and ungated QGF here
    assert np.linalg.norm(by_hand[0.3] - bc) < np.linalg.norm(by_hand[0.0] - bc)
    assert np.linalg.norm(by_hand[0.3] - bc) > 1e-3


def test_gate_settings_and_missing_ensemble_are_one_line_errors():
    assert SamplerSpec("qgf", gate=0.5).label == "qgf+gate-0.5"
    assert SamplerSpec("qgf-jacobian", best_of_n=4, gate=0.25).label == "qgf-jacobian+gate-0.25+bfn-4"
    for bad in (-1.0, float("inf"), True):
        with pytest.raises(QGFError, match=r"SamplerSpec.gate must be a finite number >= 0"):
            SamplerSpec("qgf", gate=bad)
    for name in ("none", "gradstep", "policy"):
        with pytest.raises(QGFError, match=rf"sampler '{name}' has none"):
            SamplerSpec(name, gate=0.5)
    obs = jnp.zeros((2, OBS_DIM))
    with pytest.raises(QGFError, match=r"needs extras\['q_heads'\], Q_k\(s, a\) -> \(K, B\)"):
        sample_with_info(
            velocity_fn, q_fn, obs, jnp.zeros(2, jnp.uint32), 1.0, SamplerSpec("qgf", gate=0.5), D
        )


def test_evaluate_gate_adds_a_gated_spec_after_each_guided_sampler():
    from qgf.commands.evaluate import with_gate

    expanded = with_gate(["none", "qgf", "ood"], [1, 4], 10, 0.3)
    assert expanded[:2] == ["none", "qgf"] and expanded[4] == "ood"
    assert [s.label for s in expanded[2:4]] == ["qgf+gate-0.3", "qgf+gate-0.3+bfn-4"]
    assert expanded[5].label == "ood+gate-0.3" and expanded[5].steps == 10
    for samplers, gate, message in [(["none"], 0.3, "--gate gates guided samplers"), (["qgf"], 0.0, "> 0")]:
        with pytest.raises(QGFError, match=message):
            with_gate(samplers, [1], 10, gate)
