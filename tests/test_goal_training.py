"""Goal-conditioned training with the DQC critic (issue 11, part 2): the batch adapter, the dqc
critic's losses against an independent assembly of the part-1 functions, gradient isolation,
determinism, exact resume, Q_a as the guidance critic, presets and the `qgf train` errors.

One learner config (`CONFIG`) serves every compiled test, so the update compiles once."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import SMALL, SimulatedKill, equal_trees, make_dataset, small_config
from qgf import checkpoint as ckpt
from qgf import cli
from qgf.agents import AGENT_NAMES, agent_class
from qgf.agents.base import training_sample_fn
from qgf.config import load_preset
from qgf.critics.dqc import distillation_loss, dqc_value_loss, long_critic_loss
from qgf.critics.networks import QEnsemble, ValueNetwork, aggregate_q
from qgf.data.chunks import to_device
from qgf.data.goals import GoalChunkSampler, goal_training_batch, sample_goal_chunks
from qgf.errors import QGFError
from qgf.guidance import SamplerSpec
from qgf.training import fit, read_log, train

OBS_DIM, ACTION_DIM = 4, 2
H_A, H_C = SMALL["horizon"], 4
# Online-only SAC on a single-task env (its preset pins the td critic, which is single-task only).
SINGLE_TASK_AGENTS = ("rlpd",)
GOAL_SETTINGS = {"goal_conditioned": True, "dqc_horizon": H_C, "distill_expectile": 0.7}
CONFIG = small_config(**GOAL_SETTINGS)
pytestmark = pytest.mark.filterwarnings("ignore:log_every=2")
SCHEDULE = {"steps": 8, "log_every": 2, "ckpt_every": 4, "keep_checkpoints": 2}


@pytest.fixture(scope="module")
def data():
    return to_device(make_dataset(obs_dim=OBS_DIM, action_dim=ACTION_DIM))


@pytest.fixture(scope="module")
def trained(data):
    """A dqc agent after 3 steps (so the EMA targets differ from the online networks) and a fixed
    raw goal batch of horizon h_c."""
    agent = agent_class("qgf").create(0, CONFIG.network_obs_dim(OBS_DIM), ACTION_DIM, CONFIG)
    agent, _ = agent.update_many(data, 3, donate=True)
    raw = sample_goal_chunks(data, jax.random.PRNGKey(5), 64, H_C, CONFIG.discount)
    return agent, raw


def test_config_and_sampler_of_a_goal_conditioned_run():
    assert CONFIG.critic == "dqc" and CONFIG.network_obs_dim(OBS_DIM) == 2 * OBS_DIM
    sampler = training_sample_fn(CONFIG)
    assert sampler == GoalChunkSampler(H_C, CONFIG.value_goal_sampling, CONFIG.actor_goal_sampling)
    assert hash(sampler) == hash(training_sample_fn(small_config(**GOAL_SETTINGS, seed=3)))
    assert small_config().network_obs_dim(OBS_DIM) == OBS_DIM and small_config().critic == "iql"


def test_batch_adapter_gives_policy_and_critic_views(trained):
    _, raw = trained
    batch = goal_training_batch(raw, H_A)
    obs, value_goals = np.asarray(raw["observations"]), np.asarray(raw["value_goals"])
    actor_goals = np.asarray(raw["actor_goals"])
    np.testing.assert_array_equal(batch["observations"], np.concatenate([obs, actor_goals], 1))
    np.testing.assert_array_equal(batch["actions"], np.asarray(raw["actions"])[:, : H_A * ACTION_DIM])
    np.testing.assert_array_equal(batch["valid"], np.asarray(raw["valid"])[:, :H_A])
    assert set(batch) == {"observations", "actions", "valid", "critic"}  # no rewards for policies
    view = batch["critic"]
    np.testing.assert_array_equal(view["observations"], np.concatenate([obs, value_goals], 1))
    np.testing.assert_array_equal(
        view["next_observations"], np.concatenate([np.asarray(raw["next_observations"]), value_goals], 1)
    )
    for key in ("actions", "rewards", "masks", "valid"):
        np.testing.assert_array_equal(view[key], raw[key])


def _dqc_terms_by_hand(agent, raw):
    """Eqs. 13-15 from the part-1 functions, on network outputs computed here from the raw batch:
    Eq. 13, Eq. 14 with the target and with the online Q_c, Eq. 15 with the online and the target
    Q_c as teacher."""
    config = agent.config
    q_net = QEnsemble(config.critic_hidden_dims, config.num_critics, config.layer_norm)
    v_net = ValueNetwork(config.critic_hidden_dims, config.layer_norm)
    obs = np.concatenate([np.asarray(raw["observations"]), np.asarray(raw["value_goals"])], 1)
    next_obs = np.concatenate([np.asarray(raw["next_observations"]), np.asarray(raw["value_goals"])], 1)
    long_actions = np.asarray(raw["actions"])
    short_actions = long_actions.reshape(len(obs), H_C, ACTION_DIM)[:, :H_A].reshape(len(obs), -1)
    valid, masks = np.asarray(raw["valid"]), np.asarray(raw["masks"])
    weights = ((valid[:, -1] > 0.5) | (masks < 0.5)).astype(np.float32)
    assert 0 < weights.sum() < len(weights)  # the batch has dropped rows

    @jax.jit
    def terms(online, target):
        online_q_c = q_net.apply(online["long_critic"], obs, long_actions)
        target_q_c = q_net.apply(target["long_critic"], obs, long_actions)
        next_values = v_net.apply(online["value"], next_obs)
        eq13 = long_critic_loss(online_q_c, raw["rewards"], masks, next_values, config.discount, H_C, weights)
        values = v_net.apply(online["value"], obs)
        q_a = q_net.apply(online["critic"], obs, short_actions)

        def eq14(teacher):
            return dqc_value_loss(aggregate_q(teacher, "min"), values, config.expectile, weights)

        def eq15(teacher):
            return distillation_loss(aggregate_q(teacher, "min"), q_a, config.distill_expectile, weights)

        return eq13, eq14(target_q_c), eq14(online_q_c), eq15(online_q_c), eq15(target_q_c)

    return terms(agent.params, agent.target_params)


@pytest.fixture(scope="module")
def dqc_outputs(trained):
    """The dqc critic's losses on the fixed batch, and the gradient of every loss term (the policy
    loss and Eqs. 13, 14, 15) with respect to every network, in one compiled call."""
    agent, raw = trained
    batch = goal_training_batch(raw, H_A)
    names = ("critic_loss", "value_loss", "distill_loss")

    @jax.jit
    def outputs(params):
        def policy(p):
            return agent.policy_losses(p, batch, jax.random.PRNGKey(1))[0]

        def term(name):
            return lambda p: agent.critic.losses(p, agent.target_params, batch)[1][name]

        grads = {"policy": jax.grad(policy)(params), **{name: jax.grad(term(name))(params) for name in names}}
        norms = {
            loss: {
                net: jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g))) for net, g in per_net.items()
            }
            for loss, per_net in grads.items()
        }
        return agent.critic.losses(params, agent.target_params, batch), norms

    return outputs(agent.params)


def test_dqc_loss_is_the_sum_of_the_part_1_losses(trained, dqc_outputs):
    agent, raw = trained
    (total, metrics), _ = dqc_outputs
    eq13, eq14, eq14_online, eq15, eq15_target = _dqc_terms_by_hand(agent, raw)
    # Eq. 14 regresses V onto the EMA target Q_c; Eq. 15 distils the online Q_c into Q_a.
    np.testing.assert_allclose(metrics["critic_loss"], eq13, rtol=1e-5)
    np.testing.assert_allclose(metrics["value_loss"], eq14, rtol=1e-5)
    np.testing.assert_allclose(metrics["distill_loss"], eq15, rtol=1e-5)
    np.testing.assert_allclose(total, eq13 + eq14 + eq15, rtol=1e-5)
    assert abs(float(eq14_online) - float(eq14)) > 1e-6  # the choices are visible on this batch
    assert abs(float(eq15_target) - float(eq15)) > 1e-6


def test_each_loss_moves_only_its_own_network(dqc_outputs):
    """The policy loss never reaches a critic; Eq. 13 moves only Q_c, Eq. 14 only V, Eq. 15 only Q_a."""
    _, norms = dqc_outputs
    owner = {"policy": "actor", "critic_loss": "long_critic", "value_loss": "value", "distill_loss": "critic"}
    for loss, per_network in norms.items():
        per_network = {net: float(norm) for net, norm in per_network.items()}
        assert set(per_network) == {"actor", "critic", "value", "long_critic"}
        assert per_network[owner[loss]] > 0, (loss, per_network)
        assert all(norm == 0 for net, norm in per_network.items() if net != owner[loss]), (loss, per_network)


def test_updates_are_finite_and_deterministic(data, trained):
    first, _ = trained
    again = agent_class("qgf").create(0, 2 * OBS_DIM, ACTION_DIM, CONFIG)
    assert set(again.params) == {"actor", "critic", "value", "long_critic"}
    assert set(again.target_params) == {"critic", "long_critic"}
    initial_target = jax.device_get(again.target_params["long_critic"])  # `again` is donated below
    again, metrics = again.update_many(data, 3, donate=True)
    assert equal_trees(again, first)
    assert all(np.isfinite(float(value)) for value in metrics.values())
    assert {"critic_loss", "value_loss", "distill_loss", "bc_loss", "long_critic_grad_norm"} <= set(metrics)
    assert not equal_trees(again.target_params["long_critic"], initial_target)  # EMA of Q_c moves


def test_guidance_critic_is_q_a_over_the_policy_chunk(trained):
    agent, raw = trained
    obs = jnp.concatenate([raw["observations"][:3], raw["value_goals"][:3]], axis=1)
    actions = agent.sample_actions(obs, jax.random.PRNGKey(0), 0.1, SamplerSpec("qgf", steps=2))
    assert actions.shape == (3, H_A * ACTION_DIM) and bool(jnp.all(jnp.abs(actions) <= 1))
    heads = QEnsemble(CONFIG.critic_hidden_dims, CONFIG.num_critics).apply(
        agent.target_params["critic"], obs, actions
    )
    np.testing.assert_array_equal(agent.q_fn(obs, actions), heads.min(0))  # target Q_a, aggregated


def test_every_agent_traces_its_policy_loss_on_a_goal_batch(trained):
    """Every agent's policy loss reads only the policy view (observations, actions, valid) and Q_a,
    so each one traces on a goal-conditioned batch (shapes only; the critic part and the update
    are the agents' shared code, trained above with qgf)."""
    _, raw = trained
    batch = goal_training_batch(raw, H_A)
    for name in AGENT_NAMES:
        if name in SINGLE_TASK_AGENTS:
            continue
        config = small_config(**GOAL_SETTINGS, agent=name)
        cls = agent_class(name)
        agent = jax.eval_shape(lambda c=config, cls=cls: cls.create(0, 2 * OBS_DIM, ACTION_DIM, c))
        assert set(agent.target_params) == {"critic", "long_critic", *cls.policy_target_networks}, name
        loss, _ = jax.eval_shape(
            lambda a, b: a.policy_losses(a.params, b, jax.random.PRNGKey(0)), agent, batch
        )
        assert loss.shape == (), name


# ----------------------------------------------------------------------------- runs and the CLI


def test_goal_conditioned_run_records_itself_and_resumes_exactly(tmp_path):
    config = small_config(**GOAL_SETTINGS, **SCHEDULE)
    straight = train(config, tmp_path / "straight", dataset=make_dataset(), progress=False)
    meta = ckpt.read_meta(tmp_path / "straight")
    assert meta["goal_conditioned"] is True and (meta["obs_dim"], meta["observation_dim"]) == (8, 4)
    assert json.loads((tmp_path / "straight" / "config.json").read_text())["goal_conditioned"] is True
    assert equal_trees(ckpt.load_run(tmp_path / "straight").agent, straight.agent)
    assert all(np.isfinite(record["distill_loss"]) for record in read_log(tmp_path / "straight"))

    def kill(record):
        if record["step"] == 6:
            raise SimulatedKill

    with pytest.raises(SimulatedKill):  # killed after step 6's log line, before its checkpoint
        train(config, tmp_path / "killed", dataset=make_dataset(), progress=False, on_log=kill)
    assert ckpt.latest_step(tmp_path / "killed") == 4
    resumed = train(config, tmp_path / "killed", dataset=make_dataset(), progress=False)
    assert resumed.resumed_from == 4 and equal_trees(resumed.agent, straight.agent)


def test_goal_presets_load_and_goal_conditioned_selects_dqc():
    preset = load_preset("goal/puzzle-3x3-cpu")
    assert (preset.goal_conditioned, preset.critic) == (True, "dqc")
    assert (preset.dqc_horizon, preset.horizon) == (25, 5)
    assert (preset.distill_expectile, preset.expectile, preset.critic_aggregation) == (0.5, 0.9, "mean")
    assert load_preset("goal/cube-triple").distill_expectile == 0.8
    assert load_preset("cpu", {"goal_conditioned": "true"}).critic == "dqc"
    assert load_preset("cpu").critic == "iql" and not load_preset("cpu").goal_conditioned
    with pytest.raises(QGFError, match="needs critic=dqc"):
        load_preset("cpu", {"goal_conditioned": True, "critic": "iql"})
    with pytest.raises(QGFError, match="critic=dqc is the goal-conditioned critic"):
        load_preset("cpu", {"critic": "dqc"})
    with pytest.raises(QGFError, match="dqc_horizon .h_c. >= horizon"):
        load_preset("cpu", {"goal_conditioned": True, "dqc_horizon": 3})
    with pytest.raises(QGFError, match="must sum to 1"):
        load_preset("cpu", {"goal_conditioned": True, "value_goal_p_rand": 0.5})


def test_cli_trains_a_goal_conditioned_run_and_refuses_mismatched_names(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fit, "load_training_data", lambda config, env, data_dir: make_dataset())
    settings = [
        f"{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}"
        for key, value in SMALL.items()
    ] + [f"dqc_horizon={H_C}", "distill_expectile=0.7", "log_every=2", "ckpt_every=4"]

    def command(env, out, *extra):
        options = ["--preset", "tiny", *settings, "--steps", "4", "--out", str(out)]
        return ["train", "--env", env, *options, *extra]

    out = tmp_path / "run"
    assert cli.main([*command("puzzle-3x3-play-v0", out), "--goal-conditioned", "--no-progress"]) == 0
    assert "at step 4 (new run)" in capsys.readouterr().out
    run = ckpt.load_run(out)
    assert run.config.goal_conditioned and run.config.critic == "dqc" and run.meta["goal_conditioned"]
    assert run.meta["env"] == "puzzle-3x3-play-v0"

    single = "puzzle-3x3-play-singletask-task1-v0"
    assert cli.main([*command(single, tmp_path / "a"), "--goal-conditioned"]) == 2
    err = capsys.readouterr().err.strip()
    assert "use --env puzzle-3x3-play-v0" in err and len(err.splitlines()) == 1
    assert cli.main(command("puzzle-3x3-play-v0", tmp_path / "b")) == 2
    err = capsys.readouterr().err.strip()
    assert "add --goal-conditioned" in err and single in err and len(err.splitlines()) == 1
    assert cli.main([*command(single, tmp_path / "c"), "--goal-conditioned", "critic=iql"]) == 2
    assert "needs critic=dqc" in capsys.readouterr().err
    assert cli.main([*command(single, tmp_path / "d"), "critic=dqc"]) == 2
    assert "--goal-conditioned" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcd")
