"""Run directories: round trip, atomicity, incomplete/corrupt/incompatible runs, retention."""

import json

import jax
import msgpack
import pytest

from helpers import equal_trees, make_dataset, small_config
from qgf import checkpoint as ckpt
from qgf.agents.qgf import QGFAgent
from qgf.data.chunks import to_device
from qgf.errors import QGFError

DATASET = {"name": "synthetic-v0", "path": "/data/x.npz", "size": 120, "fingerprint": "abc123"}


@pytest.fixture(scope="module")
def agents():
    """Three agents at steps 0, 3 and 6 (trained: optimiser states are non-trivial)."""
    agent = QGFAgent.create(0, 4, 2, small_config())
    data = to_device(make_dataset())
    mid, _ = agent.update_many(data, 3)
    late, _ = mid.update_many(data, 3)
    return agent, mid, late


def new_run(tmp_path, config=None):
    config = config or small_config()
    ckpt.create_run(tmp_path / "run", config, obs_dim=4, action_dim=2, dataset=DATASET, extra={"env": "x"})
    return tmp_path / "run"


def test_round_trip_restores_every_array_and_the_description(tmp_path, agents):
    run_dir = new_run(tmp_path)
    _, mid, late = agents
    ckpt.save_checkpoint(run_dir, mid, metrics={"bc_loss": 1.0})
    ckpt.save_checkpoint(run_dir, late)
    run = ckpt.load_run(run_dir)  # the path alone
    assert run.step == 6 and run.config == small_config()
    assert equal_trees(run.agent, late)
    assert jax.tree.structure(run.agent) == jax.tree.structure(late)
    assert run.meta["dataset"] == DATASET and run.meta["env"] == "x"
    assert {"qgf", "jax", "flax", "ogbench"} <= set(run.meta["versions"])
    assert (run.meta["obs_dim"], run.meta["action_dim"], run.meta["chunk_dim"]) == (4, 2, 4)
    # by step and by file
    assert equal_trees(ckpt.load_run(run_dir, step=3).agent, mid)
    assert equal_trees(ckpt.load_run(ckpt.checkpoint_path(run_dir, 3)).agent, mid)
    sidecar = json.loads(ckpt.checkpoint_path(run_dir, 3).with_suffix(".json").read_text())
    assert sidecar["step"] == 3 and sidecar["metrics"] == {"bc_loss": 1.0}
    # a loaded agent keeps training
    resumed, _ = run.agent.update_many(to_device(make_dataset()), 3)
    assert int(resumed.step) == 9


def test_checkpoint_is_plain_msgpack(tmp_path, agents):
    """No pickle: any msgpack reader decodes the file; arrays are flax's ext-typed ndarrays."""
    run_dir = new_run(tmp_path)
    path = ckpt.save_checkpoint(run_dir, agents[1])
    decoded = msgpack.unpackb(path.read_bytes(), strict_map_key=False)
    assert set(decoded) == {"params", "target_params", "opt_state", "rng", "step"}
    assert set(decoded["params"]) == {"actor", "critic", "value"}
    assert json.loads((run_dir / "config.json").read_text())["actor_hidden_dims"] == [32, 32]


def test_keeps_the_newest_checkpoints(tmp_path, agents):
    run_dir = new_run(tmp_path)
    for agent in agents:
        ckpt.save_checkpoint(run_dir, agent, keep=2)
    assert [step for step, _ in ckpt.list_checkpoints(run_dir)] == [3, 6]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step_0000003.json",
        "step_0000003.msgpack",
        "step_0000006.json",
        "step_0000006.msgpack",
    ]


def test_incomplete_checkpoint_and_temporaries_are_ignored(tmp_path, agents):
    """A kill between the msgpack and its sidecar, or during a write, leaves the previous state."""
    run_dir = new_run(tmp_path)
    ckpt.save_checkpoint(run_dir, agents[1])
    late_path = ckpt.save_checkpoint(run_dir, agents[2])
    late_path.with_suffix(".json").unlink()  # killed before the sidecar was written
    (run_dir / "checkpoints" / ".tmp-half-written").write_bytes(b"\x00" * 10)
    assert ckpt.latest_step(run_dir) == 3
    assert equal_trees(ckpt.load_run(run_dir).agent, agents[1])


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "file.json"
    ckpt.atomic_write_json(target, {"old": 1})

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", failing_replace)
    with pytest.raises(OSError):
        ckpt.atomic_write_json(target, {"new": 2})
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, agents):
    run_dir = new_run(tmp_path)
    path = ckpt.save_checkpoint(run_dir, agents[1])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(QGFError, match="corrupt"):
        ckpt.load_run(run_dir)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda run: None, "no complete checkpoint"),
        (lambda run: (run / "config.json").unlink(), "config.json is missing"),
        (lambda run: (run / "meta.json").write_text("{not json"), "corrupt"),
        (lambda run: (run / "config.json").write_text('{"batch_sise": 3}'), "did you mean 'batch_size'"),
        (
            lambda run: (run / "meta.json").write_text(
                json.dumps({**json.loads((run / "meta.json").read_text()), "format_version": 99})
            ),
            "format version 99",
        ),
    ],
)
def test_broken_runs_are_clear_errors(tmp_path, agents, damage, message):
    run_dir = new_run(tmp_path)
    if message != "no complete checkpoint":
        ckpt.save_checkpoint(run_dir, agents[1])
    damage(run_dir)
    with pytest.raises(QGFError, match=message):
        ckpt.load_run(run_dir)


def test_missing_and_foreign_directories(tmp_path):
    with pytest.raises(QGFError, match="does not exist"):
        ckpt.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QGFError, match="not a qgf run directory"):
        ckpt.load_run(tmp_path / "empty")


def test_config_that_does_not_match_the_arrays_is_refused(tmp_path, agents):
    run_dir = new_run(tmp_path)
    ckpt.save_checkpoint(run_dir, agents[1])
    edited = small_config(critic_hidden_dims=(64, 32)).to_dict()
    (run_dir / "config.json").write_text(json.dumps(edited))
    with pytest.raises(QGFError, match="does not match its config"):
        ckpt.load_run(run_dir)


def test_format_1_runs_of_qgf_0_1_still_load(tmp_path, agents):
    """A run written before the agent family (format 1: one field per network) loads unchanged."""
    import hashlib

    import flax.serialization

    run_dir = new_run(tmp_path)
    late = agents[2]
    state = flax.serialization.to_state_dict(jax.device_get(late))
    old_state = {
        **{f"{name}_params": state["params"][name] for name in ("actor", "critic", "value")},
        **{f"{name}_opt_state": state["opt_state"][name] for name in ("actor", "critic", "value")},
        "target_critic_params": state["target_params"]["critic"],
        "rng": state["rng"],
        "step": state["step"],
    }
    payload = flax.serialization.msgpack_serialize(old_state)
    path = ckpt.checkpoint_path(run_dir, 6)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    sidecar = {
        "format_version": 1,
        "step": 6,
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    meta = json.loads((run_dir / "meta.json").read_text())
    (run_dir / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    config = json.loads((run_dir / "config.json").read_text())
    del config["agent"], config["critic"]  # format-1 configs predate these keys
    (run_dir / "config.json").write_text(json.dumps(config))
    run = ckpt.load_run(run_dir)
    assert run.config.agent == "qgf" and equal_trees(run.agent, late)

    (run_dir / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(QGFError, match="format version 99"):
        ckpt.load_run(run_dir)
