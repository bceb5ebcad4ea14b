"""qgf export and qgf.deploy.load: the exported program's actions against the in-library compiled
sampler (`qgf.policy.RunPolicy.actions`) for the same observation and key, bit for bit on the CPU,
for every estimator export supports, best-of-N, the gate, fql's and qam's own policies, an add-on
sampler and a goal-conditioned run; the loader's imports; its one-line errors; the manifest."""

import json
import subprocess
import sys
import textwrap
import warnings
import zipfile

import jax
import numpy as np
import pytest

from helpers import make_dataset, small_config
from qgf import checkpoint
from qgf.agents import agent_class
from qgf.cli import main
from qgf.deploy import export_run, load
from qgf.deploy.export import sampler_spec
from qgf.errors import QGFError
from qgf.guidance.estimators import STANDALONE_ESTIMATORS
from qgf.policy import RunPolicy

OBS_DIM, ACTION_DIM, HORIZON, STEPS = 4, 2, 2, 3
pytestmark = pytest.mark.filterwarnings("ignore:log_every")


def write_run(path, agent="qgf", goal_dim=0, seed=0):
    """An untrained run directory (export reads networks, not their quality)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overrides = {"goal_conditioned": True, "critic": "dqc", "dqc_horizon": 4} if goal_dim else {}
        config = small_config(agent=agent, flow_steps=STEPS, steps=2, **overrides)
    obs_dim = OBS_DIM + goal_dim
    extra = {"env": "cube-single-play-singletask-task1-v0"}
    if goal_dim:
        extra = {
            "env": "puzzle-3x3-play-v0",
            "goal_conditioned": True,
            "observation_dim": OBS_DIM,
            "goal_dim": goal_dim,
        }
    checkpoint.create_run(path, config, obs_dim=obs_dim, action_dim=ACTION_DIM, extra=extra)
    checkpoint.save_checkpoint(path, agent_class(agent).create(seed, obs_dim, ACTION_DIM, config))
    return path


@pytest.fixture(scope="module")
def qgf_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("deploy") / "qgf")


def observations(batch, dim=OBS_DIM, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, dim)).astype(np.float32)


def in_library(run_dir, sampler, weight, best_of_n=1, gate=0.0, obs=None, key=None):
    run = checkpoint.load_run(run_dir)
    spec = sampler_spec(run, sampler, best_of_n, gate)
    actions = RunPolicy.for_run(run, [spec]).actions(obs, key, weight, spec)
    return np.asarray(actions).reshape(len(obs), HORIZON, ACTION_DIM)


def exported(run_dir, tmp_path, sampler, weight, batch=1, **options):
    path = tmp_path / f"{sampler}.qgfpolicy"
    export_run(run_dir, path, sampler=sampler, weight=weight, batch_size=batch, **options)
    return load(path)


# Every estimator that needs no add-on, plus best-of-4 (BC and QGF), GradStep and the gate.
CASES = [(name, 0.0 if name == "none" else 0.3, 1, 0.0) for name in STANDALONE_ESTIMATORS] + [
    ("none", None, 4, 0.0),
    ("qgf", 0.3, 4, 0.0),
    ("qgf", 1.0, 1, 0.05),
    ("qgf-jacobian", 1.0, 1, 0.05),
]


@pytest.mark.parametrize(
    "sampler,weight,best_of_n,gate", CASES, ids=[f"{c[0]}-n{c[2]}-g{c[3]}" for c in CASES]
)
def test_exported_actions_equal_the_in_library_sampler_bit_for_bit(
    qgf_run, tmp_path, sampler, weight, best_of_n, gate
):
    # cpu only here (lowering for cuda too costs time per case); the other tests export both
    platforms = ("cpu", "cuda") if sampler == "qgf" and best_of_n == 1 else ("cpu",)
    policy = exported(qgf_run, tmp_path, sampler, weight, best_of_n=best_of_n, gate=gate, platforms=platforms)
    obs, key = observations(1), jax.random.key(7)
    chunk = policy(obs[0], key)  # one observation (D,) -> one chunk (h, A)
    assert chunk.shape == (HORIZON, ACTION_DIM) and chunk.dtype == np.float32
    expected = in_library(qgf_run, sampler, weight or 0.0, best_of_n, gate, obs, key)[0]
    np.testing.assert_array_equal(chunk, expected)
    # a raw PRNGKey of the same bits gives the same chunk; another key another one
    np.testing.assert_array_equal(policy(obs, jax.random.key_data(key))[0], chunk)
    assert np.all(np.abs(chunk) <= 1)


def test_a_fixed_batch_and_the_weight_as_an_input(qgf_run, tmp_path):
    policy = exported(qgf_run, tmp_path, "qgf", 0.1, batch=3)
    obs, key = observations(3, seed=1), jax.random.key(2)
    chunks = policy(obs, key)
    assert chunks.shape == (3, HORIZON, ACTION_DIM)
    np.testing.assert_array_equal(chunks, in_library(qgf_run, "qgf", 0.1, obs=obs, key=key))
    np.testing.assert_array_equal(
        policy(obs, key, weight=0.7), in_library(qgf_run, "qgf", 0.7, obs=obs, key=key)
    )
    assert not np.array_equal(policy(obs, key, weight=0.7), chunks)


@pytest.mark.parametrize("agent", ["fql", "qam"])
def test_a_training_time_method_exports_its_own_policy(tmp_path, agent):
    run_dir = write_run(tmp_path / agent, agent=agent)
    policy = exported(run_dir, tmp_path, None, None)  # default: the run's own method
    assert policy.manifest["sampler"] == "policy" and policy.manifest["run"]["agent"] == agent
    obs, key = observations(1, seed=3), jax.random.key(5)
    np.testing.assert_array_equal(policy(obs, key), in_library(run_dir, "policy", 0.0, obs=obs, key=key))


def test_an_addon_sampler_exports_with_its_network(qgf_run, tmp_path):
    import shutil

    from qgf.addons.base import train_addon

    run_dir = tmp_path / "with-addon"
    shutil.copytree(qgf_run, run_dir)
    settings = {"steps": 2, "batch_size": 16, "log_every": 2, "ckpt_every": 2, "hidden_dims": (16,)}
    train_addon(run_dir, "cfgrl", overrides=settings, dataset=make_dataset(obs_dim=OBS_DIM), progress=False)
    policy = exported(run_dir, tmp_path, "cfgrl", 2.0)
    obs, key = observations(1, seed=4), jax.random.key(9)
    np.testing.assert_array_equal(policy(obs, key), in_library(run_dir, "cfgrl", 2.0, obs=obs, key=key))
    with pytest.raises(
        QGFError, match=r"has no 'robustq' add-on; train it with `qgf addon train .* robustq`"
    ):
        export_run(run_dir, tmp_path / "r.qgfpolicy", sampler="robustq", weight=1.0)


def test_a_goal_conditioned_run_takes_the_goal_as_an_input(tmp_path):
    run_dir = write_run(tmp_path / "goal", goal_dim=OBS_DIM)
    policy = exported(run_dir, tmp_path, "qgf", 0.2)
    assert policy.manifest["goal_conditioned"] and policy.manifest["goal_dim"] == OBS_DIM
    obs, goal, key = observations(1, seed=5), observations(1, seed=6), jax.random.key(1)
    expected = in_library(run_dir, "qgf", 0.2, obs=np.concatenate([obs, goal], 1), key=key)
    np.testing.assert_array_equal(policy(obs, key, goal=goal), expected)
    with pytest.raises(QGFError, match=r"^this policy is goal-conditioned: pass goal=, float32 \(4,\)"):
        policy(obs, key)


def test_call_time_errors_are_one_line(qgf_run, tmp_path):
    policy = exported(qgf_run, tmp_path, "qgf", 0.1, batch=2)
    obs, key = observations(2), jax.random.key(0)
    cases = [
        (
            lambda: policy(obs[:1], key),
            r"obs has shape \(1, 4\), this policy takes \(2, 4\) \(exported with batch size 2\)",
        ),
        (lambda: policy(obs[:, :3], key), r"obs has shape \(2, 3\)"),
        (
            lambda: policy(obs.astype(np.float64), key),
            r"obs has dtype float64, the policy takes float32: pass obs.astype",
        ),
        (lambda: policy(obs.tolist(), key), r"obs must be a float32 array of shape \(2, 4\), got list"),
        (
            lambda: policy(obs, np.zeros(3, np.uint32)),
            r"key must be jax.random.key\(seed\) or a uint32 \(2,\)",
        ),
        (lambda: policy(obs, jax.random.split(jax.random.key(0))), r"key must be one threefry key"),
        (lambda: policy(obs, key, goal=obs), r"not goal-conditioned .*drop goal="),
        (lambda: policy(obs, key, weight=-1.0), r"weight must be a number >= 0"),
    ]
    for call, message in cases:
        with pytest.raises(QGFError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)
    with pytest.raises(QGFError, match=r"does not exist; write one with `qgf export RUN"):
        load(tmp_path / "missing.qgfpolicy")
    (tmp_path / "junk").write_bytes(b"not a zip")
    with pytest.raises(QGFError, match=r"is not an exported qgf policy"):
        load(tmp_path / "junk")
    from qgf.deploy.loader import DeployedPolicy, read_artifact

    manifest, program, parameters = read_artifact(tmp_path / "qgf.qgfpolicy")
    with pytest.raises(
        QGFError, match=r"exported for cuda, and jax runs on cpu; export it with --platform cpu"
    ):
        DeployedPolicy({**manifest, "platforms": ["cuda"]}, program, parameters)


def test_export_refuses_bad_requests_before_writing(qgf_run, tmp_path):
    out = tmp_path / "never.qgfpolicy"
    for options, message in [
        ({"sampler": "qgf"}, r"sampler 'qgf' is guided: pass its weight with --weight W"),
        ({"sampler": "qgff", "weight": 0.1}, r"unknown estimator 'qgff'.*qgf"),
        ({"sampler": "qgf", "weight": 0.1, "batch_size": 0}, r"--batch must be an integer >= 1"),
        ({"sampler": "qgf", "weight": 0.1, "platforms": ["gpu"]}, r"unknown platform"),
        ({"sampler": "gradstep", "weight": 0.1, "gate": 0.5}, r"gate scales a guidance weight per step"),
    ]:
        with pytest.raises(QGFError, match=message):
            export_run(qgf_run, out, **options)
    assert not out.exists()


def test_the_manifest_records_shapes_identity_versions_and_precision(qgf_run, tmp_path):
    path = tmp_path / "p.qgfpolicy"
    code = main(
        [
            "export",
            str(qgf_run),
            "--sampler",
            "qgf",
            "--weight",
            "0.03",
            "--best-of-n",
            "2",
            "--out",
            str(path),
        ]
    )
    assert code == 0
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["manifest.json", "parameters.npz", "program.bin"]
        manifest = json.loads(archive.read("manifest.json"))
    run = checkpoint.load_run(qgf_run)
    assert manifest["chunk_shape"] == [HORIZON, ACTION_DIM] and manifest["horizon"] == HORIZON
    assert manifest["observation_dim"] == OBS_DIM and manifest["action_bounds"] == [-1.0, 1.0]
    assert (manifest["sampler"], manifest["weight"], manifest["best_of_n"]) == ("qgf", 0.03, 2)
    assert manifest["label"] == "qgf+bfn-2" and manifest["sampler_spec"]["steps"] == STEPS
    assert (
        manifest["platforms"] == ["cpu", "cuda"]
        and manifest["matmul_precision"]["setting"] == run.config.matmul_precision
    )
    assert manifest["run"]["step"] == run.step and len(manifest["run"]["config_hash"]) == 16
    assert manifest["versions"]["jax"] == jax.__version__
    assert main(["export", str(qgf_run), "--sampler", "qgf", "--out", str(tmp_path / "x")]) == 2


def test_the_loader_imports_only_jax_and_numpy(qgf_run, tmp_path):
    path = tmp_path / "bc.qgfpolicy"
    export_run(qgf_run, path, sampler="none", batch_size=1)
    obs = observations(1, seed=8)
    np.save(tmp_path / "obs.npy", obs)
    expected = in_library(qgf_run, "none", 0.0, obs=obs, key=jax.random.key(4))
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        ALLOWED = {{"qgf", "qgf.errors", "qgf.registry", "qgf.compilation", "qgf.deploy",
                   "qgf.deploy.loader"}}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                top = name.split(".")[0]
                heavy = ("flax", "optax", "ogbench", "mujoco", "ray")
                if (top == "qgf" and name not in ALLOWED) or top in heavy:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np, jax
        import qgf.deploy
        policy = qgf.deploy.load({str(path)!r})
        chunk = policy(np.load({str(tmp_path / "obs.npy")!r}), jax.random.key(4))
        np.save({str(tmp_path / "chunk.npy")!r}, chunk)
        print(sorted(m for m in sys.modules if m.startswith("qgf")))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == str(
        sorted(["qgf", "qgf.compilation", "qgf.deploy", "qgf.deploy.loader", "qgf.errors", "qgf.registry"])
    )
    np.testing.assert_array_equal(np.load(tmp_path / "chunk.npy"), expected)
