"""FQL and EDP losses (QGF App. I Eq. 23, QAM Eqs. 39-42; QGF §6 EDP) against hand computations.

The networks' `apply` are black boxes; the random draws follow the documented key convention
(FQL: key -> (flow-matching key, one-step noise key); flow matching: key -> (noise key, time key)).
The Euler ODE, the masked mean squared errors, the ensemble aggregation, the Q term and its
normalisation are redone here in numpy float64, and gradients are compared with jax.grad of
independently assembled losses.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import make_dataset, small_config
from qgf.agents import agent_class
from qgf.agents.fql import build_onestep_policy
from qgf.config import load_preset
from qgf.critics.networks import q_ensemble
from qgf.data.chunks import sample_chunks_jit, to_device
from qgf.flow import build_velocity_field
from qgf.guidance import SamplerSpec

OBS_DIM, ACTION_DIM, BATCH = 4, 2, 12
KEY = jax.random.PRNGKey(7)


def make_agent(name, **overrides):
    config = small_config(agent=name, **overrides)
    return agent_class(name).create(0, OBS_DIM, ACTION_DIM, config)


@pytest.fixture(scope="module")
def batch():
    config = small_config()
    data = to_device(make_dataset())
    batch = dict(sample_chunks_jit(data, jax.random.PRNGKey(3), BATCH, config.horizon, config.discount))
    # Make sure the mask matters: the last step of two chunks lies past a trajectory end.
    valid = np.ones((BATCH, config.horizon), np.float32)
    valid[[1, 5], -1] = 0.0
    batch["valid"] = jnp.asarray(valid)
    return batch


@pytest.fixture(scope="module")
def fql():
    return make_agent("fql")


@pytest.fixture(scope="module")
def edp():
    return make_agent("edp")


def with_config(agent, **changes):
    return agent.replace(config=agent.config.replace(**changes))


# ------------------------------------------------------------------ hand computations


def f64(x):
    return np.asarray(x, np.float64)


def velocity(agent, actor_params):
    network = build_velocity_field(agent.config, agent.chunk_dim)
    return lambda obs, a, t: network.apply(
        actor_params, obs, jnp.asarray(a, jnp.float32), jnp.asarray(t, jnp.float32)
    )


def hand_q(agent, obs, actions):
    """min over heads of the target critic (the small config aggregates with min), or with
    q_term_critic=online-mean the mean over heads of the online critic (the authors' FQL)."""
    online = agent.config.q_term_critic == "online-mean"
    assert online or (agent.config.critic_aggregation == "min" and agent.config.guidance_critic == "target")
    params = agent.params["critic"] if online else agent.target_params["critic"]
    heads = f64(q_ensemble(agent.config).apply(params, obs, jnp.asarray(actions, jnp.float32)))
    return heads.mean(axis=0) if online else heads.min(axis=0)


def with_distinct_target(agent):
    """`agent` with an EMA target critic unlike its online one, so that the wrong critic shows."""
    return agent.replace(
        target_params={"critic": jax.tree.map(lambda x: 1.3 * x + 0.01, agent.params["critic"])}
    )


def hand_q_term(q, normalize):
    return -q.mean() / (np.abs(q).mean() if normalize else 1.0)


def flow_matching_draws(agent, batch, key):
    noise_key, time_key = jax.random.split(key)
    noise = f64(jax.random.normal(noise_key, batch["actions"].shape))
    times = f64(jax.random.uniform(time_key, (batch["actions"].shape[0],)))
    noisy = (1 - times[:, None]) * noise + times[:, None] * f64(batch["actions"])
    weights = np.repeat(f64(batch["valid"]), agent.action_dim, axis=1)
    return noise, times, noisy, weights


def hand_flow_matching(agent, batch, key, actor_params):
    noise, times, noisy, weights = flow_matching_draws(agent, batch, key)
    predicted = f64(velocity(agent, actor_params)(batch["observations"], noisy, times))
    error = (predicted - (f64(batch["actions"]) - noise)) ** 2
    return (weights * error).sum() / weights.sum()


def hand_euler(agent, actor_params, obs, noise):
    """QAM Eq. 39: T Euler steps of 1/T from t = 0, then clip to [-1, 1]."""
    steps = agent.config.flow_steps
    field = velocity(agent, actor_params)
    a = f64(noise)
    for k in range(steps):
        a = a + f64(field(obs, a, np.full(len(a), k / steps))) / steps
    return np.clip(a, -1.0, 1.0)


def fql_draws(agent, batch, key):
    bc_key, noise_key = jax.random.split(key)
    z = jax.random.normal(noise_key, (batch["observations"].shape[0], agent.chunk_dim))
    return bc_key, z


def hand_fql(agent, batch, key):
    params, obs = agent.params, batch["observations"]
    bc_key, z = fql_draws(agent, batch, key)
    bc = hand_flow_matching(agent, batch, bc_key, params["actor"])
    target = hand_euler(agent, params["actor"], obs, z)
    mu = f64(build_onestep_policy(agent.config, agent.chunk_dim).apply(params["onestep"], obs, z))
    distill = np.mean((mu - target) ** 2)
    q = hand_q(agent, obs, np.clip(mu, -1, 1))
    q_term = hand_q_term(q, agent.config.normalize_q_loss)
    total = bc + agent.config.fql_alpha * distill + q_term
    return {
        "total": total,
        "bc_loss": bc,
        "distill_loss": distill,
        "q_loss": q_term,
        "q_policy_mean": q.mean(),
    }


def hand_edp(agent, batch, key):
    params, obs = agent.params, batch["observations"]
    bc = hand_flow_matching(agent, batch, key, params["actor"])
    _, times, noisy, _ = flow_matching_draws(agent, batch, key)
    denoised = noisy + (1 - times[:, None]) * f64(velocity(agent, params["actor"])(obs, noisy, times))
    q = hand_q(agent, obs, np.clip(denoised, -1, 1))
    q_term = hand_q_term(q, agent.config.normalize_q_loss)
    total = agent.config.edp_bc_weight * bc + q_term
    return {"total": total, "bc_loss": bc, "q_loss": q_term, "q_policy_mean": q.mean()}


def policy_grads(agent, batch, key):
    return jax.grad(lambda p: agent.policy_losses(p, batch, key)[0])(agent.params)


def assert_trees_close(a, b, rtol=1e-4, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def tree_combination(a, b, alpha, beta=1.0):
    return jax.tree.map(lambda x, y: alpha * x + beta * y, a, b)


# ------------------------------------------------------------------ loss values


@pytest.mark.parametrize(
    "normalize, q_term_critic", [(False, "guidance"), (True, "guidance"), (False, "online-mean")]
)
def test_fql_loss_by_hand(fql, batch, normalize, q_term_critic):
    agent = with_config(fql, normalize_q_loss=normalize, fql_alpha=3.0, q_term_critic=q_term_critic)
    agent = with_distinct_target(agent)
    total, metrics = agent.policy_losses(agent.params, batch, KEY)
    expected = hand_fql(agent, batch, KEY)
    assert expected["distill_loss"] > 1e-3  # the one-step policy is not the flow yet
    np.testing.assert_allclose(float(total), expected.pop("total"), rtol=1e-4)
    for name, value in expected.items():
        np.testing.assert_allclose(float(metrics[name]), value, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    "normalize, q_term_critic", [(False, "guidance"), (True, "guidance"), (False, "online-mean")]
)
def test_edp_loss_by_hand(edp, batch, normalize, q_term_critic):
    agent = with_config(edp, normalize_q_loss=normalize, edp_bc_weight=10.0, q_term_critic=q_term_critic)
    agent = with_distinct_target(agent)
    total, metrics = agent.policy_losses(agent.params, batch, KEY)
    expected = hand_edp(agent, batch, KEY)
    np.testing.assert_allclose(float(total), expected.pop("total"), rtol=1e-4)
    for name, value in expected.items():
        np.testing.assert_allclose(float(metrics[name]), value, rtol=1e-4, atol=1e-6, err_msg=name)


def test_normalised_q_term_is_scale_free(fql, batch):
    """With normalisation, -mean Q / mean |Q| is -1 whenever every Q is negative, whatever its size."""
    agent = with_config(fql, normalize_q_loss=True)
    q = hand_q(agent, batch["observations"], np.zeros((BATCH, agent.chunk_dim)))
    from qgf.agents.fql import q_ascent_loss

    for scale in (1.0, 1e3):
        q_values = -scale * (np.abs(q) + 0.1)
        np.testing.assert_allclose(float(q_ascent_loss(jnp.asarray(q_values), True)), 1.0, rtol=1e-6)
        np.testing.assert_allclose(
            float(q_ascent_loss(jnp.asarray(q_values), False)), -q_values.mean(), rtol=1e-6
        )


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("name", ["fql", "edp"])
@pytest.mark.parametrize(
    "guidance_critic, q_term_critic",
    [("target", "guidance"), ("online", "guidance"), ("target", "online-mean")],
)
def test_policy_term_never_moves_the_critic(fql, edp, batch, name, guidance_critic, q_term_critic):
    agent = {"fql": fql, "edp": edp}[name]
    agent = with_config(agent, guidance_critic=guidance_critic, q_term_critic=q_term_critic)
    grads = policy_grads(agent, batch, KEY)
    for network in ("critic", "value"):
        assert all(not np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(grads[network])), network
    policy_networks = [n for n in grads if n not in ("critic", "value")]
    for network in policy_networks:
        assert any(np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(grads[network])), network


def test_fql_alpha_only_scales_the_distillation_gradient(fql, batch):
    """d/d(onestep) = alpha * grad(distill) + grad(-Q / c); d/d(actor) = grad(L_FM) for every alpha.
    Each piece is assembled independently (hand Euler target, hand aggregation, c held fixed)."""
    agents = {alpha: with_config(fql, normalize_q_loss=True, fql_alpha=alpha) for alpha in (0.0, 1.0, 3.0)}
    grads = {alpha: policy_grads(agent, batch, KEY) for alpha, agent in agents.items()}
    agent, params, obs = agents[1.0], fql.params, batch["observations"]
    bc_key, z = fql_draws(agent, batch, KEY)
    target = jnp.asarray(hand_euler(agent, params["actor"], obs, z), jnp.float32)
    onestep = build_onestep_policy(agent.config, agent.chunk_dim)
    critic = q_ensemble(agent.config)

    def distill(onestep_params):
        return jnp.mean((onestep.apply(onestep_params, obs, z) - target) ** 2)

    mu = onestep.apply(params["onestep"], obs, z)
    scale = np.abs(hand_q(agent, obs, np.clip(f64(mu), -1, 1))).mean()

    def q_term(onestep_params):
        actions = jnp.clip(onestep.apply(onestep_params, obs, z), -1.0, 1.0)
        return -jnp.mean(jnp.min(critic.apply(agent.target_params["critic"], obs, actions), axis=0)) / scale

    actor = build_velocity_field(agent.config, agent.chunk_dim)
    noise, times, noisy, weights = flow_matching_draws(agent, batch, bc_key)
    fm_target = jnp.asarray(f64(batch["actions"]) - noise, jnp.float32)

    def flow_matching(actor_params):
        predicted = actor.apply(
            actor_params, obs, jnp.asarray(noisy, jnp.float32), jnp.asarray(times, jnp.float32)
        )
        return jnp.sum(weights * (predicted - fm_target) ** 2) / weights.sum()

    distill_grad = jax.grad(distill)(params["onestep"])
    q_grad = jax.grad(q_term)(params["onestep"])
    fm_grad = jax.grad(flow_matching)(params["actor"])
    for alpha in agents:
        assert_trees_close(grads[alpha]["onestep"], tree_combination(distill_grad, q_grad, alpha))
        assert_trees_close(grads[alpha]["actor"], fm_grad)


def test_edp_bc_weight_only_scales_the_flow_matching_gradient(edp, batch):
    """d/d(actor) = w_BC * grad(L_FM) + grad(-Q(s, clip(a_t + (1 - t) v)) / c): the Q term's
    gradient flows through v_theta at the flow-matching term's own (a_t, t)."""
    agents = {w: with_config(edp, normalize_q_loss=True, edp_bc_weight=w) for w in (0.0, 1.0, 30.0)}
    grads = {w: policy_grads(agent, batch, KEY)["actor"] for w, agent in agents.items()}
    agent, params, obs = agents[1.0], edp.params, batch["observations"]
    actor = build_velocity_field(agent.config, agent.chunk_dim)
    critic = q_ensemble(agent.config)
    noise, times, noisy, weights = flow_matching_draws(agent, batch, KEY)
    noisy32, times32 = jnp.asarray(noisy, jnp.float32), jnp.asarray(times, jnp.float32)
    fm_target = jnp.asarray(f64(batch["actions"]) - noise, jnp.float32)
    q_now = hand_q(
        agent,
        obs,
        np.clip(
            noisy + (1 - times[:, None]) * f64(actor.apply(params["actor"], obs, noisy32, times32)), -1, 1
        ),
    )
    scale = np.abs(q_now).mean()

    def flow_matching(actor_params):
        predicted = actor.apply(actor_params, obs, noisy32, times32)
        return jnp.sum(weights * (predicted - fm_target) ** 2) / weights.sum()

    def q_term(actor_params):
        denoised = noisy32 + (1.0 - times32)[:, None] * actor.apply(actor_params, obs, noisy32, times32)
        heads = critic.apply(agent.target_params["critic"], obs, jnp.clip(denoised, -1.0, 1.0))
        return -jnp.mean(jnp.min(heads, axis=0)) / scale

    fm_grad = jax.grad(flow_matching)(params["actor"])
    q_grad = jax.grad(q_term)(params["actor"])
    assert any(np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(q_grad))
    for w in agents:
        assert_trees_close(grads[w], tree_combination(fm_grad, q_grad, w))


# ------------------------------------------------------------------ acting and presets


def test_fql_acts_with_the_clipped_one_step_policy(fql, batch):
    obs = batch["observations"]
    key = jax.random.PRNGKey(11)
    agent = fql
    z = jax.random.normal(key, (BATCH, agent.chunk_dim))
    mu = f64(build_onestep_policy(agent.config, agent.chunk_dim).apply(agent.params["onestep"], obs, z))
    assert np.any(np.abs(mu) > 1.0) and np.any(np.abs(mu) < 1.0)  # the clip is exercised
    expected = np.clip(mu, -1.0, 1.0)
    np.testing.assert_allclose(np.asarray(agent.policy_actions(obs, key)), expected, rtol=1e-5, atol=1e-6)
    spec = SamplerSpec("policy", steps=agent.config.flow_steps)
    np.testing.assert_allclose(
        np.asarray(agent.sample_actions(obs, key, 0.0, spec)), expected, rtol=1e-5, atol=1e-6
    )


def test_fql_behaviour_flow_is_its_bc_actor_and_edp_has_none(fql, edp, batch):
    obs, a_t, t = batch["observations"], batch["actions"], jnp.linspace(0.0, 1.0, BATCH)
    expected = velocity(fql, fql.params["actor"])(obs, a_t, t)
    np.testing.assert_array_equal(np.asarray(fql.behavior_velocity_fn(obs, a_t, t)), np.asarray(expected))
    assert edp.behavior_velocity_fn is None


def test_edp_acts_with_the_euler_ode_of_its_flow(edp, batch):
    """The 'none' sampler's key convention: (noise key, estimator key) = split(key)."""
    obs = batch["observations"]
    key = jax.random.PRNGKey(5)
    noise = jax.random.normal(jax.random.split(key)[0], (BATCH, edp.chunk_dim))
    expected = hand_euler(edp, edp.params["actor"], obs, noise)
    np.testing.assert_allclose(np.asarray(edp.policy_actions(obs, key)), expected, rtol=1e-4, atol=1e-5)


def test_presets_pick_up_the_agent_layers():
    paper_fql = load_preset("paper", {"agent": "fql"}, warn=False)
    cpu_fql = load_preset("cpu", {"agent": "fql"}, warn=False)
    paper_edp = load_preset("paper", {"agent": "edp"}, warn=False)
    cpu_edp = load_preset("cpu", {"agent": "edp"}, warn=False)
    assert (paper_fql.fql_alpha, cpu_fql.fql_alpha) == (1000.0, 300.0)
    assert (paper_edp.edp_bc_weight, cpu_edp.edp_bc_weight) == (300.0, 30.0)
    assert not any(c.normalize_q_loss for c in (paper_fql, cpu_fql, paper_edp, cpu_edp))
    # An override still wins over the agent's layer (scene: alpha 300).
    assert load_preset("paper", {"agent": "fql", "fql_alpha": 300}, warn=False).fql_alpha == 300.0
