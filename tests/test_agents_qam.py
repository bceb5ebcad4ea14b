"""The QAM family (qgf.agents.qam) against independent computations: Eq. 24's schedule by hand, the
lean adjoint (Eq. 25) against autodiff of the same discretised dynamics with f_theta held fixed and
against float64 finite differences, the basic adjoint (Eq. 11) against autodiff of the full cost,
the adjoint-matching loss (Alg. 1) by hand, the tanh-Gaussian edit's density, the pessimistic
TD target (Eq. 26) in numpy, and the presets of QAM App. D / QGF Table 3."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import make_dataset, small_config
from qgf.agents import agent_class
from qgf.agents.qam import (
    adjoint_matching_loss,
    basic_adjoint,
    lean_adjoint,
    memoryless_schedule,
    sde_rollout,
    tanh_gaussian_sample,
)
from qgf.config import TrainConfig, load_preset
from qgf.critics.td import pessimistic_target
from qgf.errors import QGFError

OBS_DIM, CHUNK_DIM, BATCH = 3, 4, 5


# ------------------------------------------------------------------ small explicit fields and critic


def make_problem(seed=0, dtype=np.float64):
    """Two smooth velocity fields (tanh layers of s, a, t), a smooth Q and a batch of inputs."""
    rng = np.random.default_rng(seed)
    width = 6

    def layer_params():
        return [
            jnp.asarray(rng.normal(size=(OBS_DIM + CHUNK_DIM + 1, width)) * 0.5, dtype),
            jnp.asarray(rng.normal(size=(width, CHUNK_DIM)) * 0.5, dtype),
        ]

    def field(params):
        first, second = params

        def velocity(obs, a, t):
            return jnp.tanh(jnp.concatenate([obs, a, t[:, None].astype(a.dtype)], axis=1) @ first) @ second

        return velocity

    q_matrix = jnp.asarray(rng.normal(size=(OBS_DIM, CHUNK_DIM)), dtype)

    def q_fn(obs, a):
        return -jnp.sum(jnp.square(a - jnp.tanh(obs @ q_matrix)), axis=1) + jnp.sum(jnp.sin(2.0 * a), axis=1)

    observations = jnp.asarray(rng.normal(size=(BATCH, OBS_DIM)), dtype)
    return field(layer_params()), field(layer_params()), q_fn, observations, rng


def hand_coefficients(num_steps, offset):
    """Eq. 24 written out independently: (u_k, velocity factor, 1/ubar, noise factor, sigma) per step."""
    h = 1.0 / num_steps
    rows = []
    for k in range(num_steps):
        u = k * h
        ubar = u + offset * h
        sigma = np.sqrt(2.0 * (1.0 - ubar) / ubar)
        if k < num_steps - 1:
            rows.append((u, 2.0, 1.0 / ubar, np.sqrt(h) * sigma, sigma))
        else:  # the deterministic last step a + h f
            rows.append((u, 1.0, 0.0, 0.0, sigma))
    return rows


def rollout_with_fixed_residual(base, obs, start, k, residuals, noise, num_steps, offset):
    """a^T from a^k = `start` with f_theta's outputs held at `residuals` (T, B, d) (by hand)."""
    h = 1.0 / num_steps
    a = start
    for j, (u, scale, decay, noise_factor, _) in enumerate(hand_coefficients(num_steps, offset)):
        if j < k:
            continue
        t = jnp.full((a.shape[0],), u, a.dtype)
        a = a + h * (scale * (base(obs, a, t) + residuals[j]) - decay * a) + noise_factor * noise[j]
    return a


# ------------------------------------------------------------------ the schedule and the SDE


@pytest.mark.parametrize(
    "num_steps, offset, expected_sigma_first",
    [(4, 0.5, np.sqrt(14.0)), (10, 0.5, np.sqrt(2 * 0.95 / 0.05)), (10, 0.25, np.sqrt(2 * 0.975 / 0.025))],
)
def test_schedule_is_eq24_at_the_offset_times(num_steps, offset, expected_sigma_first):
    schedule = memoryless_schedule(num_steps, offset)
    h = 1.0 / num_steps
    np.testing.assert_allclose(schedule.times, np.arange(num_steps) * h, atol=1e-7)
    np.testing.assert_allclose(schedule.sigmas[0], expected_sigma_first, rtol=1e-6)
    for k, (time, scale, decay, noise_factor, sigma) in enumerate(hand_coefficients(num_steps, offset)):
        np.testing.assert_allclose(schedule.times[k], time, atol=1e-7)
        np.testing.assert_allclose(schedule.sigmas[k], sigma, rtol=1e-6)
        np.testing.assert_allclose(schedule.velocity_scale[k], scale)
        np.testing.assert_allclose(schedule.decay[k], decay, rtol=1e-6)
        np.testing.assert_allclose(schedule.noise_scale[k], noise_factor, rtol=1e-6)
    # T = 10, u = 0.3: ubar = 0.35, sigma^2 = 2 * 0.65 / 0.35 (with offset 1/2)
    if num_steps == 10 and offset == 0.5:
        np.testing.assert_allclose(schedule.sigmas[3] ** 2, 2 * 0.65 / 0.35, rtol=1e-6)
        np.testing.assert_allclose(schedule.decay[3], 1 / 0.35, rtol=1e-6)
        np.testing.assert_allclose(schedule.noise_scale[3] ** 2, 0.1 * 2 * 0.65 / 0.35, rtol=1e-6)


@pytest.mark.parametrize("num_steps, offset", [(4, 0.5), (10, 0.5), (5, 0.25)])
def test_sde_rollout_steps_by_hand(num_steps, offset):
    """Every step is Eq. 24 (drift 2f - a/ubar, noise sqrt(2h(1-ubar)/ubar) z), the last is a + h f."""
    base, residual, _, observations, rng = make_problem(1, np.float32)
    h = 1.0 / num_steps
    initial = rng.normal(size=(BATCH, CHUNK_DIM)).astype(np.float32)
    noise = rng.normal(size=(num_steps, BATCH, CHUNK_DIM)).astype(np.float32)

    def velocity(obs, a, t):
        return base(obs, a, t) + residual(obs, a, t)

    states, final = sde_rollout(
        velocity, observations, initial, noise, memoryless_schedule(num_steps, offset)
    )
    a = initial
    for k in range(num_steps):
        np.testing.assert_allclose(states[k], a, rtol=1e-5, atol=1e-5)
        u = k * h
        f = np.asarray(velocity(observations, jnp.asarray(a), jnp.full((BATCH,), u)))
        ubar = u + offset * h
        if k < num_steps - 1:
            a = a + h * (2 * f - a / ubar) + np.sqrt(2 * h * (1 - ubar) / ubar) * noise[k]
        else:
            a = a + h * f
    np.testing.assert_allclose(final, a, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ adjoints


@pytest.mark.parametrize("num_steps, offset", [(4, 0.5), (6, 0.3)])
def test_lean_adjoint_is_the_gradient_with_the_residual_held_fixed(num_steps, offset):
    """g^k = d(-tau Q(s, a^T))/da^k through the discretised dynamics with f_theta's outputs held
    fixed: against jax.grad of a hand-written rollout and against float64 central differences."""
    tau = 0.7
    with jax.enable_x64(True):
        base, residual, q_fn, observations, rng = make_problem(2)
        initial = jnp.asarray(rng.normal(size=(BATCH, CHUNK_DIM)))
        noise = jnp.asarray(rng.normal(size=(num_steps, BATCH, CHUNK_DIM)))
        schedule = memoryless_schedule(num_steps, offset, jnp.float64)

        def velocity(obs, a, t):
            return base(obs, a, t) + residual(obs, a, t)

        states, final = sde_rollout(velocity, observations, initial, noise, schedule)
        residuals = jnp.stack(
            [residual(observations, states[k], jnp.full((BATCH,), k / num_steps)) for k in range(num_steps)]
        )
        terminal = -tau * jax.grad(lambda a: jnp.sum(q_fn(observations, a)))(final)
        adjoints = lean_adjoint(base, observations, states, terminal, schedule)
        assert adjoints.shape == (num_steps, BATCH, CHUNK_DIM) and adjoints.dtype == jnp.float64

        def cost_from(k, start):
            end = rollout_with_fixed_residual(
                base, observations, start, k, residuals, noise, num_steps, offset
            )
            return -tau * jnp.sum(q_fn(observations, end))

        # the hand rollout reproduces the trajectory it is differentiated along
        np.testing.assert_allclose(
            rollout_with_fixed_residual(base, observations, initial, 0, residuals, noise, num_steps, offset),
            final,
            rtol=1e-12,
        )
        for k in range(num_steps):
            np.testing.assert_allclose(
                adjoints[k], jax.grad(lambda a, k=k: cost_from(k, a))(states[k]), rtol=1e-10, atol=1e-12
            )
        epsilon = 1e-6
        for k in (0, num_steps // 2, num_steps - 1):
            for row, coordinate in ((0, 0), (3, 2)):
                bump = jnp.zeros_like(states[k]).at[row, coordinate].set(epsilon)
                difference = (cost_from(k, states[k] + bump) - cost_from(k, states[k] - bump)) / (2 * epsilon)
                np.testing.assert_allclose(adjoints[k, row, coordinate], difference, rtol=1e-6, atol=1e-8)


def test_basic_adjoint_is_the_gradient_of_the_full_cost_to_go():
    """BAM's adjoint (Eq. 11): d/da^k [sum_j h ||2 f_theta/sigma_j||^2 / 2 - tau Q(s, a^T)] through the
    full dynamics; it differs from the lean adjoint whenever f_theta is not zero."""
    num_steps, offset, tau = 5, 0.5, 0.4
    h = 1.0 / num_steps
    with jax.enable_x64(True):
        base, residual, q_fn, observations, rng = make_problem(3)
        initial = jnp.asarray(rng.normal(size=(BATCH, CHUNK_DIM)))
        noise = jnp.asarray(rng.normal(size=(num_steps, BATCH, CHUNK_DIM)))
        schedule = memoryless_schedule(num_steps, offset, jnp.float64)

        def velocity(obs, a, t):
            return base(obs, a, t) + residual(obs, a, t)

        states, final = sde_rollout(velocity, observations, initial, noise, schedule)
        terminal = -tau * jax.grad(lambda a: jnp.sum(q_fn(observations, a)))(final)
        adjoints = basic_adjoint(base, residual, observations, states, terminal, schedule)

        def cost_from(k, a):
            total = 0.0
            for j, (u, scale, decay, noise_factor, sigma) in enumerate(hand_coefficients(num_steps, offset)):
                if j < k:
                    continue
                t = jnp.full((BATCH,), u)
                control = 2.0 * residual(observations, a, t) / sigma
                total = total + h * 0.5 * jnp.sum(control**2)
                a = a + h * (scale * velocity(observations, a, t) - decay * a) + noise_factor * noise[j]
            return total - tau * jnp.sum(q_fn(observations, a))

        for k in range(num_steps):
            np.testing.assert_allclose(
                adjoints[k], jax.grad(lambda a, k=k: cost_from(k, a))(states[k]), rtol=1e-10, atol=1e-12
            )
        lean = lean_adjoint(base, observations, states, terminal, schedule)
        assert not np.allclose(lean[0], adjoints[0], rtol=1e-3)


def test_adjoint_matching_loss_by_hand():
    """Alg. 1: mean over rows of sum_k sum_coords (2 f_theta / sigma_k + sigma_k g^k)^2, with a tiny
    linear f_theta(s, a, u) = [s, a, u] W computed in numpy."""
    rng = np.random.default_rng(4)
    num_steps = 3
    weights = rng.normal(size=(OBS_DIM + CHUNK_DIM + 1, CHUNK_DIM))
    observations = rng.normal(size=(BATCH, OBS_DIM))
    states = rng.normal(size=(num_steps, BATCH, CHUNK_DIM))
    adjoints = rng.normal(size=(num_steps, BATCH, CHUNK_DIM))
    sigmas = np.array(
        [np.sqrt(2 * (1 - 1 / 6) / (1 / 6)), np.sqrt(2 * (1 - 0.5) / 0.5), np.sqrt(2 * (1 / 6) / (5 / 6))]
    )
    np.testing.assert_allclose(memoryless_schedule(num_steps, 0.5).sigmas, sigmas, rtol=1e-6)

    expected, outputs = 0.0, []
    for k in range(num_steps):
        inputs = np.concatenate([observations, states[k], np.full((BATCH, 1), k / num_steps)], axis=1)
        f = inputs @ weights
        outputs.append(f)
        expected += np.sum((2 * f / sigmas[k] + sigmas[k] * adjoints[k]) ** 2)
    expected /= BATCH
    loss = adjoint_matching_loss(
        jnp.asarray(np.stack(outputs), jnp.float32),
        jnp.asarray(adjoints, jnp.float32),
        jnp.asarray(sigmas, jnp.float32),
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


# ------------------------------------------------------------------ the agents


@pytest.fixture(scope="module")
def batch():
    data = make_dataset()
    return {"observations": jnp.asarray(data.observations[:BATCH])}


@functools.cache
def qam_agent(name="qam"):
    """A fresh agent with the agent-contract suite's qam config: the variants reuse QAM's networks
    and add their own (one compiled `create` for the whole file)."""
    if name == "qam":
        return agent_class(name).create(0, 4, 2, small_config(agent=name))
    qam, cls = qam_agent("qam"), agent_class(name)
    fields = {field.name: getattr(qam, field.name) for field in dataclasses.fields(qam)}
    observations, actions = jnp.zeros((1, qam.obs_dim)), jnp.zeros((1, qam.chunk_dim))
    extra = jax.jit(lambda key: cls.init_extra_params(qam.config, key, observations, actions))(
        jax.random.key(1)
    )
    # the variant's own config sections (qam-fql, qam-edit) at their defaults over QAM's config
    return cls(**{**fields, "params": {**qam.params, **extra}, "config": qam.config.replace(agent=name)})


@jax.jit
def targets_and_loss(agent, params, observations, key):
    states, adjoints, final = agent.adjoint_targets(params, observations, key)
    loss, metrics = agent.adjoint_matching_terms(params, observations, key)
    residual = agent.velocity(params, "residual")
    residuals = jnp.stack(
        [residual(observations, states[k], jnp.full((BATCH,), t)) for k, t in enumerate(agent.schedule.times)]
    )
    return states, adjoints, final, residuals, loss, metrics


def shifted(params, amount=0.05):
    """`params` moved off their initial values (the fresh residual's output layer is zero)."""
    return jax.tree.map(lambda x: x + amount, params)


def test_agent_loss_is_alg1_on_its_own_networks(batch):
    """The agent's L_AM = Alg. 1 with its residual network evaluated at each (s, a^k, u_k), sigma_k
    written out by hand; the fresh residual outputs 0 (the run starts at the behaviour policy)."""
    agent = qam_agent()
    observations = batch["observations"]
    steps = agent.config.flow_steps
    h = 1.0 / steps
    _, adjoints, _, residuals, loss, metrics = targets_and_loss(
        agent, shifted(agent.params), observations, jax.random.key(3)
    )
    expected = 0.0
    for k in range(steps):
        ubar = k * h + 0.5 * h
        sigma = np.sqrt(2 * (1 - ubar) / ubar)
        f, g = np.asarray(residuals[k], np.float64), np.asarray(adjoints[k], np.float64)
        expected += np.sum((2 * f / sigma + sigma * g) ** 2)
    np.testing.assert_allclose(loss, expected / BATCH, rtol=1e-4)
    assert float(metrics["adjoint_matching_loss"]) == float(loss)
    assert float(jnp.max(jnp.abs(residuals))) > 0.0
    fresh_residuals = targets_and_loss(agent, agent.params, observations, jax.random.key(3))[3]
    np.testing.assert_array_equal(fresh_residuals, 0.0)


@jax.jit
def target_and_loss_gradients(agent, params, observations, key, weights):
    adjoint_gradient = jax.grad(lambda p: jnp.sum(agent.adjoint_targets(p, observations, key)[1] * weights))(
        params
    )
    loss_gradient = jax.grad(lambda p: agent.adjoint_matching_terms(p, observations, key)[0])(params)
    return adjoint_gradient, loss_gradient


def largest(tree):
    return max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", ["qam", "bam"])
def test_adjoint_targets_carry_no_gradient(name, batch):
    """States and adjoints are regression targets: their gradient with respect to f_theta's (and
    f_beta's) parameters is zero, and L_AM never moves f_beta."""
    agent = qam_agent(name)
    weights = jax.random.normal(jax.random.key(6), (agent.config.flow_steps, BATCH, agent.chunk_dim))
    adjoint_gradient, loss_gradient = target_and_loss_gradients(
        agent, shifted(agent.params), batch["observations"], jax.random.key(5), weights
    )
    assert largest(adjoint_gradient["residual"]) == 0.0 and largest(adjoint_gradient["actor"]) == 0.0
    assert largest(loss_gradient["actor"]) == 0.0
    assert largest(loss_gradient["residual"]) > 0.0


@jax.jit
def lean_and_basic(agent, residual_params, observations, states, terminal):
    base = agent.velocity(agent.params, "actor")
    residual = agent.velocity({"residual": residual_params}, "residual")
    lean = lean_adjoint(base, observations, states, terminal, agent.schedule)
    basic = basic_adjoint(base, residual, observations, states, terminal, agent.schedule)
    return lean, basic


def test_lean_adjoint_does_not_depend_on_the_residual_but_the_basic_one_does(batch):
    """Along one fixed trajectory, changing f_theta's parameters leaves the lean adjoint unchanged
    (it is built from f_beta only) and changes BAM's."""
    agent = qam_agent()
    observations = batch["observations"]
    states, _, final, *_ = targets_and_loss(agent, agent.params, observations, jax.random.key(7))
    terminal = jax.random.normal(jax.random.key(8), final.shape)
    lean, basic = lean_and_basic(agent, agent.params["residual"], observations, states, terminal)
    other_lean, other_basic = lean_and_basic(
        agent, shifted(agent.params["residual"], 0.3), observations, states, terminal
    )
    np.testing.assert_array_equal(lean, other_lean)
    np.testing.assert_allclose(basic, lean, rtol=1e-5, atol=1e-6)  # f_theta = 0: same dynamics, no cost
    assert not np.allclose(other_basic, lean, rtol=1e-3)


def test_tanh_gaussian_log_density_by_hand():
    """log pi(y) = log N(atanh y; mean, std) - log(1 - y^2), summed over coordinates."""
    rng = np.random.default_rng(9)
    mean = jnp.asarray(rng.normal(size=(BATCH, CHUNK_DIM)), jnp.float32)
    log_std = jnp.asarray(rng.uniform(-1.0, 0.5, size=(BATCH, CHUNK_DIM)), jnp.float32)
    edit, log_prob = tanh_gaussian_sample(mean, log_std, jax.random.key(0))
    y = np.asarray(edit, np.float64)
    x = np.arctanh(y)
    std = np.exp(np.asarray(log_std, np.float64))
    gaussian = -0.5 * ((x - np.asarray(mean)) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(log_prob, np.sum(gaussian - np.log(1 - y**2), axis=1), rtol=1e-4)
    assert np.all(np.abs(y) < 1.0)


def test_edit_stays_in_the_linf_ball(batch):
    agent = qam_agent("qam-edit")
    sigma = agent.config.qam_edit_sigma
    base = 0.5 * jnp.tanh(jax.random.normal(jax.random.key(1), (BATCH, agent.chunk_dim)))
    edit = jax.jit(
        lambda agent, base: agent.edited_actions(agent.params, batch["observations"], base, jax.random.key(2))
    )
    edited, _ = edit(agent, base)
    assert sigma > 0.0 and float(jnp.max(jnp.abs(edited - base))) <= sigma + 1e-6
    assert not np.allclose(edited, base)


def test_qam_fql_acts_with_its_one_step_policy(batch):
    agent = qam_agent("qam-fql")
    observations, key = batch["observations"], jax.random.key(4)
    noise = jax.random.normal(key, (BATCH, agent.chunk_dim))
    expected = jnp.clip(agent.onestep().apply(agent.params["onestep"], observations, noise), -1.0, 1.0)
    actions = jax.jit(lambda agent: agent.policy_actions_from(agent.params, observations, key))(agent)
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ critic, config, presets


def test_pessimistic_target_by_hand():
    """QAM Eq. 26's backup value mean_k Q_k - rho std_k Q_k (population std over the K heads)."""
    q = np.array([[1.0, -3.0], [2.0, -1.0], [6.0, -2.0]])  # K = 3 heads, B = 2
    expected = [3.0 - 0.5 * np.sqrt((4 + 1 + 9) / 3), -2.0 - 0.5 * np.sqrt((1 + 1 + 0) / 3)]
    np.testing.assert_allclose(pessimistic_target(jnp.asarray(q), 0.5), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"qam_time_offset": 0.0}, "qam_time_offset"),
        ({"qam_time_offset": 1.0}, "qam_time_offset"),
        ({"qam_inv_temperature": -1.0}, "qam_inv_temperature"),
        ({"qam_edit_sigma": -0.1}, "qam_edit_sigma"),
        ({"qam_fql_alpha": -3.0}, "qam_fql_alpha"),
    ],
)
def test_bad_qam_settings_fail_with_a_named_error(overrides, message):
    with pytest.raises(QGFError, match=message):
        TrainConfig(**overrides)


def test_presets_follow_the_papers():
    paper = load_preset("paper", {"agent": "qam"})
    assert paper.qam_inv_temperature == 0.1 and paper.actor_grad_clip == 1.0  # QGF Table 3; QAM Table 3
    td = load_preset("paper", {"agent": "qam", "critic": "td"})
    assert (td.num_critics, td.critic_aggregation, td.critic_pessimism) == (10, "mean", 0.5)
    for name in ("qam", "bam", "qam-fql", "qam-edit"):
        config = load_preset("cpu", {"agent": name})
        assert config.agent == name and config.actor_grad_clip == 1.0
    assert load_preset("cpu", {"agent": "qam-edit"}).qam_edit_sigma > 0.0
