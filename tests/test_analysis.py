"""qgf.analysis against answers known without it: hand-derived flows and critics, brute-force numpy,
hand FLOP arithmetic, and the data module's own notion of a valid chunk."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf.analysis.claims import paper_orderings
from qgf.analysis.compute import analytic_flops, dense_flops, network_costs, xla_flops
from qgf.analysis.distances import action_chunks, distance_report, nearest_neighbour_distances
from qgf.analysis.methods import (
    DEFAULT_GRADSTEP_STEP_SIZE,
    PAPER_ESTIMATORS,
    AnalysisSettings,
    Method,
    PolicyAndCritic,
    comparison_methods,
)
from qgf.analysis.noise import bc_denoising_path, cosine_similarity, estimator_gradient_fn, noise_sensitivity
from qgf.analysis.qvalues import method_noise, method_sampler, q_value_report
from qgf.analysis.run import analyze
from qgf.data.chunks import complete_chunk_starts
from qgf.errors import QGFError
from qgf.guidance import SamplerSpec

OBS_DIM, ACTION_DIM = 3, 4
KEYS = jax.random.split(jax.random.key(42), 8)
ACTOR_IN = 0.8 * jax.random.normal(KEYS[0], (OBS_DIM + ACTION_DIM + 1, 16))
ACTOR_OUT = 0.8 * jax.random.normal(KEYS[1], (16, ACTION_DIM))
TARGET = jnp.array([0.3, -0.2, 0.5, -0.6])  # a*, inside [-1, 1]
SLOPE = jnp.array([1.0, -2.0, 0.5, 0.25])


def nonlinear_velocity(obs, a, t):
    """A velocity field whose Jacobian in a changes with a (so Jacobian estimators see noise)."""
    x = jnp.concatenate([obs, a, t[:, None]], axis=1)
    return jnp.tanh(x @ ACTOR_IN) @ ACTOR_OUT


def zero_velocity(obs, a, t):
    return jnp.zeros_like(a)


PULL_TOWARD = jnp.array([-0.4, 0.1, 0.2, 0.0])


def pull_velocity(obs, a, t):
    """v = b - a: linear in a, so every estimator's g has a closed form."""
    return PULL_TOWARD - a


def linear_q(obs, a):
    """Q = c . a: its gradient is c everywhere."""
    return a @ SLOPE


def quadratic_q(obs, a):
    """Q = -|a - a*|^2 / 2: gradient a* - a, maximum 0 at a*."""
    return -0.5 * jnp.sum((a - TARGET) ** 2, axis=1)


def observations(batch, seed=0):
    return jax.random.normal(jax.random.key(seed), (batch, OBS_DIM))


# ----------------------------------------------------------------------------------------------- Fig. 3


def test_cosine_similarity_matches_numpy_and_zero_rows_give_zero():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    x[2] = 0.0
    y[4] = -3.0 * x[4]
    expected = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-300)
    expected[2] = 0.0
    got = np.asarray(cosine_similarity(jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got[4] == pytest.approx(-1.0, abs=1e-6)


def make_path(batch=8, steps=5, seed=1):
    return jax.random.normal(jax.random.key(seed), (steps + 1, batch, ACTION_DIM))


def test_constant_gradient_has_cosine_exactly_one_at_every_t_and_scale():
    path = make_path()
    constant = {"constant": lambda obs, a, t, key: jnp.broadcast_to(SLOPE, a.shape)}
    report = noise_sensitivity(constant, path, observations(8), (0.01, 0.3, 3.0), jax.random.key(0))
    mean = np.asarray(report["estimators"]["constant"]["mean"])
    assert mean.shape == (3, 5)
    np.testing.assert_allclose(mean, 1.0, atol=1e-6)
    assert report["flow_times"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])


def test_gradient_that_flips_off_the_path_has_cosine_minus_one():
    # g = c exactly on the path, -c anywhere else: every perturbed point must be off the path.
    path = make_path()
    steps = path.shape[0] - 1

    def flip(obs, a, t, key):
        on_path = jnp.all(a == path[jnp.round(t[0] * steps).astype(int)], axis=1, keepdims=True)
        return jnp.where(on_path, SLOPE, -SLOPE)

    report = noise_sensitivity({"flip": flip}, path, observations(8), (0.05,), jax.random.key(3))
    np.testing.assert_allclose(report["estimators"]["flip"]["mean"], -1.0, atol=1e-6)
    assert report["estimators"]["flip"]["overall"] == pytest.approx(-1.0, abs=1e-6)


def test_identity_gradient_loses_alignment_as_the_noise_grows():
    path = make_path(batch=64)
    identity = {"identity": lambda obs, a, t, key: a}
    report = noise_sensitivity(identity, path, observations(64), (0.01, 1.0, 10.0), jax.random.key(0))
    small, medium, large = report["estimators"]["identity"]["mean_over_t"]
    assert small > 0.999 and small > medium > large


def test_real_estimators_with_a_linear_critic():
    """With Q = c . a every estimator that takes the critic gradient without a Jacobian returns c
    exactly, so its cosine is 1; those that chain through a nonlinear flow do not."""
    model = PolicyAndCritic(nonlinear_velocity, linear_q, ACTION_DIM, SamplerSpec(steps=4))
    obs = observations(16)
    path = bc_denoising_path(model, obs, jax.random.normal(jax.random.key(5), (16, ACTION_DIM)))
    assert path.shape == (5, 16, ACTION_DIM)
    names = ("qgf", "qgf-chain", "ood", "qgf-jacobian", "bptt")
    fns = {name: estimator_gradient_fn(model, name) for name in names}
    report = noise_sensitivity(fns, path, obs, (0.3,), jax.random.key(0))["estimators"]
    for name in ("qgf", "qgf-chain", "ood"):
        np.testing.assert_allclose(report[name]["mean"], 1.0, atol=1e-6)
    for name in ("qgf-jacobian", "bptt"):
        assert report[name]["overall"] < 1.0 - 1e-4


def test_bc_path_is_the_hand_written_euler_loop():
    model = PolicyAndCritic(pull_velocity, quadratic_q, ACTION_DIM, SamplerSpec(steps=4))
    noise = jax.random.normal(jax.random.key(2), (3, ACTION_DIM))
    path = np.asarray(bc_denoising_path(model, observations(3), noise))
    a = np.asarray(noise, np.float64)
    b = np.array([-0.4, 0.1, 0.2, 0.0])
    np.testing.assert_allclose(path[0], a, atol=1e-6)
    for k in range(4):
        a = a + (b - a) / 4
        np.testing.assert_allclose(path[k + 1], a, atol=1e-5)


# ----------------------------------------------------------------------------------------------- Fig. 4


def hand_guided_final_action(a0, estimator, weight, steps, b):
    """Algorithm 1 with v = b - a and Q = -|a - a*|^2 / 2, the g's derived by hand:
    â₁ = a + (1 - t)(b - a) = t a + (1 - t) b, so J = dâ₁/da = t I;
    qgf: a* - â₁; qgf-jacobian: t (a* - â₁); ood: a* - a."""
    a, target = np.asarray(a0, np.float64), np.asarray(TARGET, np.float64)
    for k in range(steps):
        t = k / steps
        a1_hat = t * a + (1 - t) * b
        g = {"qgf": target - a1_hat, "qgf-jacobian": t * (target - a1_hat), "ood": target - a}[estimator]
        a = a + ((b - a) + weight * g) / steps
    return np.clip(a, -1, 1)


@pytest.mark.parametrize("estimator", ["qgf", "qgf-jacobian", "ood"])
def test_final_action_q_matches_hand_computation(estimator):
    steps, weight, b = 5, 0.7, np.array([-0.4, 0.1, 0.2, 0.0])
    model = PolicyAndCritic(pull_velocity, quadratic_q, ACTION_DIM, SamplerSpec(steps=steps))
    method = Method(estimator, SamplerSpec(estimator, steps=steps), weight)
    noise = jax.random.uniform(jax.random.key(9), (6, 1, ACTION_DIM), minval=-0.5, maxval=0.5)
    obs = observations(6)
    sampler = method_sampler(model, method)
    actions = np.asarray(sampler(obs, method_noise(method, noise), jax.random.key(0), jnp.full((6,), weight)))
    expected = hand_guided_final_action(np.asarray(noise[:, 0]), estimator, weight, steps, b)
    np.testing.assert_allclose(actions, expected, atol=1e-5)
    q = {"bc": np.zeros(6), estimator: np.asarray(quadratic_q(obs, jnp.asarray(actions)))}
    report = q_value_report(q, "bc", "bc", {estimator: weight})
    expected_q = -0.5 * np.sum((expected - np.asarray(TARGET)) ** 2, axis=1)
    assert report["methods"][estimator]["mean"] == pytest.approx(expected_q.mean(), abs=1e-5)
    assert report["methods"][estimator]["weight"] == weight


def test_q_value_report_paired_differences():
    q = {
        "bc": np.array([1.0, 2.0, 3.0]),
        "bfn-4": np.array([2.0, 2.0, 5.0]),
        "qgf": np.array([1.5, 2.5, 3.5]),
    }
    report = q_value_report(q, "bfn-4", "bc", {"qgf": 0.1})
    qgf = report["methods"]["qgf"]
    assert qgf["mean"] == pytest.approx(2.5)
    assert qgf["minus_reference"]["mean"] == pytest.approx((-0.5 + 0.5 - 1.5) / 3)
    assert qgf["minus_baseline"]["mean"] == pytest.approx(0.5)
    assert qgf["minus_baseline"]["stderr"] == pytest.approx(0.0)  # the same gain on every row
    assert qgf["std"] == pytest.approx(np.std([1.5, 2.5, 3.5], ddof=1))


# ---------------------------------------------------------------------------------------------- Fig. 17


def test_nearest_neighbour_distances_match_brute_force():
    rng = np.random.default_rng(0)
    references = rng.normal(size=(50, 4)).astype(np.float32)
    queries = rng.normal(size=(7, 4)).astype(np.float32)
    queries[3] = references[17]  # an exact hit must give exactly 0
    brute = np.sqrt(((queries[:, None, :] - references[None]) ** 2).sum(-1)).min(axis=1)
    for block_size in (8, 50, 64):  # several blocks with a padded last one; one block; one larger block
        got = nearest_neighbour_distances(queries, references, block_size=block_size)
        np.testing.assert_allclose(got, brute, rtol=1e-5, atol=1e-6)
        assert got[3] == 0.0


def test_distance_to_bfn_is_zero_for_bfn_itself_and_exact_for_others():
    rng = np.random.default_rng(1)
    bfn, other = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    chunks = rng.normal(size=(20, 3)).astype(np.float32)
    report = distance_report({"bfn-16": bfn, "qgf": other}, "bfn-16", chunks, no_nearest_neighbour=["qgf"])
    assert report["methods"]["bfn-16"]["to_reference"]["mean"] == 0.0
    assert report["methods"]["qgf"]["to_reference"]["mean"] == pytest.approx(
        np.linalg.norm(other - bfn, axis=1).mean()
    )
    assert "nearest_dataset" not in report["methods"]["qgf"]
    assert report["dataset_chunks"] == 20


def test_valid_chunk_starts_by_hand():
    # Two trajectories: rows 0-2 (terminal row 2) and rows 3-6 (terminal row 6).
    terminals = np.array([0, 0, 1, 0, 0, 0, 1], np.float32)
    np.testing.assert_array_equal(complete_chunk_starts(terminals, 2), [0, 3, 4])
    np.testing.assert_array_equal(complete_chunk_starts(terminals, 1), [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(complete_chunk_starts(terminals, 4), [])
    actions = np.arange(14, dtype=np.float32).reshape(7, 2)
    np.testing.assert_array_equal(action_chunks(actions, np.array([3]), 2), [[6, 7, 8, 9]])


def test_valid_chunk_starts_agree_with_the_training_sampler():
    from qgf.data import chunks

    rng = np.random.default_rng(4)
    terminals = (rng.random(300) < 0.05).astype(np.float32)
    terminals[-1] = 1.0
    horizon = 5
    device = {"trajectory_end": jnp.asarray(chunks.trajectory_ends(terminals), jnp.int32),
              "actions": jnp.zeros((300, 1)), "observations": jnp.zeros((300, 1)),
              "rewards": jnp.zeros(300), "masks": jnp.ones(300)}  # fmt: skip
    candidates = np.flatnonzero(np.arange(300) < chunks.trajectory_ends(terminals))
    batch = chunks.gather_chunks(device, jnp.asarray(candidates), horizon, 0.99)
    fully_valid = candidates[np.asarray(batch["valid"]).all(axis=1)]
    np.testing.assert_array_equal(complete_chunk_starts(terminals, horizon), fully_valid)


# ----------------------------------------------------------------------------------------------- Fig. 6


def mlp(x, sizes=(6, 32, 16, 3)):
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        x = jnp.tanh(x @ jnp.ones((n_in, n_out)) / n_in)
    return x


def test_dense_flops_of_a_known_mlp_by_hand():
    per_row = 2 * (6 * 32 + 32 * 16 + 16 * 3)  # = 1504
    assert per_row == 1504
    assert dense_flops(mlp, jnp.ones((1, 6))) == 1504
    assert dense_flops(mlp, jnp.ones((4, 6))) == 4 * 1504
    # backward to the input only: one transposed product per layer, the same FLOPs as forward
    assert dense_flops(jax.grad(lambda x: mlp(x).sum()), jnp.ones((1, 6))) == 2 * 1504
    # a 3-member ensemble (vmapped weights -> batched dot_general), a scan of 5, and dead code
    weights = jnp.ones((3, 6, 32))
    assert (
        dense_flops(lambda x: jnp.einsum("bi,kio->kbo", x, weights), jnp.ones((2, 6))) == 3 * 2 * 2 * 6 * 32
    )

    def looped(x):
        return jax.lax.scan(lambda c, _: (mlp(c, (6, 6)), None), x, None, length=5)[0]

    assert dense_flops(looped, jnp.ones((1, 6))) == 5 * 2 * 36

    def with_dead_code(x):
        _ = mlp(x)
        return x + 1

    assert dense_flops(with_dead_code, jnp.ones((1, 6))) == 0


def test_xla_cost_analysis_of_a_matmul():
    lowered = jax.jit(lambda x, y: x @ y).lower(jnp.ones((8, 16)), jnp.ones((16, 4)))
    flops = xla_flops(lowered)
    # XLA's CPU backend (the one CI runs) reports cost analysis; None there would be a regression.
    if jax.default_backend() == "cpu":
        assert flops is not None
    assert flops is None or flops == pytest.approx(2 * 8 * 16 * 4, rel=0.05)


def test_analytic_flops_by_hand():
    f_v, f_q, d = 100.0, 50.0, 25
    spec = SamplerSpec(steps=10, gradstep_steps=3, smooth_k=4)

    def flops(estimator, n=1):
        return analytic_flops(dataclasses.replace(spec, estimator=estimator, best_of_n=n), f_v, f_q, d)

    assert flops("none") == 1000  # 10 actor passes
    assert flops("qgf") == 10 * (100 + 2 * 50) == 2000
    assert flops("ood") == 2000
    assert flops("qgf-jacobian") == 10 * (2 * 100 + 2 * 50) == 3000
    assert flops("qgf-regularized") == 3000
    assert flops("qgf-chain") == (10 + 9 + 8 + 7 + 6 + 5 + 4 + 3 + 2 + 1) * 100 + 10 * 100 == 6500
    assert flops("bptt") == 2 * 55 * 100 + 10 * 100 == 12000
    assert flops("gradstep") == 1000 + 3 * 100 == 1300
    assert flops("none", 16) == 16 * (1000 + 50) == 16800
    assert flops("qgf-jacobian-smooth") == 10 * ((1 + 4 * 2) * 100 + 100) == 10000
    assert flops("qgf-jacobian-ortho") == 10 * ((2 + 25) * 100 + 100) == 28000


def tiny_mlp_model(steps=3):
    """Guidance callables built from explicit dense layers, for FLOP accounting."""
    actor = [jnp.ones((OBS_DIM + ACTION_DIM + 1, 8)) / 8, jnp.ones((8, ACTION_DIM)) / 8]
    critic = [jnp.ones((2, OBS_DIM + ACTION_DIM, 8)) / 8, jnp.ones((2, 8, 1)) / 8]

    def velocity(obs, a, t):
        return jnp.tanh(jnp.concatenate([obs, a, t[:, None]], 1) @ actor[0]) @ actor[1]

    def q(obs, a):
        hidden = jnp.tanh(jnp.einsum("bi,kih->kbh", jnp.concatenate([obs, a], 1), critic[0]))
        return jnp.min(jnp.einsum("kbh,kho->kbo", hidden, critic[1])[..., 0], axis=0)

    return PolicyAndCritic(velocity, q, ACTION_DIM, SamplerSpec(steps=steps))


def test_analytic_formula_agrees_with_the_traced_samplers():
    model = tiny_mlp_model()
    f_v = 2 * (OBS_DIM + ACTION_DIM + 1) * 8 + 2 * 8 * ACTION_DIM
    f_q = 2 * (2 * (OBS_DIM + ACTION_DIM) * 8 + 2 * 8)
    costs = network_costs(model, observations(1))
    assert costs["actor_forward"]["dense_flops"] == f_v
    assert costs["critic_forward"]["dense_flops"] == f_q
    assert costs["backward_factor"]["critic"]["dense_flops"] == pytest.approx(1.0)
    settings = AnalysisSettings(estimators=PAPER_ESTIMATORS, bfn_n=4)
    noise = jnp.zeros((1, 4, ACTION_DIM))
    for method in comparison_methods(model, settings):
        traced = dense_flops(
            method_sampler(model, method), observations(1), method_noise(method, noise),
            jax.random.key(0), jnp.ones((1,)),
        )  # fmt: skip
        formula = analytic_flops(method.spec, f_v, f_q, ACTION_DIM)
        if method.spec.estimator in ("qgf-chain", "bptt"):
            # lax.cond skips finished ODE steps; the static count takes every branch: an upper bound
            assert formula < traced
        else:
            assert formula == traced, method.label


# ------------------------------------------------------------------------------------------- orderings


def test_paper_orderings_from_hand_made_reports():
    def rows(mean, spread=0.0):
        return [mean - spread, mean, mean + spread]

    cosines = {"qgf": 0.9, "qgf-jacobian": 0.5, "bptt": 0.95}
    noise = {"estimators": {name: {"overall_per_observation": rows(v)} for name, v in cosines.items()}}
    q_means = {"bc": 0.0, "qgf": 3.0, "qgf-jacobian": 2.0, "qgf-chain": 1.0, "ood": 4.0, "bfn-16": 5.0}
    q = {
        "methods": {
            k: {"per_observation": rows(v), "minus_reference": {"mean": v - 5.0}} for k, v in q_means.items()
        }
    }
    q["methods"]["qgf-chain"]["per_observation"] = [5.0, -2.0, 0.0]  # mean 1, but beats qgf on row 0
    near = {"bc": 1.0, "qgf": 1.0, "ood": 2.0, "qgf-jacobian": 1.5}
    distances = {
        "methods": {
            k: {"to_reference": {"per_observation": rows(v)}, "nearest_dataset": {"per_observation": rows(v)}}
            for k, v in near.items()
        }
    }
    result = paper_orderings(noise, q, distances, "bfn-16")

    fig3 = result["fig3_qgf_least_noise_sensitive"]
    assert fig3["holds"] is False  # bptt 0.95 > qgf 0.9
    assert set(fig3["against"]) == {"qgf-jacobian", "bptt"}  # qgf-chain was not run
    assert fig3["against"]["bptt"]["difference"]["mean"] == pytest.approx(-0.05)
    fig4 = result["fig4_qgf_beats_jacobian_chain_bptt"]
    assert fig4["holds"] is True and fig4["value"] == pytest.approx(3.0)
    # qgf - chain = [-2, 5, 3]: mean 2 but standard error sqrt(13 / 3) = 2.08, so not by 2 s.e.
    assert fig4["against"]["qgf-chain"]["difference"]["mean"] == pytest.approx(2.0)
    assert fig4["against"]["qgf-chain"]["difference"]["stderr"] == pytest.approx(np.sqrt(13 / 3))
    assert fig4["holds_by_2_stderr"] is False
    assert result["fig4_ood_highest_q"]["holds"] is True
    assert result["fig4_ood_highest_q"]["holds_by_2_stderr"] is False  # via qgf-chain's spread
    assert result["fig4_ood_above_bfn"]["holds"] is False
    assert result["fig4_qgf_minus_bfn"]["mean"] == pytest.approx(-2.0)
    assert result["fig17_ood_farthest_from_bfn"]["holds"] is True
    assert result["fig17_ood_farthest_from_bfn"]["holds_by_2_stderr"] is True  # constant paired gaps
    no_qgf = {"methods": {k: q["methods"][k] for k in ("ood", "bfn-16")}}
    assert (
        paper_orderings(None, no_qgf, distances, "bfn-16")["fig4_qgf_beats_jacobian_chain_bptt"]["holds"]
        is None
    )


# ----------------------------------------------------------------------------------- settings and CLI


def test_settings_validate_and_resolve_weights():
    settings = AnalysisSettings(
        estimators=("qgf", "gradstep", "qgf"), weight=0.06, weight_overrides=(("bptt", 0.02),)
    )
    assert settings.estimators == ("qgf",)
    assert settings.weight_for("qgf") == 0.06 and settings.weight_for("bptt") == 0.02
    assert settings.weight_for("gradstep") == DEFAULT_GRADSTEP_STEP_SIZE
    with pytest.raises(QGFError, match="qgf-jacobian"):
        AnalysisSettings(estimators=("qgf-jacobain",))
    with pytest.raises(QGFError):
        AnalysisSettings(bfn_n=1)


def test_weight_flag_parsing():
    from qgf.commands.analyze import parse_weights

    assert parse_weights([]) == (0.04, {})
    assert parse_weights(["0.06", "bptt=0.02", "gradstep=0.03"]) == (0.06, {"bptt": 0.02, "gradstep": 0.03})
    with pytest.raises(QGFError):
        parse_weights(["qgf=high"])


# ---------------------------------------------------------------------------------------- end to end


def test_analyze_end_to_end_on_a_flow_that_guidance_solves_in_one_step(tmp_path):
    """v = 0 and Q = -|a - a*|^2 / 2 with weight T (and no clip of â₁): the first guided step,
    a + (1/T) T (a* - a), lands on a* for every estimator (with v = 0, â₁ = ODE(a_t) = a_t and J = I),
    and g = 0 there after, so every guided Q is 0 and every guided action is a*. GradStep's L steps
    a <- a + alpha (a* - a) scale BC's Q by (1 - alpha)^(2L)."""
    steps, batch = 3, 12
    spec = SamplerSpec(steps=steps, clip_hat=False)
    model = PolicyAndCritic(zero_velocity, quadratic_q, ACTION_DIM, spec)
    settings = AnalysisSettings(
        estimators=("qgf", "qgf-jacobian", "ood"),  # qgf-chain and bptt: test_real_estimators_...
        weight=float(steps),
        bfn_n=4,
        num_observations=batch,
        noise_scales=(0.1,),
        timing_repeats=1,
    )
    rng = np.random.default_rng(0)
    chunks = np.concatenate([rng.uniform(-1, 1, (30, ACTION_DIM)), np.asarray(TARGET)[None]]).astype(
        np.float32
    )
    summary = analyze(model, observations(batch), chunks, settings, tmp_path, progress=False)

    for name in ("noise_sensitivity", "q_values", "distances", "compute", "analysis"):
        assert json.loads((tmp_path / f"{name}.json").read_text())
    for name in ("noise_sensitivity", "q_values", "distances", "compute"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    q = json.loads((tmp_path / "q_values.json").read_text())["methods"]
    distances = json.loads((tmp_path / "distances.json").read_text())["methods"]
    to_bfn = distances["qgf"]["to_reference"]["mean"]
    for name in settings.estimators:
        assert q[name]["mean"] == pytest.approx(0.0, abs=1e-10)
        assert distances[name]["nearest_dataset"]["mean"] == pytest.approx(0.0, abs=1e-6)  # a* is a chunk
        assert distances[name]["to_reference"]["mean"] == pytest.approx(to_bfn, abs=1e-6)
    assert q["bc"]["mean"] < -0.1
    assert q["gradstep"]["mean"] == pytest.approx((1 - 0.01) ** 6 * q["bc"]["mean"], rel=1e-4)
    # BFN's candidates include the BC sample, so it is at least as good on every row
    assert np.all(np.asarray(q["bfn-4"]["per_observation"]) >= np.asarray(q["bc"]["per_observation"]))
    assert distances["bfn-4"]["to_reference"]["mean"] == 0.0
    # On the BC path of v = 0, a_t = a_0 at every t, and every estimator's g is a* - a_t.
    noise = json.loads((tmp_path / "noise_sensitivity.json").read_text())["estimators"]
    for name in settings.estimators:
        np.testing.assert_allclose(noise[name]["mean"], noise["qgf"]["mean"], atol=1e-6)
    assert summary["flops_per_action"]["bc"] == 0  # v = 0 has no dense layer
    assert summary["num_observations"] == batch


@pytest.mark.slow
def test_qgf_analyze_command_on_a_run_directory(tmp_path, capsys):
    """`qgf analyze RUN` end to end on an (untrained) tiny run over a synthetic OGBench file: reads
    the run's dataset, samples observations from the validation split, writes every file."""
    from _data_fixtures import synthetic_arrays, write_npz
    from qgf import checkpoint
    from qgf.agents.qgf import QGFAgent
    from qgf.cli import main
    from qgf.config import load_preset
    from qgf.data import load_dataset

    data_dir, run_dir, out_dir = tmp_path / "data", tmp_path / "run", tmp_path / "out"
    data_dir.mkdir()
    write_npz(
        data_dir / "cube-single-play-v0.npz", synthetic_arrays((30, 25), observation_dim=28, action_dim=5)
    )
    val = synthetic_arrays((12, 9), observation_dim=28, action_dim=5, seed=1)
    write_npz(data_dir / "cube-single-play-v0-val.npz", val)
    dataset = load_dataset("cube-single-play-v0", data_dir)
    config = load_preset("tiny", {"flow_steps": 2, "horizon": 2})
    checkpoint.create_run(run_dir, config, obs_dim=28, action_dim=5, dataset=dataset.metadata())
    checkpoint.save_checkpoint(run_dir, QGFAgent.create(0, 28, 5, config))

    args = ["analyze", str(run_dir), "--out", str(out_dir), "--estimators", "qgf", "--observations", "6"]
    args += ["--bfn", "2", "--noise-scales", "0.1", "--repeats", "1", "--no-progress", "--weight", "qgf=0.5"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Fig. 4" in printed and str(out_dir) in printed
    summary = json.loads((out_dir / "analysis.json").read_text())
    assert summary["dataset"]["observations_from"] == "val"
    assert summary["dataset"]["observation_rows"] == 6
    # chunks of h = 2 inside trajectories of 30 and 25 rows: 29 + 24 starts whose chunk ends before
    # the terminal row -> 28 + 23
    assert summary["dataset"]["nearest_neighbour_chunks"] == 28 + 23
    assert summary["dataset"]["train_fingerprint_matches_run"] is True
    assert summary["action_dim"] == 10 and summary["flow_steps"] == 2
    assert summary["settings"]["weight_overrides"] == [["qgf", 0.5]]
    q = json.loads((out_dir / "q_values.json").read_text())["methods"]
    assert set(q) == {"bc", "qgf", "gradstep", "bfn-2", "dataset"}
    # the dataset row is the validation actions at the sampled rows, so its NN distance is reported
    assert "nearest_dataset" in json.loads((out_dir / "distances.json").read_text())["methods"]["dataset"]
    assert main(["analyze", str(tmp_path / "missing")]) == 2
