"""The critic contract: every registered critic (`qgf.critics.CRITICS`) obeys it.

On the component alone (its networks, a tiny fixed batch, fixed next actions for a critic whose
backup reads the policy's): its losses are finite and fall when its networks descend them; the
gradient of its total loss with respect to each network equals the gradient of that network's own
loss, computed independently here from the printed equations with every other network's output
taken as a constant (the stop-gradient structure); it declares what it trains.

Through an agent (QGF's BC flow, the cheapest policy): EMA is applied to exactly the component's
target networks, the agent holds exactly the component's networks, and updates are deterministic.
The configs are those of the agent-contract and goal-training tests, so a suite run compiles each
update once (the persistent compilation cache of conftest.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import equal_trees, make_dataset, small_config
from qgf.agents import agent_class
from qgf.critics import CRITICS, critic_for
from qgf.critics.networks import q_ensemble, value_network
from qgf.data.chunks import to_device
from qgf.errors import QGFError

OBS_DIM, ACTION_DIM, BATCH = 4, 2, 8
CONFIGS = {
    "iql": small_config(),
    "td": small_config(critic="td", num_critics=3, critic_aggregation="mean"),
    "dqc": small_config(goal_conditioned=True, dqc_horizon=4, distill_expectile=0.7),
}
# Which network each reported loss trains.
OWNERS = {
    "iql": {"critic_loss": "critic", "value_loss": "value"},
    "td": {"critic_loss": "critic"},
    "dqc": {"critic_loss": "long_critic", "value_loss": "value", "distill_loss": "critic"},
}
# The goal-training tests donate the dqc agent to its update: the same program, compiled once.
DONATE = {"dqc": True}


def test_every_registered_critic_is_in_the_contract():
    assert set(CONFIGS) == set(OWNERS) == set(CRITICS.names)
    for name, config in CONFIGS.items():
        assert config.critic == name and critic_for(config).name == name


# ------------------------------------------------------------------ the component alone


def tiny_batch(config, seed=0):
    """A fixed batch in the layout the critic reads: single-task chunks of `horizon` steps, or the
    critic view (`batch['critic']`, [s, g] observations, chunks of `dqc_horizon` steps)."""
    rng = np.random.default_rng(seed)
    goal = config.goal_conditioned
    obs_dim, horizon = config.network_obs_dim(OBS_DIM), config.dqc_horizon if goal else config.horizon
    valid = np.ones((BATCH, horizon), np.float32)
    valid[1, -1:] = 0.0  # crosses a trajectory end: weight 0 ...
    valid[5, 2:] = 0.0
    masks = np.ones(BATCH, np.float32)
    masks[[2, 5]] = 0.0  # ... unless (dqc) the chunk reached its goal first (row 5)
    view = {
        "observations": rng.normal(size=(BATCH, obs_dim)),
        "actions": rng.uniform(-1, 1, size=(BATCH, horizon * ACTION_DIM)),
        "next_observations": rng.normal(size=(BATCH, obs_dim)),
        "rewards": -rng.uniform(0, 2, size=BATCH),
        "masks": masks,
        "valid": valid,
    }
    view = {key: jnp.asarray(value, jnp.float32) for key, value in view.items()}
    return {"critic": view} if goal else view


@pytest.fixture(scope="module", params=list(CONFIGS))
def component(request):
    """(critic, params, target params (distinct from the online ones), batch, next actions)."""
    config = CONFIGS[request.param]
    critic = critic_for(config)
    obs_dim = config.network_obs_dim(OBS_DIM)
    example = (jnp.zeros((1, obs_dim)), jnp.zeros((1, config.horizon * ACTION_DIM)))
    params, moved = jax.jit(lambda: [critic.init_params(jax.random.key(k), *example) for k in (0, 1)])()
    target = {name: moved[name] for name in critic.target_networks}
    rng = np.random.default_rng(1)
    next_actions = jnp.asarray(rng.uniform(-1, 1, (BATCH, config.horizon * ACTION_DIM)), jnp.float32)
    return critic, params, target, tiny_batch(config), next_actions if critic.needs_next_actions else None


def test_declares_what_it_trains(component):
    critic, params, target, _, _ = component
    assert set(params) == set(critic.networks) and "critic" in critic.networks
    assert set(critic.target_networks) <= set(critic.networks)
    assert set(OWNERS[critic.name].values()) == set(critic.networks)  # every network has a loss
    assert critic.has_value == ("value" in critic.networks)
    assert critic.needs_next_actions == (critic.name == "td")


def _weighted_mean(values, weights):
    return jnp.sum(weights * values) / jnp.maximum(jnp.sum(weights), 1.0)


def _expectile(differences, tau):
    return jnp.where(differences < 0, 1.0 - tau, tau) * differences**2


def _aggregate(heads, how):
    return heads.min(axis=0) if how == "min" else heads.mean(axis=0)


def own_losses(critic, params, target, batch, next_actions) -> dict:
    """Each network's own loss as a function of that network's parameters only (QGF Eqs. 11-15, QAM
    Eq. 26): what it regresses onto is computed from `params` and `target`, which the returned
    functions close over, so their gradient flows through nothing but their argument."""
    config, name = critic.config, critic.name
    q, v = q_ensemble(config).apply, value_network(config).apply
    gamma, how = config.discount, config.critic_aggregation

    def heads_regression(observations, actions, targets, weights):
        return lambda p: jnp.mean(
            jnp.stack(
                [_weighted_mean((head - targets) ** 2, weights) for head in q(p, observations, actions)]
            )
        )

    if name in ("iql", "td"):
        s, a, s_next = batch["observations"], batch["actions"], batch["next_observations"]
        weights = batch["valid"][:, -1]
        if name == "iql":
            bootstrap = v(params["value"], s_next)
        else:
            next_heads = q(target["critic"], s_next, next_actions)
            bootstrap = next_heads.mean(axis=0) - config.critic_pessimism * next_heads.std(axis=0)
        targets = batch["rewards"] + gamma**config.horizon * batch["masks"] * bootstrap
        own = {"critic": heads_regression(s, a, targets, weights)}
        if name == "iql":
            target_q = _aggregate(q(target["critic"], s, a), how)
            own["value"] = lambda p: _weighted_mean(_expectile(target_q - v(p, s), config.expectile), weights)
        return own
    view = batch["critic"]
    s, a, s_next = view["observations"], view["actions"], view["next_observations"]
    weights = jnp.maximum(view["valid"][:, -1], 1.0 - view["masks"])
    targets = view["rewards"] + gamma**config.dqc_horizon * view["masks"] * v(params["value"], s_next)
    target_q_c = _aggregate(q(target["long_critic"], s, a), how)
    q_c = _aggregate(q(params["long_critic"], s, a), how)
    short = a[:, : config.horizon * ACTION_DIM]
    kappa = config.distill_expectile
    return {
        "long_critic": heads_regression(s, a, targets, weights),
        "value": lambda p: _weighted_mean(_expectile(target_q_c - v(p, s), config.expectile), weights),
        "critic": lambda p: jnp.mean(
            jnp.stack([_weighted_mean(_expectile(q_c - head, kappa), weights) for head in q(p, s, short)])
        ),
    }


TRAINING_STEPS = 30


@pytest.fixture(scope="module")
def computed(component):
    """One compiled program per critic (compiling dominates this suite): at `params`, the total
    loss, metrics and gradients of the component and each network's own loss and gradient; and
    the metrics of TRAINING_STEPS Adam steps of the component's networks on its total loss, the
    batch, next actions and targets held where they are."""
    critic, params, target, batch, next_actions = component
    optimizer = optax.adam(3e-3)

    def step(carry, _):
        params, opt_state = carry
        grads, metrics = jax.grad(critic.losses, has_aux=True)(params, target, batch, next_actions)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics

    @jax.jit
    def run(params):
        total, metrics = critic.losses(params, target, batch, next_actions)
        grads = jax.grad(lambda p: critic.losses(p, target, batch, next_actions)[0])(params)
        own = own_losses(critic, params, target, batch, next_actions)
        _, history = jax.lax.scan(step, (params, optimizer.init(params)), None, length=TRAINING_STEPS)
        return {
            "total": total,
            "metrics": metrics,
            "grads": grads,
            "own_values": {network: loss(params[network]) for network, loss in own.items()},
            "own_grads": {network: jax.grad(loss)(params[network]) for network, loss in own.items()},
            "history": history,
        }

    return jax.device_get(run(params))


def test_each_network_gets_exactly_its_own_loss_gradient(component, computed):
    critic = component[0]
    metrics, grads, own_grads = computed["metrics"], computed["grads"], computed["own_grads"]
    owners = OWNERS[critic.name]
    assert set(grads) == set(own_grads) == set(owners.values())
    for loss_name, network in owners.items():
        np.testing.assert_allclose(metrics[loss_name], computed["own_values"][network], rtol=1e-5)
    np.testing.assert_allclose(computed["total"], sum(float(metrics[n]) for n in owners), rtol=1e-6)
    for network, expected in own_grads.items():
        scale = max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(expected))
        assert scale > 0, network
        for got, want in zip(jax.tree.leaves(grads[network]), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * scale)


def test_losses_are_finite_and_fall_on_tiny_data(component, computed):
    """Every loss the component reports falls over its TRAINING_STEPS steps."""
    history = computed["history"]
    assert all(np.isfinite(values).all() for values in history.values())
    for loss_name in OWNERS[component[0].name]:
        losses = history[loss_name]
        assert losses[-1] < 0.7 * losses[0], (loss_name, losses)


def test_value_is_there_exactly_when_the_critic_trains_it(component):
    critic, params, _, batch, _ = component
    observations = (batch["critic"] if critic.config.goal_conditioned else batch)["observations"]
    if critic.has_value:
        assert critic.value(params, observations).shape == (BATCH,)
    else:
        with pytest.raises(QGFError, match=f"critic={critic.name} run has no value network"):
            critic.value(params, observations)


def test_td_starts_its_q_where_iql_does():
    """td trains no V, but keeps iql's key split, so its Q starts (and stays) where it did."""
    config = CONFIGS["td"]
    example = (jnp.zeros((1, OBS_DIM)), jnp.zeros((1, config.horizon * ACTION_DIM)))
    td, iql = jax.jit(
        lambda: [CRITICS.get(name)(config).init_params(jax.random.key(3), *example) for name in ("td", "iql")]
    )()
    assert set(td) == {"critic"} and equal_trees(td["critic"], iql["critic"])


# ------------------------------------------------------------------ through an agent


@pytest.fixture(scope="module")
def device_data():
    return to_device(make_dataset(obs_dim=OBS_DIM, action_dim=ACTION_DIM))


def fresh_agent(name, seed=0):
    config = CONFIGS[name]
    return agent_class("qgf").create(seed, config.network_obs_dim(OBS_DIM), ACTION_DIM, config)


def updated(agent, data, steps, name):
    return agent.update_many(data, steps, donate=DONATE.get(name, False))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ema_moves_exactly_the_target_networks(name, device_data):
    fresh = fresh_agent(name)
    critic = fresh.critic
    assert set(fresh.params) == {"actor", *critic.networks} == set(fresh.opt_state)
    assert set(fresh.target_params) == set(critic.target_networks)
    before = jax.device_get(fresh)
    after, metrics = updated(fresh, device_data, 1, name)
    assert all(np.isfinite(float(value)) for value in metrics.values()), metrics
    rate = CONFIGS[name].target_update_rate
    assert set(after.target_params) == set(critic.target_networks)
    for network in critic.target_networks:
        trees = (before.target_params[network], after.target_params[network], after.params[network])
        for old, new, online in zip(*(jax.tree.leaves(tree) for tree in trees), strict=True):
            expected = (1 - rate) * np.asarray(old) + rate * np.asarray(online)
            np.testing.assert_allclose(np.asarray(new), expected, atol=1e-7)
        assert not equal_trees(before.target_params[network], after.target_params[network])
    # The same seed gives the same agent step by step (`after` is donated here where DONATE says).
    again, _ = updated(updated(fresh_agent(name), device_data, 1, name)[0], device_data, 3, name)
    assert equal_trees(updated(after, device_data, 3, name)[0], again)
    assert not equal_trees(fresh_agent(name, seed=1).params, before.params)
