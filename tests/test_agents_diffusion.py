"""DAC and QSM-BC (qgf.agents.diffusion) against hand computations: the VP schedule (QAM Eqs.
46-47), both losses (QGF Eqs. 21-22) assembled in numpy float64 from the networks' outputs and a
per-head jax.jacobian Q gradient, the reverse steps (QAM Eqs. 51, 55-56; Ho et al. Eqs. 7, 11)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from qgf.agents import agent_class, diffusion
from qgf.config import load_preset
from qgf.critics.networks import q_ensemble
from qgf.flow import build_velocity_field

OBS_DIM, ACTION_DIM = 4, 2


def hand_schedule(num_steps):
    """QAM Eq. 46 term by term, Eq. 47 as a running product, in float64."""
    betas, alpha_bars, running = [], [], 1.0
    for i in range(num_steps):
        exponent = 0.1 / num_steps + (10.0 - 0.1) * (2 * i + 1) / (2 * num_steps * num_steps)
        beta = 1.0 - np.exp(-exponent)
        running *= 1.0 - beta
        betas.append(beta)
        alpha_bars.append(running)
    return np.array(betas), np.array(alpha_bars)


def make_batch(config, seed=0, batch_size=6):
    rng = np.random.default_rng(seed)
    valid = np.ones((batch_size, config.horizon), np.float32)
    valid[0, 1:] = 0.0  # a chunk that crosses a trajectory end after its first step
    return {
        "observations": jnp.asarray(rng.normal(size=(batch_size, OBS_DIM)), jnp.float32),
        "actions": jnp.asarray(
            rng.uniform(-0.9, 0.9, (batch_size, config.horizon * ACTION_DIM)), jnp.float32
        ),
        "valid": jnp.asarray(valid),
    }


@functools.cache
def fresh_agent(name):
    """One created agent per method for the whole module (creation compiles once per config)."""
    return agent_class(name).create(0, OBS_DIM, ACTION_DIM, small_config(agent=name))


def agent_with_distinct_target(name, **overrides):
    """The fresh agent with `overrides` and a target critic that differs from the online one, so
    that using the wrong critic would show."""
    agent = fresh_agent(name)
    target = jax.tree.map(lambda x: 1.3 * x + 0.01, agent.params["critic"])
    return agent.replace(
        config=dataclasses.replace(agent.config, **overrides), target_params={"critic": target}
    )


def losses(agent, params, batch, key):
    """The agent's policy losses, compiled (op-by-op execution is slow on a busy CPU)."""
    return jax.jit(type(agent).policy_losses)(agent, params, batch, key)


def hand_q_gradient(agent, observations, actions):
    """grad_a of min_k Q_k(s, a) per row: each head's per-row Jacobian, the minimal head's row kept."""
    critic = q_ensemble(agent.config)
    params = agent.target_params["critic"]
    heads = np.asarray(critic.apply(params, observations, actions), np.float64)  # (K, B)
    jacobian = np.asarray(jax.jit(jax.jacobian(lambda a: critic.apply(params, observations, a)))(actions))
    rows = np.arange(actions.shape[0])
    per_head = jacobian[:, rows, rows, :]  # (K, B, d): row b depends only on action b
    assert agent.config.critic_aggregation == "min"
    return per_head[np.argmin(heads, axis=0), rows]


def hand_noised_batch(agent, batch, key):
    """(noise, prediction, Q gradient, weights) in float64, from the loss's own random draws."""
    config = agent.config
    indices, noise = diffusion.draw_training_noise(
        key, batch["actions"].shape[0], agent.chunk_dim, config.flow_steps
    )
    indices, noise = np.asarray(indices), np.asarray(noise, np.float64)
    _, alpha_bars = hand_schedule(config.flow_steps)
    alpha_bar = alpha_bars[indices][:, None]
    noisy = np.sqrt(alpha_bar) * np.asarray(batch["actions"], np.float64) + np.sqrt(1.0 - alpha_bar) * noise
    noisy = jnp.asarray(noisy, jnp.float32)
    network = build_velocity_field(config, agent.chunk_dim)
    times = jnp.asarray(indices / config.flow_steps, jnp.float32)  # the documented step input i / T
    prediction = np.asarray(
        network.apply(agent.params["actor"], batch["observations"], noisy, times), np.float64
    )
    q_gradient = hand_q_gradient(agent, batch["observations"], noisy)
    weights = np.repeat(np.asarray(batch["valid"], np.float64), ACTION_DIM, axis=1)
    return noise, prediction, q_gradient, weights


def masked_mean_square(residual, weights):
    return np.sum(weights * residual**2) / np.sum(weights)


# ------------------------------------------------------------------ schedule


@pytest.mark.parametrize("num_steps", [1, 3, 10])
def test_schedule_matches_eqs_46_47(num_steps):
    betas, alpha_bars = hand_schedule(num_steps)
    schedule = diffusion.variance_preserving_schedule(num_steps)
    np.testing.assert_allclose(schedule.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(schedule.alpha_bars, alpha_bars, rtol=1e-6)
    np.testing.assert_allclose(schedule.alpha_bars_prev, np.concatenate([[1.0], alpha_bars[:-1]]), rtol=1e-6)
    # the exponents sum to b_min + (b_max - b_min) / 2 for any T: the last level is nearly pure noise
    np.testing.assert_allclose(schedule.alpha_bars[-1], np.exp(-5.05), rtol=1e-5)


# ------------------------------------------------------------------ losses


def test_dac_loss_by_hand():
    agent = agent_with_distinct_target("dac", dac_alpha=0.05)  # small alpha: the Q term matters
    batch, key = make_batch(agent.config), jax.random.key(3)
    loss, metrics = losses(agent, agent.params, batch, key)
    noise, prediction, q_gradient, weights = hand_noised_batch(agent, batch, key)
    assert np.abs(q_gradient).max() > 1e-3
    target = noise - q_gradient / (2 * 0.05)  # QGF Eq. 22 with 1/beta = 1/(2 alpha)
    np.testing.assert_allclose(loss, masked_mean_square(target - prediction, weights), rtol=2e-4)
    np.testing.assert_allclose(metrics["dac_loss"], loss)
    np.testing.assert_allclose(
        metrics["ddpm_loss"], masked_mean_square(noise - prediction, weights), rtol=2e-4
    )
    np.testing.assert_allclose(metrics["q_grad_norm"], np.linalg.norm(q_gradient, axis=1).mean(), rtol=2e-4)


def test_dac_noise_std_scale_by_hand():
    """dac_gradient_scale=noise-std (the authors' code): target eps - sqrt(1 - abar_i) g / (2 alpha)."""
    agent = agent_with_distinct_target("dac", dac_alpha=0.05, dac_gradient_scale="noise-std")
    batch, key = make_batch(agent.config), jax.random.key(3)
    loss, _ = losses(agent, agent.params, batch, key)
    noise, prediction, q_gradient, weights = hand_noised_batch(agent, batch, key)
    indices, _ = diffusion.draw_training_noise(
        key, batch["actions"].shape[0], agent.chunk_dim, agent.config.flow_steps
    )
    noise_std = np.sqrt(1.0 - hand_schedule(agent.config.flow_steps)[1][np.asarray(indices)])[:, None]
    assert noise_std.min() < 0.9  # some rows are at clean levels, where the factor matters
    target = noise - noise_std * q_gradient / (2 * 0.05)
    np.testing.assert_allclose(loss, masked_mean_square(target - prediction, weights), rtol=2e-4)
    unscaled = masked_mean_square(noise - q_gradient / (2 * 0.05) - prediction, weights)
    assert abs(float(loss) - unscaled) > 1e-3 * unscaled


def test_qsm_bc_loss_by_hand():
    bc_weight = 3.0  # the loss is linear in it: one value tests the assembly
    agent = agent_with_distinct_target("qsm-bc", qsm_inv_temperature=7.0, qsm_bc_weight=bc_weight)
    batch, key = make_batch(agent.config, seed=1), jax.random.key(4)
    loss, metrics = losses(agent, agent.params, batch, key)
    noise, prediction, q_gradient, weights = hand_noised_batch(agent, batch, key)
    qsm = masked_mean_square(-7.0 * q_gradient - prediction, weights)  # QGF Eq. 21, tau_inv = 7
    ddpm = masked_mean_square(noise - prediction, weights)
    np.testing.assert_allclose(metrics["qsm_loss"], qsm, rtol=2e-4)
    np.testing.assert_allclose(metrics["ddpm_loss"], ddpm, rtol=2e-4)
    np.testing.assert_allclose(loss, qsm + bc_weight * ddpm, rtol=2e-4)


def test_q_gradient_matches_finite_differences():
    """The loss's Q gradient, checked once more without autodiff (central differences)."""
    agent = agent_with_distinct_target("dac")
    observations, actions = (
        make_batch(agent.config)["observations"][:2],
        make_batch(agent.config)["actions"][:2],
    )
    gradient_fn = jax.jit(lambda agent, o, a: diffusion.q_action_gradient(agent.target_q, o, a))
    gradient = np.asarray(gradient_fn(agent, observations, actions))
    target_q = jax.jit(type(agent).target_q)
    step, numeric = 1e-2, np.zeros_like(gradient)
    for j in range(actions.shape[1]):
        shift = jnp.zeros_like(actions).at[:, j].set(step)
        upper = np.asarray(target_q(agent, observations, actions + shift), np.float64)
        lower = np.asarray(target_q(agent, observations, actions - shift), np.float64)
        numeric[:, j] = (upper - lower) / (2 * step)
    np.testing.assert_allclose(gradient, numeric, atol=2e-3 * np.abs(numeric).max())


@pytest.mark.parametrize(("name", "guidance_critic"), [("dac", "target"), ("qsm-bc", "online")])
def test_policy_loss_never_moves_the_critic(name, guidance_critic):
    agent = agent_with_distinct_target(name, guidance_critic=guidance_critic, dac_alpha=0.05)
    grads, _ = jax.grad(functools.partial(losses, agent), has_aux=True)(
        agent.params, make_batch(agent.config), jax.random.key(0)
    )
    for network in ("critic", "value"):
        assert all(np.all(np.asarray(leaf) == 0.0) for leaf in jax.tree.leaves(grads[network])), network
    assert any(np.any(np.asarray(leaf) != 0.0) for leaf in jax.tree.leaves(grads["actor"]))


def test_large_dac_alpha_is_plain_ddpm():
    """alpha -> infinity removes the Q term: loss and actor gradient equal the DDPM loss's."""
    agent = agent_with_distinct_target("dac", dac_alpha=1e9)
    batch, key = make_batch(agent.config, seed=2), jax.random.key(5)
    (loss, metrics), grads = jax.value_and_grad(functools.partial(losses, agent), has_aux=True)(
        agent.params, batch, key
    )
    np.testing.assert_allclose(loss, metrics["ddpm_loss"], rtol=1e-6)

    indices, noise = diffusion.draw_training_noise(key, 6, agent.chunk_dim, agent.config.flow_steps)
    _, alpha_bars = hand_schedule(agent.config.flow_steps)
    alpha_bar = jnp.asarray(alpha_bars[np.asarray(indices)][:, None], jnp.float32)
    noisy = jnp.sqrt(alpha_bar) * batch["actions"] + jnp.sqrt(1.0 - alpha_bar) * noise
    weights = jnp.repeat(batch["valid"], ACTION_DIM, axis=1)
    network = build_velocity_field(agent.config, agent.chunk_dim)
    times = indices.astype(jnp.float32) / agent.config.flow_steps

    def ddpm(actor):  # Ho et al. Eq. 14, masked mean over coordinates
        residual = noise - network.apply(actor, batch["observations"], noisy, times)
        return jnp.sum(weights * residual**2) / jnp.sum(weights)

    expected = jax.grad(ddpm)(agent.params["actor"])
    for got, want in zip(jax.tree.leaves(grads["actor"]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------ samplers


def step_values(seed=0, batch=4, dim=3, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(batch, dim)) for _ in range(3))  # a^i, f, z


@pytest.mark.parametrize("index", [0, 4, 9])
def test_qsm_reverse_step_is_eq_51(index):
    betas, alpha_bars = hand_schedule(10)
    noisy, prediction, noise = step_values(seed=index, scale=1.5)
    beta, alpha_bar = betas[index], alpha_bars[index]
    expected = np.clip(
        (noisy - beta / np.sqrt(1 - alpha_bar) * prediction) / np.sqrt(1 - beta) + np.sqrt(beta) * noise,
        -1,
        1,
    )
    schedule = diffusion.variance_preserving_schedule(10)
    args = (jnp.asarray(x, jnp.float32) for x in (noisy, prediction, noise))
    got = diffusion.qsm_reverse_step(schedule, *args, index)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("index", [1, 5, 9])
def test_dac_reverse_step_is_the_clipped_posterior_mean(index):
    """Ho et al. Eq. 7 at the clipped x0 estimate (Eq. 15 of Ho et al. inverted), std sqrt(beta_i)."""
    betas, alpha_bars = hand_schedule(10)
    schedule = diffusion.variance_preserving_schedule(10)
    noisy, prediction, noise = step_values(seed=index, scale=2.0)
    beta, alpha_bar, alpha_bar_prev, alpha = (
        betas[index],
        alpha_bars[index],
        alpha_bars[index - 1],
        1 - betas[index],
    )
    denoised = np.clip(noisy / np.sqrt(alpha_bar) - np.sqrt(1 / alpha_bar - 1) * prediction, -1, 1)
    posterior_mean = (
        np.sqrt(alpha_bar_prev) * beta * denoised + np.sqrt(alpha) * (1 - alpha_bar_prev) * noisy
    ) / (1 - alpha_bar)
    assert np.any(
        np.abs(noisy / np.sqrt(alpha_bar) - np.sqrt(1 / alpha_bar - 1) * prediction) > 1
    )  # clip acts
    args = (jnp.asarray(x, jnp.float32) for x in (noisy, prediction, noise))
    got = diffusion.dac_reverse_step(schedule, *args, index)
    np.testing.assert_allclose(got, posterior_mean + np.sqrt(beta) * noise, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["qsm", "dac"])
@pytest.mark.parametrize("index", [1, 5, 9])
def test_posterior_step_std_is_ho_et_al_beta_tilde(name, index):
    """`ddpm_step_std=posterior`: the same step with noise std sqrt(beta~_i), beta~_i = beta_i (1 -
    abar_{i-1}) / (1 - abar_i) (Ho et al. Eq. 7), from the float64 schedule; smaller than sqrt(beta_i)."""
    betas, alpha_bars = hand_schedule(10)
    beta_tilde = betas[index] * (1 - alpha_bars[index - 1]) / (1 - alpha_bars[index])
    assert beta_tilde < betas[index]
    schedule = diffusion.variance_preserving_schedule(10)
    step = {"qsm": diffusion.qsm_reverse_step, "dac": diffusion.dac_reverse_step}[name]
    noisy, prediction, noise = step_values(seed=index, scale=0.3)
    beta, alpha_bar, alpha_bar_prev = betas[index], alpha_bars[index], alpha_bars[index - 1]
    if name == "qsm":  # Eq. 51, clipped after the noise
        mean = (noisy - beta / np.sqrt(1 - alpha_bar) * prediction) / np.sqrt(1 - beta)
        expected = np.clip(mean + np.sqrt(beta_tilde) * noise, -1, 1)
    else:  # the clipped x0 estimate's posterior mean, as above
        denoised = np.clip(noisy / np.sqrt(alpha_bar) - np.sqrt(1 / alpha_bar - 1) * prediction, -1, 1)
        mean = np.sqrt(alpha_bar_prev) * beta * denoised + np.sqrt(1 - beta) * (1 - alpha_bar_prev) * noisy
        expected = mean / (1 - alpha_bar) + np.sqrt(beta_tilde) * noise
    args = (jnp.asarray(x, jnp.float32) for x in (noisy, prediction, noise))
    got = step(schedule, *args, index, posterior=True)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["qsm-bc", "dac"])
def test_the_policy_samples_with_the_configured_step_std(name):
    """The agent's own policy reads `ddpm_step_std`: from one key the two settings give different
    actions, and the posterior std's chain is the hand chain of `reverse_chain` with posterior steps."""
    observations = make_batch(fresh_agent(name).config)["observations"]
    key = jax.random.PRNGKey(3)
    got = {}
    for std in ("beta", "posterior"):
        agent = agent_with_distinct_target(name, ddpm_step_std=std)
        got[std] = np.asarray(agent.policy_actions_from(agent.params, observations, key))
    assert np.abs(got["beta"] - got["posterior"]).max() > 1e-3
    config = agent.config
    noises = jax.random.normal(key, (config.flow_steps + 1, observations.shape[0], agent.chunk_dim))
    step = functools.partial(type(agent).reverse_step, posterior=True)
    expected = diffusion.reverse_chain(
        agent.noise_predictor(agent.params), step, agent.schedule, observations, noises
    )
    np.testing.assert_allclose(got["posterior"], expected, rtol=1e-5, atol=1e-6)


def test_dac_step_without_clipping_is_the_ddpm_mean():
    """Where the x0 estimate stays inside [-1, 1], the posterior mean equals Ho et al. Eq. 11."""
    betas, alpha_bars = hand_schedule(10)
    schedule, index = diffusion.variance_preserving_schedule(10), 6
    noisy, prediction, _ = step_values(seed=7, scale=0.02)
    expected = (noisy - betas[index] / np.sqrt(1 - alpha_bars[index]) * prediction) / np.sqrt(
        1 - betas[index]
    )
    got = diffusion.dac_reverse_step(
        schedule,
        jnp.asarray(noisy, jnp.float32),
        jnp.asarray(prediction, jnp.float32),
        jnp.zeros((4, 3)),
        index,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("step_name", ["qsm", "dac"])
def test_reverse_chain_by_hand(step_name):
    """T = 3 levels from a^2 = z_0 down to the action; the last step adds no noise."""
    betas, alpha_bars = hand_schedule(3)
    schedule = diffusion.variance_preserving_schedule(3)
    rng = np.random.default_rng(11)
    observations = rng.normal(size=(5, 2))
    noises = 1.5 * rng.normal(size=(4, 5, 3))

    def predictor(obs, noisy, times):  # any smooth function of all three inputs
        return 0.8 * noisy + 0.3 * jnp.sum(obs, axis=1, keepdims=True) + times[:, None]

    x = noises[0]
    for level, noise in zip([2, 1, 0], noises[1:], strict=True):
        noise = noise if level > 0 else 0 * noise
        f = np.asarray(predictor(observations, x, np.full(5, level / 3)), np.float64)
        beta, alpha_bar = betas[level], alpha_bars[level]
        if step_name == "qsm":
            x = np.clip(
                (x - beta / np.sqrt(1 - alpha_bar) * f) / np.sqrt(1 - beta) + np.sqrt(beta) * noise, -1, 1
            )
        else:
            prev = alpha_bars[level - 1] if level > 0 else 1.0
            x0 = np.clip((x - np.sqrt(1 - alpha_bar) * f) / np.sqrt(alpha_bar), -1, 1)
            x = (np.sqrt(prev) * beta * x0 + np.sqrt(1 - beta) * (1 - prev) * x) / (1 - alpha_bar) + np.sqrt(
                beta
            ) * noise
    step = diffusion.qsm_reverse_step if step_name == "qsm" else diffusion.dac_reverse_step
    got = diffusion.reverse_chain(
        predictor, step, schedule, jnp.asarray(observations, jnp.float32), jnp.asarray(noises, jnp.float32)
    )
    np.testing.assert_allclose(got, np.clip(x, -1, 1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["dac", "qsm-bc"])
def test_policy_actions_stay_in_bounds_for_a_wild_network(name):
    agent = fresh_agent(name)
    wild = {**agent.params, "actor": jax.tree.map(lambda x: 20.0 * x, agent.params["actor"])}
    observations = make_batch(agent.config, batch_size=16)["observations"]
    actions = np.asarray(
        jax.jit(type(agent).policy_actions_from)(agent, wild, observations, jax.random.key(1))
    )
    assert actions.shape == (16, agent.chunk_dim)
    assert np.all(np.isfinite(actions)) and np.all(np.abs(actions) <= 1.0)
    assert np.std(actions) > 0.1  # not a constant


# ------------------------------------------------------------------ presets


def test_paper_presets_follow_qgf_table_3_and_qam_table_3():
    dac = load_preset("paper", {"agent": "dac"})
    qsm = load_preset("paper", {"agent": "qsm-bc"})
    assert dac.dac_alpha == 100.0 and dac.actor_grad_clip == 1.0
    assert (qsm.qsm_inv_temperature, qsm.qsm_bc_weight, qsm.actor_grad_clip) == (0.1, 10.0, 1.0)
    for name in ("dac", "qsm-bc"):
        assert agent_class(name).clipped_networks == ("actor",)
    assert agent_class("dac").contract_losses == ("dac_loss",)
    assert agent_class("qsm-bc").contract_losses == ("qsm_bc_loss",)
