"""The CGQL family (qgf.agents.cgql) against independent computations: the guidance field of Eqs.
60/72 by hand (numpy float64, the critic's gradient by central differences of the analytic toy
critic), the MSE and clipped-Linex regressions of Eqs. 63/70 by hand, the Linex optimum of Eq. 66
(1/tau log E exp(tau Q)) against the MSE one (E Q), and the presets of QAM App. D."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from qgf.agents import agent_class
from qgf.agents.cgql import LINEX_CLIP, guidance_velocity, noisy_regression_loss
from qgf.config import TrainConfig, load_preset
from qgf.errors import QGFError
from toy_critic import toy_critic_params, toy_q, with_critic

OBS_DIM, ACTION_DIM = 4, 2
CENTER, SCALE = np.array([-0.5, 0.5, -0.5, 0.5]), 3.0


def test_guidance_field_by_hand():
    rng = np.random.default_rng(0)
    gradient, actions = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    times = np.array([0.0, 0.1, 0.5, 0.9])
    tau = 2.0
    field = guidance_velocity(jnp.asarray(gradient), jnp.asarray(actions), jnp.asarray(times), tau)
    field = np.asarray(field)
    expected = ((1 - times[:, None]) * tau * gradient + actions) / np.where(times > 0, times, 1.0)[:, None]
    expected[0] = 0.0  # u = 0: no guidance (1/u diverges)
    np.testing.assert_allclose(field, expected, rtol=1e-5, atol=1e-6)


def critic_gradient_fd(actions):
    """grad_a of the toy critic by float64 central differences."""
    eps, grad = 1e-5, np.zeros_like(actions)
    for i in range(actions.shape[1]):
        step = np.zeros_like(actions)
        step[:, i] = eps
        grad[:, i] = (toy_q(actions + step, CENTER, SCALE) - toy_q(actions - step, CENTER, SCALE)) / (2 * eps)
    return grad


def test_cgql_velocity_is_the_bc_flow_plus_the_critics_score_field():
    """v = v_beta + vartheta ((1 - u) tau grad Q(s, a^u) + a^u) / u (Eqs. 60-61) with the analytic
    critic (the acting policy is its Euler ODE, `qgf.flow.flow_policy_actions`)."""
    config = small_config(agent="cgql", cgql_guidance=0.3, cgql_inv_temperature=2.0)
    agent = agent_class("cgql").create(0, OBS_DIM, ACTION_DIM, config)
    agent = with_critic(agent, toy_critic_params(agent.params["critic"], OBS_DIM, CENTER, SCALE))
    rng = np.random.default_rng(1)
    observations = rng.normal(size=(5, OBS_DIM)).astype(np.float32)
    actions = rng.uniform(-0.9, 0.9, size=(5, agent.chunk_dim)).astype(np.float32)
    times = np.array([0.0, 0.2, 0.4, 0.6, 0.8], np.float32)
    velocity = jax.jit(lambda agent, o, a, t: agent.guided_velocity(agent.params)(o, a, t))
    got = np.asarray(velocity(agent, observations, actions, times), np.float64)
    base = np.asarray(agent.behavior_velocity_fn(observations, actions, times), np.float64)
    a, u = actions.astype(np.float64), times.astype(np.float64)[:, None]
    guidance = ((1 - u) * 2.0 * critic_gradient_fd(a) + a) / np.where(u > 0, u, 1.0)
    guidance[0] = 0.0
    np.testing.assert_allclose(got, base + 0.3 * guidance, rtol=2e-3, atol=2e-3)


def test_mse_and_clipped_linex_losses_by_hand():
    rng = np.random.default_rng(2)
    noisy, target = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    target[0, 0] = noisy[0, 0] + 4.0  # tau * Delta = 8 > 5: the linear branch
    weights = np.array([1, 1, 0, 1, 1, 0], np.float64)
    tau = 2.0
    args = (jnp.asarray(noisy), jnp.asarray(target), jnp.asarray(weights))
    mse = float(noisy_regression_loss(*args, "mse", tau))
    np.testing.assert_allclose(mse, np.mean((noisy - target) ** 2 * weights), rtol=1e-5)
    delta = tau * (target - noisy)
    linex = np.where(delta > LINEX_CLIP, delta, np.exp(np.minimum(delta, LINEX_CLIP)) + tau * noisy)
    assert delta[0, 0] > LINEX_CLIP and np.sum(delta > LINEX_CLIP) >= 1
    np.testing.assert_allclose(
        float(noisy_regression_loss(*args, "linex", tau)), np.mean(linex * weights), rtol=1e-5
    )


def test_the_linex_optimum_is_the_soft_maximum_and_the_mse_optimum_the_mean():
    """Eqs. 65-66: over samples x of Q, the constant y minimising the Linex loss is
    (1/tau) log mean exp(tau x) (> mean x, Jensen), the MSE minimiser is mean x."""
    x = np.random.default_rng(4).normal(size=400) * 0.5
    tau = 1.5
    ys = np.linspace(-1.5, 1.5, 3001)

    def loss(y, kind):
        noisy = jnp.full((1, x.size), y)
        return float(noisy_regression_loss(noisy, jnp.asarray(x)[None], jnp.ones(x.size), kind, tau))

    soft_max = np.log(np.mean(np.exp(tau * x))) / tau
    for kind, optimum in (("linex", soft_max), ("mse", np.mean(x))):
        values = [loss(y, kind) for y in ys[::10]]
        best = ys[::10][int(np.argmin(values))]
        assert abs(best - optimum) <= 0.011, (kind, best, optimum)
    assert soft_max > np.mean(x) + 0.05


@pytest.mark.parametrize("name, kind", [("cgql-mse", "mse"), ("cgql-linex", "linex")])
def test_the_noisy_critic_regresses_each_head_onto_the_critic_at_the_clean_chunk(name, kind, batch):
    """The regression's targets are the guidance critic's heads Q_k(s, a) at the batch's clean
    chunk (checked at u = 1, where a^u = a, against a hand-rolled loss in float64), and the loss moves
    the noisy critic only (no gradient reaches the critic or the BC flow)."""
    config = small_config(agent=name, cgql_inv_temperature=0.5)
    agent = agent_class(name).create(0, OBS_DIM, ACTION_DIM, config)
    observations, actions = batch["observations"], batch["actions"]
    targets = agent.critic.q_heads(agent.target_params["critic"], observations, actions)
    targets = np.asarray(targets, np.float64)
    # the noisy critic at u = 1 on the clean chunk, against the targets, by hand
    times = jnp.ones((actions.shape[0],))
    heads = np.asarray(agent.noisy_q_heads(agent.params, observations, actions, times), np.float64)
    weights = np.asarray(batch["valid"][:, -1], np.float64)
    if kind == "mse":
        expected = np.mean((heads - targets) ** 2 * weights)
    else:
        delta = 0.5 * (targets - heads)
        expected = np.mean(np.where(delta > 5, delta, np.exp(np.minimum(delta, 5)) + 0.5 * heads) * weights)
    got = noisy_regression_loss(jnp.asarray(heads), jnp.asarray(targets), jnp.asarray(weights), kind, 0.5)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # the loss moves the noisy critic only: no gradient reaches the critic or the BC flow through it
    grads = jax.grad(lambda p: agent.policy_losses(p, batch, jax.random.key(0))[1]["noisy_critic_loss"])(
        agent.params
    )
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads["critic"]))
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads["actor"]))
    assert any(float(jnp.max(jnp.abs(g))) > 0.0 for g in jax.tree.leaves(grads["noisy_critic"]))


@pytest.fixture(scope="module")
def batch():
    from helpers import make_dataset
    from qgf.data.chunks import sample_chunks, to_device

    config = small_config()
    return sample_chunks(to_device(make_dataset()), jax.random.key(0), 16, config.horizon, config.discount)


def test_bad_cgql_settings_fail_with_a_named_error():
    with pytest.raises(QGFError, match="cgql_inv_temperature"):
        TrainConfig(cgql_inv_temperature=0.0)
    with pytest.raises(QGFError, match="cgql_guidance"):
        TrainConfig(cgql_guidance=-1.0)


def test_presets_follow_the_paper():
    """QAM Table 4 (cube-triple): tau = 10, vartheta = 0.1 at QAM's discount 0.99 (cpu); tau / 10 at
    the paper preset's discount 0.999; the td critic K = 10, rho = 0.5."""
    for name in ("cgql", "cgql-mse", "cgql-linex"):
        paper = load_preset("paper", {"agent": name, "critic": "td"})
        assert (paper.cgql_inv_temperature, paper.cgql_guidance, paper.discount) == (1.0, 0.1, 0.999)
        assert (paper.num_critics, paper.critic_pessimism) == (10, 0.5)
        cpu = load_preset("cpu", {"agent": name})
        assert (cpu.cgql_inv_temperature, cpu.cgql_guidance, cpu.discount) == (10.0, 0.1, 0.99)
