"""qgf.guidance against independent computations: hand-written Euler loops, explicit Jacobians built
with jax.jacobian, finite differences, scipy's polar decomposition and hand-written GradStep."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from qgf.errors import QGFError
from qgf.guidance import SamplerSpec, estimate_gradient, make_sampler, sample, sample_with_info
from qgf.guidance.estimators import STANDALONE_ESTIMATORS
from qgf.guidance.gradients import nearest_orthogonal

OBS_DIM, ACTION_DIM, BATCH, STEPS = 4, 3, 5, 4

# Compiled: op-by-op, the estimators' loops take seconds to dispatch; the callables and spec are static.
estimate = jax.jit(estimate_gradient, static_argnums=(0, 1, 5))


def init_params(seed=0, width=16):
    keys = jax.random.split(jax.random.key(seed), 5)
    scale = 0.7
    return {
        "actor_in": scale * jax.random.normal(keys[0], (OBS_DIM + ACTION_DIM + 1, width)),
        "actor_out": scale * jax.random.normal(keys[1], (width, ACTION_DIM)),
        "critic_in": scale * jax.random.normal(keys[2], (2, OBS_DIM + ACTION_DIM, width)),
        "critic_out": scale * jax.random.normal(keys[3], (2, width)),
    }


PARAMS = init_params()


def velocity(obs, a, t):
    """A tiny nonlinear velocity field with a non-trivial Jacobian in a."""
    x = jnp.concatenate([obs, a, t[:, None]], axis=1)
    return jnp.tanh(x @ PARAMS["actor_in"].astype(a.dtype)) @ PARAMS["actor_out"].astype(a.dtype) - 0.5 * a


def critic(obs, a):
    """A 2-member ensemble, mean-aggregated (smooth, for finite differences)."""
    x = jnp.concatenate([obs, a], axis=1)
    hidden = jnp.tanh(jnp.einsum("bi,kih->kbh", x, PARAMS["critic_in"].astype(a.dtype)))
    return jnp.einsum("kbh,kh->kb", hidden, PARAMS["critic_out"].astype(a.dtype)).mean(axis=0)


def row_denoiser(obs_row, t_row):
    """a -> a + (1 - t) v(s, a, t) for one row, written out here to build explicit Jacobians."""
    return lambda a: a + (1 - t_row) * velocity(obs_row[None], a[None], jnp.array([t_row], a.dtype))[0]


def hand_euler(obs, a, start_step, steps=STEPS):
    """The unguided Euler ODE from t = start_step / T to 1, one Python iteration per step."""
    for k in range(start_step, steps):
        a = a + velocity(obs, a, jnp.full((a.shape[0],), k / steps, a.dtype)) / steps
    return a


def grad_q(obs, a):
    return jax.vmap(lambda o, x: jax.grad(lambda y: critic(o[None], y[None])[0])(x))(obs, a)


def make_inputs():
    keys = jax.random.split(jax.random.key(1), 3)
    obs = jax.random.normal(keys[0], (BATCH, OBS_DIM))
    a_t = 1.3 * jax.random.normal(keys[1], (BATCH, ACTION_DIM))
    noise = jax.random.normal(keys[2], (BATCH, ACTION_DIM))
    return obs, a_t, noise


@pytest.fixture
def inputs():
    return make_inputs()


@pytest.fixture(scope="module")
def bc_samples():
    obs, _, noise = make_inputs()
    spec = SamplerSpec("none", steps=STEPS)
    run = jax.jit(
        lambda o, n: sample_with_info(velocity, None, o, jax.random.key(3), 0.0, spec, ACTION_DIM, noise=n)[0]
    )  # compiled like the guided samplers it is compared with bit for bit
    return run(obs, noise)


def test_spec_validation_names_close_matches_and_is_hashable():
    with pytest.raises(QGFError, match="qgf-jacobian"):
        SamplerSpec("qgf-jacobain")
    with pytest.raises(QGFError, match="best_of_n"):
        SamplerSpec("bfn")
    with pytest.raises(QGFError, match="steps"):
        SamplerSpec("qgf", steps=0)
    assert hash(SamplerSpec("qgf")) == hash(SamplerSpec("qgf"))
    assert SamplerSpec("none", best_of_n=4).label == "bfn-4"
    assert SamplerSpec("qgf", best_of_n=4).label == "qgf+bfn-4"


@pytest.mark.parametrize("estimator", STANDALONE_ESTIMATORS)  # add-on estimators: tests/test_addons.py
def test_weight_zero_gives_exactly_the_bc_samples(inputs, bc_samples, estimator):
    obs, _, noise = inputs
    spec = SamplerSpec(estimator, steps=STEPS)
    guided, _ = jax.jit(
        lambda o, n: sample_with_info(velocity, critic, o, jax.random.key(3), 0.0, spec, ACTION_DIM, noise=n)
    )(obs, noise)
    np.testing.assert_array_equal(np.asarray(guided), np.asarray(bc_samples))
    np.testing.assert_allclose(bc_samples, jnp.clip(hand_euler(obs, noise, 0), -1, 1), atol=1e-6)


@pytest.mark.parametrize("clip_hat", [False, True])
def test_qgf_is_critic_gradient_at_one_step_estimate(inputs, clip_hat):
    obs, a_t, _ = inputs
    t = jnp.full((BATCH,), 0.25)
    a1_hat = a_t + 0.75 * velocity(obs, a_t, t)
    assert clip_hat is False or bool(jnp.any(jnp.abs(a1_hat) > 1))  # the clip must matter here
    expected = grad_q(obs, jnp.clip(a1_hat, -1, 1) if clip_hat else a1_hat)
    g = estimate(velocity, critic, obs, a_t, 0.25, SamplerSpec("qgf", clip_hat=clip_hat))
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)


def explicit_jacobians(obs, a_t, t):
    return jnp.stack([jax.jacobian(row_denoiser(obs[i], t[i]))(a_t[i]) for i in range(a_t.shape[0])])


@pytest.mark.parametrize("clip_hat", [False, True])
def test_qgf_jacobian_equals_explicit_jacobian_product(inputs, clip_hat):
    obs, a_t, _ = inputs
    t = jnp.array([0.0, 0.25, 0.5, 0.75, 0.9])
    jacobians = explicit_jacobians(obs, a_t, t)
    a1_hat = a_t + (1 - t)[:, None] * velocity(obs, a_t, t)
    q_grad = grad_q(obs, jnp.clip(a1_hat, -1, 1) if clip_hat else a1_hat)
    expected = jnp.einsum("bij,bi->bj", jacobians, q_grad)
    assert float(jnp.abs(expected - q_grad).max()) > 1e-2  # J is far from I: the test can tell
    spec = SamplerSpec("qgf-jacobian", clip_hat=clip_hat)
    np.testing.assert_allclose(estimate(velocity, critic, obs, a_t, t, spec), expected, rtol=1e-5, atol=1e-6)
    regularized = estimate(
        velocity, critic, obs, a_t, t, SamplerSpec("qgf-regularized", clip_hat=clip_hat, reg_eps=0.3)
    )
    np.testing.assert_allclose(regularized, q_grad + 0.3 * expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator", ["qgf-jacobian", "qgf-regularized", "bptt"])
def test_clip_jacobian_differentiates_the_clip(inputs, estimator):
    """With clip_jacobian, g = (d clip(â₁) / d a_t)ᵀ ∇Q = Jᵀ D ∇Q, D = diag(1[|â₁| < 1]), built here
    as explicit matrices (bptt at t = (T-1)/T, where its ODE is the one Euler step â₁)."""
    obs, a_t, _ = inputs
    t = jnp.array([0.0, 0.25, 0.5, 0.75, 0.9]) if estimator != "bptt" else jnp.full((BATCH,), 0.75)
    jacobians = np.asarray(explicit_jacobians(obs, a_t, t), np.float64)
    a1_hat = np.asarray(a_t + (1 - t)[:, None] * velocity(obs, a_t, t), np.float64)
    inside = np.abs(a1_hat) < 1
    assert inside.any() and not inside.all()  # some coordinates saturate: the clip matters
    q_grad = np.asarray(grad_q(obs, jnp.clip(a1_hat, -1, 1).astype(jnp.float32)), np.float64)
    clip_derivative = np.stack([np.diag(row.astype(np.float64)) for row in inside])  # (B, d, d)
    chained = np.einsum("bij,bjk->bik", clip_derivative, jacobians)  # d clip(â₁) / d a_t
    expected = np.einsum("bij,bi->bj", chained, q_grad)
    if estimator == "qgf-regularized":  # (I + eps J)ᵀ ∇Q, J now the clipped map's Jacobian
        expected = np.einsum("bij,bi->bj", clip_derivative, q_grad) + 0.3 * expected
    spec = SamplerSpec(estimator, steps=STEPS, clip_jacobian=True, reg_eps=0.3)
    g = np.asarray(estimate(velocity, critic, obs, a_t, t, spec))
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)
    straight = np.asarray(
        estimate(velocity, critic, obs, a_t, t, SamplerSpec(estimator, steps=STEPS, reg_eps=0.3))
    )
    assert np.abs(straight - g).max() > 1e-3  # the default (straight-through) differs
    assert repr(SamplerSpec("qgf")).count("clip_jacobian") == 0  # evaluation directory names keep


def test_qgf_jacobian_smooth_reduces_to_jacobian_without_noise_and_for_linear_fields(inputs):
    obs, a_t, _ = inputs
    t = jnp.full((BATCH,), 0.5)
    plain = estimate(velocity, critic, obs, a_t, t, SamplerSpec("qgf-jacobian"))
    no_noise = SamplerSpec("qgf-jacobian-smooth", smooth_k=3, smooth_sigma=0.0)
    np.testing.assert_allclose(estimate(velocity, critic, obs, a_t, t, no_noise), plain, rtol=1e-5, atol=1e-6)
    noisy = SamplerSpec("qgf-jacobian-smooth", smooth_k=3, smooth_sigma=0.5)
    smoothed = estimate(velocity, critic, obs, a_t, t, noisy, jax.random.key(7))
    assert float(jnp.abs(smoothed - plain).max()) > 1e-3  # the perturbations do something

    matrix = jnp.array([[0.5, -1.0, 0.2], [0.3, 0.1, 0.0], [0.0, 2.0, -0.7]])

    def linear_velocity(o, a, time):
        return a @ matrix + o[:, :ACTION_DIM] * time[:, None]

    smooth_linear = estimate(linear_velocity, critic, obs, a_t, t, noisy, jax.random.key(7))
    explicit = (
        grad_q(obs, jnp.clip(a_t + 0.5 * linear_velocity(obs, a_t, t), -1, 1))
        @ (jnp.eye(ACTION_DIM) + 0.5 * matrix).T
    )
    np.testing.assert_allclose(smooth_linear, explicit, rtol=1e-5, atol=1e-6)


def test_qgf_jacobian_ortho_uses_the_polar_factor(inputs):
    obs, a_t, _ = inputs
    t = jnp.full((BATCH,), 0.3)
    jacobians = explicit_jacobians(obs, a_t, t)
    orthogonal = nearest_orthogonal(jacobians)
    for i in range(BATCH):
        np.testing.assert_allclose(orthogonal[i].T @ orthogonal[i], np.eye(ACTION_DIM), atol=1e-5)
        polar, _ = scipy.linalg.polar(np.asarray(jacobians[i], np.float64))
        np.testing.assert_allclose(orthogonal[i], polar, atol=1e-5)
    q_grad = grad_q(obs, jnp.clip(a_t + 0.7 * velocity(obs, a_t, t), -1, 1))
    expected = np.stack(
        [scipy.linalg.polar(np.asarray(jacobians[i], np.float64))[0].T @ q_grad[i] for i in range(BATCH)]
    )
    g = estimate(velocity, critic, obs, a_t, t, SamplerSpec("qgf-jacobian-ortho"))
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-5)


def test_ood_is_critic_gradient_at_the_noisy_action(inputs):
    obs, a_t, _ = inputs
    g = estimate(velocity, critic, obs, a_t, 0.4, SamplerSpec("ood"))
    np.testing.assert_allclose(g, grad_q(obs, a_t), rtol=1e-5, atol=1e-6)


def test_qgf_chain_estimate_is_the_unguided_ode(inputs):
    obs, a_t, _ = inputs
    target = jnp.linspace(-0.5, 0.5, ACTION_DIM)

    def quadratic_critic(o, a):  # grad Q(â) = target - â, so â = target - g
        return -0.5 * jnp.sum((a - target) ** 2, axis=1)

    spec = SamplerSpec("qgf-chain", steps=STEPS, clip_hat=False)
    for start_step in range(STEPS):
        g = estimate(velocity, quadratic_critic, obs, a_t, start_step / STEPS, spec)
        np.testing.assert_allclose(target - g, hand_euler(obs, a_t, start_step), rtol=1e-5, atol=1e-5)


def test_bptt_matches_finite_differences_of_q_through_the_ode():
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(2), 2)
        obs = jax.random.normal(keys[0], (3, OBS_DIM), jnp.float64)
        a_t = jax.random.normal(keys[1], (3, ACTION_DIM), jnp.float64)
        start_steps = [0, 1, 3]  # a different t per row exercises the per-row remaining-step count
        t = jnp.array([k / STEPS for k in start_steps])
        g = estimate(velocity, critic, obs, a_t, t, SamplerSpec("bptt", steps=STEPS, clip_hat=False))
        eps = 1e-6
        offsets = eps * jnp.concatenate([jnp.eye(ACTION_DIM), -jnp.eye(ACTION_DIM)])  # +e_i, then -e_i
        for row, start in enumerate(start_steps):
            probes = a_t[row] + offsets  # all 2d perturbed inputs of this row as one batch
            row_obs = jnp.repeat(obs[row : row + 1], len(probes), axis=0)
            q_of_ode = np.asarray(critic(row_obs, hand_euler(row_obs, probes, start)))
            numeric = (q_of_ode[:ACTION_DIM] - q_of_ode[ACTION_DIM:]) / (2 * eps)
            np.testing.assert_allclose(g[row], numeric, rtol=1e-6, atol=1e-8)


def test_gradstep_is_l_hand_written_ascent_steps(inputs):
    obs, _, noise = inputs
    alpha = jnp.array([0.0, 0.05, 0.1, 0.2, 0.4])
    spec = SamplerSpec("gradstep", steps=STEPS, gradstep_steps=3)
    actions, _ = sample_with_info(
        velocity, critic, obs, jax.random.key(0), alpha, spec, ACTION_DIM, noise=noise
    )
    expected = jnp.clip(hand_euler(obs, noise, 0), -1, 1)
    for _ in range(3):
        expected = expected + alpha[:, None] * grad_q(obs, expected)
    np.testing.assert_allclose(actions, jnp.clip(expected, -1, 1), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(actions[-1] - jnp.clip(hand_euler(obs, noise, 0), -1, 1)[-1]).max()) > 1e-3


def test_guided_sampler_follows_algorithm_1(inputs):
    obs, _, noise = inputs
    weight = 0.7
    a = noise
    for k in range(STEPS):
        t = jnp.full((BATCH,), k / STEPS)
        v = velocity(obs, a, t)
        a = a + (v + weight * grad_q(obs, jnp.clip(a + (1 - t)[:, None] * v, -1, 1))) / STEPS
    actions, info = sample_with_info(
        velocity, critic, obs, jax.random.key(0), weight, SamplerSpec("qgf", steps=STEPS), ACTION_DIM,
        noise=noise, trajectory=True,
    )  # fmt: skip
    np.testing.assert_allclose(actions, jnp.clip(a, -1, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info["trajectory"][-1], a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info["trajectory"][0], noise)
    np.testing.assert_allclose(info["q"], critic(obs, actions), rtol=1e-6)


@pytest.mark.parametrize("estimator", ["none", "qgf"])
def test_best_of_n_returns_the_argmax_candidate(inputs, estimator):
    obs, _, _ = inputs
    n, key, weight = 6, jax.random.key(4), jnp.linspace(0.0, 1.0, BATCH)
    spec = SamplerSpec(estimator, steps=STEPS, best_of_n=n)
    actions, info = sample_with_info(velocity, critic, obs, key, weight, spec, ACTION_DIM)
    single = SamplerSpec(estimator, steps=STEPS)
    copies = jnp.repeat(obs, n, axis=0)
    candidates = sample(velocity, critic, copies, key, jnp.repeat(weight, n), single, ACTION_DIM)
    scores = np.asarray(critic(copies, candidates)).reshape(BATCH, n)
    best = scores.argmax(axis=1)
    assert len(set(best.tolist())) > 1  # not trivially the same index everywhere
    np.testing.assert_allclose(actions, np.asarray(candidates).reshape(BATCH, n, -1)[np.arange(BATCH), best])
    np.testing.assert_allclose(info["q"], scores.max(axis=1), rtol=1e-6)
    assert np.all(np.asarray(info["q"])[:, None] >= scores - 1e-6)


def test_changing_the_weight_does_not_recompile(inputs):
    obs, _, _ = inputs
    traces = []

    def counting_velocity(o, a, t):
        traces.append(1)
        return velocity(o, a, t)

    sampler = make_sampler(counting_velocity, critic, ACTION_DIM, SamplerSpec("qgf-jacobian", steps=STEPS))
    first = sampler(obs, jax.random.key(0), 0.1)
    traced = len(traces)
    assert traced > 0
    others = [
        sampler(obs, jax.random.key(0), w) for w in (0.5, 2, jnp.float32(3.0), jnp.linspace(0, 1, BATCH))
    ]
    assert len(traces) == traced
    assert not np.allclose(first, others[0])


@pytest.mark.parametrize("estimator", ["qgf", "qgf-jacobian", "ood", "bptt", "qgf-chain", "gradstep"])
def test_per_row_weights_equal_running_each_row_alone(inputs, estimator):
    obs, _, noise = inputs
    weights = jnp.array([0.0, 0.3, 1.0, 2.0, 5.0])
    spec = SamplerSpec(estimator, steps=STEPS)
    sampler = jax.jit(
        lambda o, w, n: sample_with_info(
            velocity, critic, o, jax.random.key(0), w, spec, ACTION_DIM, noise=n
        )[0]
    )
    together = sampler(obs, weights, noise)
    for i in range(BATCH):
        alone = sampler(obs[i : i + 1], weights[i], noise[i : i + 1])
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(together[-1] - sampler(obs, 0.0, noise)[-1]).max()) > 1e-3


def test_bc_never_evaluates_the_critic(inputs):
    obs, _, _ = inputs

    def exploding_critic(o, a):
        raise AssertionError("plain BC must not evaluate the critic")

    actions = jax.jit(
        lambda o: sample(
            velocity, exploding_critic, o, jax.random.key(0), 1.0, SamplerSpec("none"), ACTION_DIM
        )
    )(obs)
    assert actions.shape == (BATCH, ACTION_DIM)
    assert float(jnp.abs(actions).max()) <= 1.0
    with pytest.raises(QGFError, match="critic"):
        sample(velocity, None, obs, jax.random.key(0), 1.0, SamplerSpec("qgf"), ACTION_DIM)


def test_sample_inside_a_user_jit_matches_make_sampler(inputs):
    obs, _, _ = inputs
    spec = SamplerSpec("qgf", steps=STEPS, best_of_n=2)
    mine = jax.jit(lambda o, k, w: sample(velocity, critic, o, k, w, spec, ACTION_DIM))(
        obs, jax.random.key(9), 0.4
    )
    theirs = make_sampler(velocity, critic, ACTION_DIM, spec)(obs, jax.random.key(9), 0.4)
    np.testing.assert_allclose(mine, theirs, rtol=1e-6)


def test_the_estimator_table_is_complete_and_light():
    """Every record names a loadable function; the table (read by `qgf --help`) imports no JAX."""
    import subprocess
    import sys

    from qgf.guidance.estimators import ESTIMATOR_ADDONS, ESTIMATOR_TABLE, EXTRA_ESTIMATORS

    for _, record in ESTIMATOR_TABLE.items():
        assert callable(record.load()), record.name
    assert set(ESTIMATOR_ADDONS) == set(EXTRA_ESTIMATORS)
    code = "import sys, qgf.guidance.estimators; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
