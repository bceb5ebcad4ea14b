"""Add-ons (qgf.addons): RobustQ, CFGRL and the distilled denoiser, trained against a frozen run.

Losses are checked against numpy float64 hand computations on small closed-form "networks"; the
samplers against independent computations (jax.jacobian, the plain BC sampler); storage against
the base run's bytes; resume against an uninterrupted run."""

import hashlib
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import equal_trees, fake_sinks, make_dataset, small_config
from qgf.addons import ADDON_NAMES, SAMPLER_ADDONS, addon_class, addons_for_samplers, load_addons
from qgf.addons.base import AddonConfig, list_addons, load_addon, train_addon
from qgf.addons.cfgrl import cfgrl_loss
from qgf.addons.distill import distill_loss
from qgf.addons.robustq import robust_q_loss
from qgf.errors import QGFError
from qgf.guidance import SamplerSpec, estimate_gradient, sample_with_info
from qgf.guidance.estimators import EXTRA_ESTIMATORS

OBS_DIM, D, B = 3, 4, 6
RNG = np.random.default_rng(0)
W_OBS = RNG.normal(size=(OBS_DIM, D))
W_A = RNG.normal(size=(D, D)) * 0.5
U = RNG.normal(size=D)
C = RNG.normal(size=OBS_DIM)


def q_hand(obs, a):  # a concave critic, numpy or jax
    return -((a - 0.3) ** 2).sum(-1) + obs @ C


def q_fn(obs, a):
    return -jnp.sum((a - 0.3) ** 2, axis=-1) + obs @ jnp.asarray(C, jnp.float32)


def velocity_hand(obs, a, t):
    return np.tanh(obs @ W_OBS + a @ W_A) - a * t[:, None]


def velocity_fn(obs, a, t):
    return (
        jnp.tanh(obs @ jnp.asarray(W_OBS, jnp.float32) + a @ jnp.asarray(W_A, jnp.float32)) - a * t[:, None]
    )


@pytest.fixture
def batch():
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(B, OBS_DIM))
    actions = rng.uniform(-0.9, 0.9, size=(B, D))
    noise = rng.normal(size=(B, D))
    times = np.array([0.0, 0.1, 0.25, 0.5, 0.93, 1.0])
    return obs, actions, noise, times


def f32(*arrays):
    return [jnp.asarray(a, jnp.float32) for a in arrays]


# ------------------------------------------------------------------ losses


def test_robust_q_loss_is_eq_20_by_hand(batch):
    obs, actions, noise, times = batch

    def robust_hand(o, a, t):
        return a @ U + o @ C + 2.0 * t

    loss, _ = robust_q_loss(
        lambda o, a, t: a @ jnp.asarray(U, jnp.float32) + o @ jnp.asarray(C, jnp.float32) + 2.0 * t,
        q_fn,
        *f32(obs, actions, noise, times),
    )
    a_t = (1 - times[:, None]) * noise + times[:, None] * actions
    expected = np.mean((robust_hand(obs, a_t, times) - q_hand(obs, actions)) ** 2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_robust_q_loss_gives_no_gradient_to_the_base_critic(batch):
    obs, actions, noise, times = batch
    scale = jnp.float32(1.5)
    grad = jax.grad(lambda s: robust_q_loss(lambda o, a, t: t, lambda o, a: s * q_fn(o, a), *f32(*batch))[0])
    assert float(grad(scale)) == 0.0


def test_cfgrl_loss_is_flow_matching_on_positive_advantage_chunks(batch):
    obs, actions, noise, times = batch
    horizon, action_dim = 2, D // 2
    valid = np.array([[1, 1], [1, 0], [1, 1], [1, 1], [1, 1], [1, 0]], np.float32)
    values = q_hand(obs, actions) + np.array([-1.0, -2.0, 0.5, -0.1, 3.0, -1.0])  # A = [+, +, -, +, -, +]

    loss, advantage = cfgrl_loss(
        velocity_fn,
        q_fn,
        lambda o: jnp.asarray(values, jnp.float32),
        {"observations": f32(obs)[0], "actions": f32(actions)[0], "valid": jnp.asarray(valid)},
        *f32(noise, times),
        action_dim,
    )
    a_t = (1 - times[:, None]) * noise + times[:, None] * actions
    squared = (velocity_hand(obs, a_t, times) - (actions - noise)) ** 2
    weights = np.repeat(valid, action_dim, axis=1) * (q_hand(obs, actions) - values > 0)[:, None]
    assert horizon * action_dim == D
    np.testing.assert_allclose(float(loss), (weights * squared).sum() / weights.sum(), rtol=1e-5)
    np.testing.assert_allclose(advantage, q_hand(obs, actions) - values, rtol=1e-5, atol=1e-5)


def hand_ode(obs, a_t, times, steps):
    """Unguided Euler from t to 1 in n = ceil((1 - t) T) equal steps, row by row, float64."""
    out = np.empty_like(a_t)
    for i in range(len(a_t)):
        n = math.ceil(round((1 - times[i]) * steps, 6))
        h = (1 - times[i]) / max(n, 1)
        a, t = a_t[i : i + 1].copy(), times[i]
        for j in range(n):
            a = a + h * velocity_hand(obs[i : i + 1], a, np.array([t + j * h]))
        out[i] = a[0]
    return out


def test_distill_loss_regresses_onto_the_hand_euler_ode(batch):
    obs, actions, noise, times = batch
    steps = 4
    scale = 0.7

    loss = distill_loss(lambda o, a, t: scale * a, velocity_fn, *f32(obs, actions, noise, times), steps)
    a_t = (1 - times[:, None]) * noise + times[:, None] * actions
    expected = np.mean((scale * a_t - hand_ode(obs, a_t, times, steps)) ** 2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


# ------------------------------------------------------------------ estimators


def denoiser(obs, a, t):
    return jnp.sin(a * 1.3) + 0.2 * velocity_fn(obs, a, t) * (1 - t)[:, None]


def robust_q(obs, a, t):
    return -jnp.sum(jnp.cos(a) * (1 + t[:, None]), axis=-1)


EXTRAS = {"robust_q": robust_q, "denoiser": denoiser, "optimal_velocity": lambda o, a, t: jnp.tanh(a + 0.5)}


def per_row_jacobians(fn, obs, a, t):
    """(B, d, d) from jax.jacobian of the whole batch map (rows are independent: take the diagonal)."""
    full = jax.jacobian(lambda x: fn(obs, x, t))(a)  # (B, d, B, d)
    return jnp.stack([full[i, :, i, :] for i in range(a.shape[0])])


@pytest.mark.parametrize("clip_hat", [False, True])
def test_distill_estimators_against_jax_jacobian(batch, clip_hat):
    obs, _, a_t, times = f32(*batch)
    a_t = 1.5 * a_t  # some estimates leave the box, so the clip matters
    a1_hat = denoiser(obs, a_t, times)
    at = jnp.clip(a1_hat, -1, 1) if clip_hat else a1_hat
    q_grad = jax.vmap(jax.grad(lambda o, a: q_fn(o[None], a[None])[0], argnums=1))(obs, at)
    jacobians = per_row_jacobians(denoiser, obs, a_t, times)

    spec = SamplerSpec("qgf-jacobian-distill", clip_hat=clip_hat)
    g = estimate_gradient(velocity_fn, q_fn, obs, a_t, times, spec, extras=EXTRAS)
    np.testing.assert_allclose(g, jnp.einsum("bij,bi->bj", jacobians, q_grad), rtol=1e-5, atol=1e-5)
    g_identity = estimate_gradient(
        velocity_fn, q_fn, obs, a_t, times, SamplerSpec("qgf-distill", clip_hat=clip_hat), extras=EXTRAS
    )
    np.testing.assert_allclose(g_identity, q_grad, rtol=1e-6, atol=1e-6)
    if not clip_hat:  # then J^T grad Q is the exact gradient of Q(s, v_d(s, a_t, t))
        exact = jax.grad(lambda a: jnp.sum(q_fn(obs, denoiser(obs, a, times))))(a_t)
        np.testing.assert_allclose(g, exact, rtol=1e-5, atol=1e-5)


def test_robustq_and_cfgrl_directions(batch):
    obs, _, a_t, times = f32(*batch)
    g = estimate_gradient(velocity_fn, q_fn, obs, a_t, times, SamplerSpec("robustq"), extras=EXTRAS)
    expected = jnp.sin(a_t) * (1 + times[:, None])  # d/da of -cos(a) (1 + t)
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)
    g = estimate_gradient(velocity_fn, None, obs, a_t, times, SamplerSpec("cfgrl"), extras=EXTRAS)
    np.testing.assert_allclose(g, jnp.tanh(a_t + 0.5) - velocity_fn(obs, a_t, times), rtol=1e-5, atol=1e-6)


def tiny_flow(seed):
    """A tiny nonlinear velocity field with its own weights (a stand-in for a trained flow)."""
    rng = np.random.default_rng(seed)
    w1, w2 = (jnp.asarray(rng.normal(size=s) * 0.6, jnp.float32) for s in ((OBS_DIM + D + 1, 8), (8, D)))

    def flow(obs, a, t):
        return jnp.tanh(jnp.concatenate([obs, a, t[:, None]], axis=-1) @ w1) @ w2

    return flow


def test_cfg_weight_zero_is_the_base_flow_and_weight_one_the_conditioned_flow(batch):
    obs, _, noise, _ = f32(*batch)
    base, optimal = tiny_flow(2), tiny_flow(3)
    extras = {"optimal_velocity": optimal}

    def run(velocity, spec, weight, extras=None):
        return sample_with_info(
            velocity, None, obs, jax.random.key(0), weight, spec, D, noise=noise, extras=extras
        )

    cfg = SamplerSpec("cfgrl", steps=5)
    bc_base = run(base, SamplerSpec("none", steps=5), 0.0)
    bc_optimal = run(optimal, SamplerSpec("none", steps=5), 0.0)
    at_zero, at_one = run(base, cfg, 0.0, extras), run(base, cfg, 1.0, extras)
    np.testing.assert_array_equal(at_zero[1]["unclipped"], bc_base[1]["unclipped"])  # bit for bit
    np.testing.assert_allclose(at_one[1]["unclipped"], bc_optimal[1]["unclipped"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(bc_base[0], bc_optimal[0])  # the test can tell the two flows apart


def test_addon_samplers_need_their_extras_and_work_with_best_of_n(batch):
    obs, _, noise, _ = f32(*batch)
    for estimator in EXTRA_ESTIMATORS:
        with pytest.raises(QGFError, match=r"needs extras\[.*qgf addon train"):
            sample_with_info(velocity_fn, q_fn, obs, jax.random.key(0), 0.1, SamplerSpec(estimator), D)
        spec = SamplerSpec(estimator, steps=3, best_of_n=3)
        actions, info = sample_with_info(
            velocity_fn, q_fn, obs, jax.random.key(1), 0.1, spec, D, extras=EXTRAS
        )
        best = info["candidate_q"].max(axis=1)
        np.testing.assert_allclose(q_fn(obs, actions), best, rtol=1e-6)
    assert not SamplerSpec("cfgrl").uses_critic and SamplerSpec("cfgrl", best_of_n=2).uses_critic


def test_registry_is_consistent():
    assert set(SAMPLER_ADDONS) == set(EXTRA_ESTIMATORS)
    for name in ADDON_NAMES:
        cls = addon_class(name)
        assert cls.name == name and set(cls.samplers) == {s for s, a in SAMPLER_ADDONS.items() if a == name}
        for sampler in cls.samplers:
            assert set(SamplerSpec(sampler).needs) <= set(cls.provides)
    assert addons_for_samplers(["qgf", "qgf-jacobian-distill", SamplerSpec("cfgrl")]) == ["cfgrl", "distill"]
    with pytest.raises(QGFError, match="did you mean 'robustq'"):
        addon_class("robustQ")


def test_settings_parse_and_validate():
    parsed = AddonConfig.parse(["steps=20", "hidden_dims=8,8", "init_from_actor=false", "learning_rate=1e-3"])
    assert parsed == {"steps": 20, "hidden_dims": (8, 8), "init_from_actor": False, "learning_rate": 1e-3}
    with pytest.raises(QGFError, match="did you mean"):
        AddonConfig.parse(["step=20"])
    with pytest.raises(QGFError, match="batch_size must be >= 1"):
        AddonConfig(batch_size=0)


# ------------------------------------------------------------------ on a trained (tiny) run

ADDON_SETTINGS = {"steps": 20, "batch_size": 32, "log_every": 10, "ckpt_every": 10}


def file_hashes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and "addons" not in p.relative_to(directory).parts
    }


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from qgf.training import train

    root = tmp_path_factory.mktemp("addons")
    run_dir = root / "run"
    train(
        small_config(steps=20, log_every=10, ckpt_every=20), run_dir, dataset=make_dataset(), progress=False
    )
    pristine = root / "pristine"
    shutil.copytree(run_dir, pristine)
    before = file_hashes(run_dir)
    for name in ADDON_NAMES:
        train_addon(run_dir, name, overrides=ADDON_SETTINGS, dataset=make_dataset(), progress=False)
    return run_dir, pristine, before


def test_training_addons_leaves_the_base_run_byte_identical(trained_run):
    run_dir, _, before = trained_run
    assert file_hashes(run_dir) == before
    listed = {entry["name"]: entry for entry in list_addons(run_dir)}
    assert set(listed) == set(ADDON_NAMES)
    assert all(entry["step"] == 20 and entry["base"]["step"] == 20 for entry in listed.values())


def test_addon_training_resumes_exactly(trained_run, tmp_path):
    run_dir, pristine, _ = trained_run
    copy = tmp_path / "run"
    shutil.copytree(pristine, copy)
    train_addon(
        copy, "robustq", overrides={**ADDON_SETTINGS, "steps": 10}, dataset=make_dataset(), progress=False
    )
    result = train_addon(copy, "robustq", overrides={"steps": 20}, dataset=make_dataset(), progress=False)
    assert result.resumed_from == 10 and result.step == 20
    from qgf.checkpoint import load_run

    interrupted, straight = load_addon(load_run(copy), "robustq"), load_addon(load_run(run_dir), "robustq")
    assert equal_trees(interrupted.state, straight.state)
    with pytest.raises(QGFError, match="other settings"):
        train_addon(copy, "robustq", overrides={"batch_size": 16}, dataset=make_dataset(), progress=False)


def test_interrupted_or_killed_addon_training_resumes_bit_identically(trained_run, tmp_path):
    """The add-on runs in the agents' training loop: Ctrl-C saves the finished steps, a kill loses
    only the steps since the last checkpoint, and either resumes to the uninterrupted state."""
    from qgf.checkpoint import load_run
    from qgf.training import read_log

    run_dir, pristine, _ = trained_run
    straight = load_addon(load_run(run_dir), "robustq").state
    settings = {**ADDON_SETTINGS, "log_every": 5}  # the schedule may differ: steps stay the same

    def stop_at(step, error):
        def on_log(record):
            if record["step"] == step:
                raise error

        return on_log

    class SimulatedKill(Exception):
        """Stands in for SIGKILL: the loop handles nothing but Ctrl-C, so nothing is saved."""

    for error, saved in ((KeyboardInterrupt, 15), (SimulatedKill, 10)):
        copy = tmp_path / error.__name__ / "run"
        shutil.copytree(pristine, copy)
        with pytest.raises(error):
            train_addon(
                copy,
                "robustq",
                overrides=settings,
                dataset=make_dataset(),
                progress=False,
                on_log=stop_at(15, error),
            )
        assert list_addons(copy)[0]["step"] == saved
        result = train_addon(copy, "robustq", dataset=make_dataset(), progress=False)
        assert result.resumed_from == saved and result.step == 20
        assert equal_trees(load_addon(load_run(copy), "robustq").state, straight)
        assert [record["step"] for record in read_log(result.path)] == [5, 10, 15, 20]


def test_addon_training_logs_to_the_optional_sinks(trained_run, tmp_path, monkeypatch):
    seen = fake_sinks(monkeypatch)
    copy = tmp_path / "run"
    shutil.copytree(trained_run[1], copy)
    train_addon(
        copy,
        "cfgrl",
        overrides=ADDON_SETTINGS,
        dataset=make_dataset(),
        progress=False,
        tensorboard=True,
        wandb=True,
    )
    assert seen["logdirs"] == [str(copy / "addons" / "cfgrl" / "tensorboard")]
    assert ("cfgrl_loss", 20) in seen["scalars"] and seen["scalars"][-1] == ("closed", None)
    assert seen["wandb_configs"][0]["addon"] == "cfgrl" and seen["wandb_steps"] == [10, 20, "finished"]


def test_a_missing_addon_names_the_command_that_trains_it(trained_run, tmp_path):
    from qgf.checkpoint import load_run

    _, pristine, _ = trained_run
    with pytest.raises(QGFError, match=r"no 'distill' add-on; train it with `qgf addon train .* distill`"):
        load_addons(load_run(pristine), ["qgf", "qgf-distill"])


def test_run_policy_samples_addon_samplers(trained_run):
    from qgf.checkpoint import load_run
    from qgf.evaluation.conditions import Condition
    from qgf.policy import AgentPolicy

    run = load_run(trained_run[0])
    specs = [SamplerSpec(name, steps=run.config.flow_steps) for name in ("none", *EXTRA_ESTIMATORS)]
    conditions = [Condition(spec, 0.0 if spec.estimator == "none" else 0.5) for spec in specs]
    conditions.append(Condition(SamplerSpec("cfgrl", steps=run.config.flow_steps), 0.0))
    policy = AgentPolicy.for_run(run, conditions)
    assert set(policy.addons) == set(ADDON_NAMES)
    observations = np.asarray(make_dataset().observations[:4])
    indices = np.arange(len(conditions))
    output = policy(
        np.repeat(observations, len(conditions), 0),
        np.tile(indices, 4),
        np.repeat(np.arange(4), len(conditions)).astype(np.uint32),
    )
    actions = output.actions.reshape(4, len(conditions), -1)
    assert np.all(np.abs(actions) <= 1) and np.isfinite(output.q).all()
    # cfgrl at tau_cfg = 0 is BC (bit for bit within one program: see the test above; here two
    # compiled programs may fuse differently, so to float rounding)
    np.testing.assert_allclose(actions[:, -1], actions[:, 0], atol=1e-6)


def test_analysis_counts_addon_flops(trained_run):
    from qgf.analysis.compute import analytic_flops, dense_flops, network_costs
    from qgf.analysis.methods import AnalysisSettings, PolicyAndCritic, comparison_methods
    from qgf.analysis.qvalues import method_sampler
    from qgf.checkpoint import load_run

    run = load_run(trained_run[0])
    extras = {}
    for loaded in load_addons(run, EXTRA_ESTIMATORS).values():
        extras.update(loaded.extras(run.agent))
    model = PolicyAndCritic(
        run.agent.behavior_velocity_fn, run.agent.q_fn, run.agent.chunk_dim, SamplerSpec(steps=3), extras
    )
    observation = jnp.asarray(make_dataset().observations[:1])
    costs = network_costs(model, observation)
    extra_flops = {name: costs[f"{name}_forward"]["dense_flops"] for name in extras}
    settings = AnalysisSettings(estimators=EXTRA_ESTIMATORS, bfn_n=2)
    assert settings.weight_for("cfgrl") == 3.0
    for method in comparison_methods(model, settings):
        if method.spec.estimator not in EXTRA_ESTIMATORS:
            continue
        sampler = method_sampler(model, method)
        noise = jnp.zeros((1, run.agent.chunk_dim))
        traced = dense_flops(sampler, observation, noise, jax.random.key(0), jnp.zeros((1,)))
        formula = analytic_flops(
            method.spec,
            costs["actor_forward"]["dense_flops"],
            costs["critic_forward"]["dense_flops"],
            run.agent.chunk_dim,
            extra_flops=extra_flops,
        )
        if method.spec.estimator == "robustq":
            # grad(sum(Q_r)) never needs Q_r's value, so XLA's program skips the last (d -> 1) layer's
            # forward product that the formula's (1 + b) F_R counts: at most a few percent
            assert traced <= formula <= 1.05 * traced
        else:
            assert formula == traced, method.label


def test_cli_lists_addons(trained_run, capsys):
    from qgf.cli import main

    assert main(["addon", "list", str(trained_run[0])]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}" in out for name in ADDON_NAMES) and "20/20 steps" in out


def test_evaluate_sets_gradsteps_number_of_steps():
    from qgf.cli import build_parser
    from qgf.commands.evaluate import with_gradstep_steps
    from qgf.evaluation.conditions import sweep_conditions

    specs = with_gradstep_steps(["qgf", "gradstep"], [1, 4], 10, 5)
    conditions = sweep_conditions(specs, [0.01], [1, 4], steps=10)
    gradstep = [c.spec for c in conditions if c.spec.estimator == "gradstep"]
    assert [s.gradstep_steps for s in gradstep] == [5, 5] and {s.best_of_n for s in gradstep} == {1, 4}
    assert all(c.spec.gradstep_steps == 3 for c in conditions if c.spec.estimator == "qgf")
    direct = sweep_conditions(["gradstep"], [0.01], [1], 10, gradstep_steps=5)
    assert [c.spec.gradstep_steps for c in direct] == [5]
    with pytest.raises(QGFError, match="--sampler gradstep"):
        with_gradstep_steps(["qgf"], [1], 10, 5)
    parser = build_parser()
    args = parser.parse_args(["evaluate", "RUN", "--sampler", "gradstep", "--gradstep-steps", "5"])
    assert args.gradstep_steps == 5
