"""DSRL (qgf.agents.dsrl) and FEdit (qgf.agents.fedit) against independent computations: DSRL's
noise-space critic target Q_k(s, clip(ODE(v, z))) with the Euler ODE rolled by hand, its latent
policy's loss in numpy float64 (tanh-Gaussian density by hand), the noise bound sigma_z; FEdit's
L-infinity bound sigma_a; SAC's temperature gradient alpha (H - H_target) by hand and its first
Adam step in the right direction, for both."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import make_dataset, small_config
from qgf.agents import agent_class
from qgf.agents.gaussian_policy import entropy_regularised_terms, tanh_gaussian_policy
from qgf.config import TrainConfig, load_preset
from qgf.data.chunks import sample_chunks, to_device
from qgf.errors import QGFError

OBS_DIM, ACTION_DIM, BATCH = 4, 2, 16


@pytest.fixture(scope="module")
def batch():
    config = small_config()
    return sample_chunks(to_device(make_dataset()), jax.random.key(0), BATCH, config.horizon, config.discount)


def tanh_gaussian_log_prob(y, mean, log_std):
    """log pi(y) for y = tanh(x), x ~ N(mean, std), in float64."""
    x, std = np.arctanh(y), np.exp(log_std)
    gaussian = -0.5 * ((x - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    return np.sum(gaussian - np.log(1 - y**2), axis=-1)


def test_dsrl_distillation_target_is_the_critic_at_the_flows_action(batch):
    agent = agent_class("dsrl").create(0, OBS_DIM, ACTION_DIM, small_config(agent="dsrl"))
    observations = batch["observations"]
    noise = jax.random.normal(jax.random.key(1), (BATCH, agent.chunk_dim))
    targets = np.asarray(
        jax.jit(lambda agent: agent.distillation_targets(agent.params, observations, noise))(agent)
    )
    steps, state = agent.config.flow_steps, np.asarray(noise, np.float64)
    for k in range(steps):  # Euler on t = k / T from z, then clip (QAM Eq. 82's ODE)
        t = np.full((BATCH,), k / steps, np.float32)
        state = (
            state + np.asarray(agent.behavior_velocity_fn(observations, state.astype(np.float32), t)) / steps
        )
    heads = agent.critic.q_heads(
        agent.target_params["critic"], observations, np.clip(state, -1, 1).astype(np.float32)
    )
    assert targets.shape == (agent.config.num_critics, BATCH)
    np.testing.assert_allclose(targets, np.asarray(heads), rtol=1e-4, atol=1e-4)
    # the distillation loss moves the noise critic, never the critic nor the BC flow
    grads = jax.grad(lambda p: agent.policy_losses(p, batch, jax.random.key(2))[1]["noise_critic_loss"])(
        agent.params
    )
    for name, moved in (("critic", False), ("actor", False), ("noise_critic", True)):
        assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads[name])) == moved, name


@pytest.mark.parametrize("aggregation", ["min", "mean"])
def test_dsrl_latent_loss_by_hand(batch, aggregation):
    """E[alpha log pi(Delta | s) - agg_k Q_psi,k(s, sigma_z Delta)] + alpha (H - H_target), the noise
    inside [-sigma_z, sigma_z]^d, and no gradient into the noise critic."""
    config = small_config(agent="dsrl", dsrl_noise_scale=0.7, critic_aggregation=aggregation)
    agent = agent_class("dsrl").create(0, OBS_DIM, ACTION_DIM, config)
    params = {**agent.params, "latent_temperature": {"log_alpha": jnp.asarray(np.log(0.3), jnp.float32)}}
    observations, key = batch["observations"], jax.random.key(5)
    loss, metrics = agent.latent_terms(params, observations, key)
    noise, _ = agent.latent_noise(params, observations, key)
    noise = np.asarray(noise, np.float64)
    assert np.all(np.abs(noise) <= 0.7) and np.max(np.abs(noise)) > 0.1
    mean, log_std = tanh_gaussian_policy(agent.config, agent.chunk_dim).apply(params["latent"], observations)
    log_prob = tanh_gaussian_log_prob(
        noise / 0.7, np.asarray(mean, np.float64), np.asarray(log_std, np.float64)
    )
    heads = np.asarray(agent.noise_q_heads(params, observations, noise.astype(np.float32)), np.float64)
    q = heads.min(axis=0) if aggregation == "min" else heads.mean(axis=0)
    entropy, target = -np.mean(log_prob), -0.5 * agent.chunk_dim
    expected = np.mean(0.3 * log_prob - q) + 0.3 * (entropy - target)
    np.testing.assert_allclose(float(loss), expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(float(metrics["latent_entropy"]), entropy, rtol=2e-3, atol=2e-3)
    grads = jax.grad(lambda p: agent.latent_terms(p, observations, key)[0])(params)
    assert all(float(jnp.max(jnp.abs(g))) == 0 for g in jax.tree.leaves(grads["noise_critic"]))


def test_fedit_edit_stays_within_sigma_of_the_flows_action(batch):
    config = small_config(agent="fedit", fedit_sigma=0.15)
    agent = agent_class("fedit").create(0, OBS_DIM, ACTION_DIM, config)
    observations, key = batch["observations"], jax.random.key(7)
    acted = np.asarray(
        jax.jit(lambda agent: agent.policy_actions_from(agent.params, observations, key))(agent)
    )
    flow_key, _ = jax.random.split(key)
    base = np.asarray(agent.base_actions(agent.params, observations, flow_key))
    distance = np.max(np.abs(acted - base))
    assert 0.01 < distance <= 0.15 + 1e-6 and np.all(np.abs(acted) <= 1.0)
    # at the action bounds the clip keeps the edit inside [-1, 1] and inside the ball
    edges = jnp.asarray(np.sign(base) * 1.0, jnp.float32)
    edited, _ = agent.edited_actions(agent.params, observations, edges, key)
    edited = np.asarray(edited)
    assert np.all(np.abs(edited) <= 1.0) and np.max(np.abs(edited - np.asarray(edges))) <= 0.15 + 1e-6


def test_the_temperature_gradient_by_hand():
    """d/dlog_alpha of the temperature loss is alpha (H - H_target), H = -mean log pi; the policy
    loss sends no gradient into log alpha and alpha / B into each log pi."""
    log_prob = jnp.asarray([-1.0, 0.5, 2.0, -3.0])
    q = jnp.asarray([1.0, 2.0, 0.0, -1.0])

    def total(log_alpha, log_prob):
        policy, temperature, _, _ = entropy_regularised_terms(log_prob, q, log_alpha, -2.0)
        return policy, temperature

    log_alpha = jnp.asarray(np.log(0.4))
    entropy = -np.mean(np.asarray(log_prob))
    d_policy, d_temperature = (
        jax.grad(lambda la: total(la, log_prob)[0])(log_alpha),
        jax.grad(lambda la: total(la, log_prob)[1])(log_alpha),
    )
    assert float(d_policy) == 0.0
    np.testing.assert_allclose(float(d_temperature), 0.4 * (entropy + 2.0), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda lp: total(log_alpha, lp)[0])(log_prob), 0.4 / 4, rtol=1e-6)


@pytest.mark.parametrize("name, metric", [("fedit", "edit"), ("dsrl", "latent")])
@pytest.mark.parametrize("target", [-5.0, 5.0])
def test_the_first_update_moves_the_temperature_towards_the_target_entropy(batch, name, metric, target):
    """Adam's first step is -lr sign(gradient): log alpha falls by lr when the entropy is above its
    target (-5 per coordinate: far below any tiny-policy entropy) and rises by lr when below (+5)."""
    config = small_config(agent=name, **{f"{name}_target_entropy": target})
    agent = agent_class(name).create(0, OBS_DIM, ACTION_DIM, config)
    updated, metrics = agent.update(batch)
    step = float(updated.params[f"{metric}_temperature"]["log_alpha"])
    entropy = float(metrics[f"{metric}_entropy"])
    assert (entropy > target * agent.chunk_dim) == (target < 0)
    np.testing.assert_allclose(step, -config.learning_rate if target < 0 else config.learning_rate, rtol=1e-3)


def test_bad_settings_fail_with_a_named_error():
    for overrides, message in (
        ({"dsrl_noise_scale": 0.0}, "dsrl_noise_scale"),
        ({"fedit_sigma": -0.1}, "fedit_sigma"),
    ):
        with pytest.raises(QGFError, match=message):
            TrainConfig(**overrides)


def test_presets_follow_the_paper():
    """QAM Table 4 on cube-triple: sigma_z = 1.4, sigma_a = 0.3; Table 3: no gradient clipping."""
    dsrl, fedit = (load_preset("paper", {"agent": name, "critic": "td"}) for name in ("dsrl", "fedit"))
    assert dsrl.dsrl_noise_scale == 1.4 and fedit.fedit_sigma == 0.3
    assert dsrl.actor_grad_clip == fedit.actor_grad_clip == 0.0 and dsrl.num_critics == 10
