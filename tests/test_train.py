"""Training loop: run directory, exact resume after a kill, refusals, learning, the `qgf train` CLI."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import SMALL, SimulatedKill, equal_trees, fake_sinks, make_dataset, small_config
from qgf import checkpoint as ckpt
from qgf import cli
from qgf.data.chunks import gather_chunks, to_device
from qgf.errors import QGFError
from qgf.training import fit, read_log, resume, train
from qgf.training.log import combine_metrics

SCHEDULE = {"steps": 12, "log_every": 3, "ckpt_every": 6, "keep_checkpoints": 2}


def kill_at(step):
    def on_log(record):
        if record["step"] == step:
            raise SimulatedKill

    return on_log


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    result = train(small_config(**SCHEDULE), out, dataset=make_dataset(), progress=False)
    return out, result


def test_run_directory_describes_itself(straight_run):
    out, result = straight_run
    assert result.step == 12 and result.resumed_from is None
    assert ckpt.read_config(out) == small_config(**SCHEDULE)
    meta = ckpt.read_meta(out)
    assert meta["dataset"]["name"] == "synthetic-v0" and meta["dataset"]["size"] == 120
    assert (meta["obs_dim"], meta["action_dim"]) == (4, 2)
    assert [step for step, _ in ckpt.list_checkpoints(out)] == [6, 12]
    log = read_log(out)
    assert [record["step"] for record in log] == [3, 6, 9, 12]
    assert all(record["steps_per_s"] > 0 and np.isfinite(record["critic_loss"]) for record in log)
    csv_lines = (out / "log.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,") and len(csv_lines) == 5
    assert equal_trees(ckpt.load_run(out).agent, result.agent)


def test_killed_run_resumes_to_identical_parameters(straight_run, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SimulatedKill):
        train(small_config(**SCHEDULE), out, dataset=make_dataset(), progress=False, on_log=kill_at(9))
    assert ckpt.latest_step(out) == 6  # the kill came after step 9's log line, before a checkpoint
    result = train(small_config(**SCHEDULE), out, dataset=make_dataset(), progress=False)
    assert result.resumed_from == 6 and result.step == 12
    assert equal_trees(result.agent, straight_run[1].agent)
    assert [record["step"] for record in read_log(out)] == [3, 6, 9, 12]  # step 9 logged once


def test_interrupted_run_saves_and_resumes(straight_run, tmp_path):
    out = tmp_path / "run"

    def interrupt(record):
        if record["step"] == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(small_config(**SCHEDULE), out, dataset=make_dataset(), progress=False, on_log=interrupt)
    assert ckpt.latest_step(out) == 9  # Ctrl-C keeps the finished steps
    result = resume(out, dataset=make_dataset(), progress=False)
    assert result.resumed_from == 9
    assert equal_trees(result.agent, straight_run[1].agent)


def test_resume_refuses_other_settings_or_data(straight_run, tmp_path):
    out = tmp_path / "run"
    config = small_config(**{**SCHEDULE, "steps": 6})
    train(config, out, dataset=make_dataset(), progress=False)
    with pytest.raises(QGFError, match=r"different config \(batch_size=64 \(run\) vs 32"):
        train(config.replace(batch_size=32), out, dataset=make_dataset(), progress=False)
    other_data = make_dataset()
    other_data.fingerprint = "regenerated"
    with pytest.raises(QGFError, match="different data"):
        train(config, out, dataset=other_data, progress=False)
    # Schedule fields may change: extending the run continues it.
    longer = train(config.replace(steps=9), out, dataset=make_dataset(), progress=False)
    assert longer.resumed_from == 6 and longer.step == 9
    assert ckpt.read_config(out).steps == 9


def test_training_fits_a_tiny_dataset(tmp_path):
    """BC loss falls and the critic converges to the chunked-IQL fixed point, computed in numpy.

    Data (see make_dataset): reward -1 until the last 3 states of each 20-row trajectory, which
    are solved (reward 0, mask 0). One action per state, so V(s) = Q(s, a_data) at the fixed point
    whatever the expectile, and Q_t = r_t + g r_{t+1} + g^2 min(m_t, m_{t+1}) Q_{t+2} (h = 2).
    """
    gamma, length = 0.9, 20
    dataset = make_dataset(length=length)
    config = small_config(steps=1200, log_every=200, ckpt_every=1200)
    assert (config.discount, config.horizon) == (gamma, 2)
    result = train(config, tmp_path / "run", dataset=dataset, progress=False)

    expected = np.zeros(length)
    for t in range(length - 3, -1, -1):  # chunks starting at t <= length - 3 stay inside the trajectory
        mask = min(dataset.masks[t], dataset.masks[t + 1])
        bootstrap = expected[t + 2] if mask else 0.0
        expected[t] = dataset.rewards[t] + gamma * dataset.rewards[t + 1] + gamma**2 * mask * bootstrap
    starts = np.array([i * length + t for i in range(6) for t in range(length - 2)])
    batch = gather_chunks(to_device(dataset), jnp.asarray(starts), 2, gamma)
    target = np.tile(expected[: length - 2], 6)
    q = np.asarray(result.agent.q_values(batch["observations"], batch["actions"]).min(0))
    v = np.asarray(result.agent.value(batch["observations"]))
    assert np.abs(q - target).mean() < 0.25 and np.abs(q - target).max() < 1.0
    assert np.abs(v - target).mean() < 0.3

    log = read_log(tmp_path / "run")
    assert log[-1]["bc_loss"] < 0.3 * log[0]["bc_loss"]
    assert log[-1]["critic_loss"] < 0.1 * log[0]["critic_loss"]


def test_cli_trains_resumes_and_reports_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fit, "load_training_data", lambda config, env, data_dir: make_dataset())
    out = str(tmp_path / "run")
    settings = [
        f"{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}"
        for key, value in SMALL.items()
    ]
    settings += ["log_every=3", "ckpt_every=6"]

    def command(steps, *extra):
        return [
            *("train", "--env", "cube-single-play-singletask-task1-v0", "--data", str(tmp_path)),
            *("--preset", "tiny", *settings, *extra, "--steps", str(steps), "--out", out, "--no-progress"),
        ]

    assert cli.main(command(6)) == 0
    assert "at step 6 (new run)" in capsys.readouterr().out
    assert ckpt.load_run(out).meta["env"] == "cube-single-play-singletask-task1-v0"
    assert cli.main(command(12)) == 0  # the same command with more steps continues the run
    assert "at step 12 (resumed from step 6)" in capsys.readouterr().out
    assert cli.main(["train", "--out", out, "--no-progress"]) == 0  # the run's own config; nothing to do
    assert "at step 12" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 12

    assert cli.main(command(12, "batch_size=32")) == 2
    assert "different config" in capsys.readouterr().err
    assert (
        cli.main(["train", "--env", "x", "--preset", "tiny", "--out", str(tmp_path / "b"), "batchsize=2"])
        == 2
    )
    assert "did you mean 'batch_size'" in capsys.readouterr().err
    assert cli.main(["train", "--env", "x", "--out", str(tmp_path / "c")]) == 2
    assert "--preset is required" in capsys.readouterr().err


def test_optional_sinks_log_every_line(tmp_path, monkeypatch):
    """TensorBoard / W&B are used only when installed; stand-in modules record what they get."""
    import importlib.util
    import sys

    seen = fake_sinks(monkeypatch)
    config = small_config(**SCHEDULE)
    train(config, tmp_path / "run", dataset=make_dataset(), progress=False, tensorboard=True, wandb=True)
    scalars = seen["scalars"]
    assert ("critic_loss", 3) in scalars and ("bc_loss", 12) in scalars and scalars[-1] == ("closed", None)
    assert seen["wandb_steps"] == [3, 6, 9, 12, "finished"]

    monkeypatch.delitem(sys.modules, "wandb")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(QGFError, match="pip install wandb"):
        train(config, tmp_path / "other", dataset=make_dataset(), progress=False, wandb=True)
    assert not (tmp_path / "other").exists()  # refused before creating anything


def test_log_lines_combine_calls_split_by_a_checkpoint():
    window = [
        (2, 1.0, {"bc_loss": 1.0, "q_min": -3.0, "q_max": 1.0}),
        (6, 2.0, {"bc_loss": 3.0, "q_min": -1.0, "q_max": 4.0}),
    ]
    assert combine_metrics(window) == {
        "bc_loss": (2 * 1.0 + 6 * 3.0) / 8,
        "q_min": -3.0,
        "q_max": 4.0,
        "steps_per_s": 8 / 3.0,
    }
