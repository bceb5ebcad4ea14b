"""The online phase: the replay buffer's layout, offline ∪ online sampling proportions, labels of
online transitions against the offline loader, the frozen BC flow of online QGF, kill and resume."""

import json
import math

import jax
import numpy as np
import pytest

from _data_fixtures import generated_dir  # noqa: F401  (fixture)
from helpers import equal_trees, make_dataset, small_config
from qgf import checkpoint as ckpt
from qgf.data.chunks import gather_chunks, to_device
from qgf.data.replay import MixedSampler, OnlineBuffer
from qgf.errors import QGFError

HORIZON, DISCOUNT = 3, 0.9


def _fill(buffer, dataset, rows):
    """Write the first `rows` rows of `dataset` into `buffer`, episode by episode, in pieces of
    1-4 steps (as chunks arrive)."""
    rng = np.random.default_rng(0)
    row = 0
    while row < rows:
        buffer.start_episode(dataset.observations[row], dataset.rewards[row], dataset.masks[row])
        while row < rows - 1 and not dataset.terminals[row]:
            n = int(min(rng.integers(1, 5), rows - 1 - row))
            end = np.flatnonzero(dataset.terminals[row:])[0] + row
            n = min(n, end - row)
            span = slice(row + 1, row + n + 1)
            buffer.extend(
                dataset.actions[row : row + n],
                dataset.observations[span],
                dataset.rewards[span],
                dataset.masks[span],
            )
            buffer.device()  # sync in between, as the phase does after every chunk
            row += n
        row += 1
        if dataset.terminals[row - 1]:
            buffer.end_episode()


def _all_chunks(device_data, count):
    starts = device_data["transition_starts"][:count]
    return jax.device_get(gather_chunks(device_data, starts, HORIZON, DISCOUNT))


@pytest.mark.parametrize("rows", [60, 47])  # whole episodes; an episode in progress
def test_buffer_gives_the_chunks_of_the_same_rows_loaded_offline(rows):
    dataset = make_dataset(num_trajectories=3, length=20)
    buffer = OnlineBuffer(100, 4, 2)
    _fill(buffer, dataset, rows)
    # the offline reference: the same rows, the newest one closing the episode in progress
    terminals = dataset.terminals[:rows].copy()
    terminals[-1] = 1
    reference = to_device(
        type(dataset)(
            dataset.observations[:rows],
            dataset.actions[:rows],
            dataset.rewards[:rows],
            dataset.masks[:rows],
            terminals,
        )
    )
    count = int(reference["num_transitions"])
    online = buffer.device()
    assert int(online["num_transitions"]) == count == buffer.num_transitions
    np.testing.assert_array_equal(buffer.terminals, terminals)
    expected, got = _all_chunks(reference, count), _all_chunks(online, count)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    # the stored state rebuilds the same buffer (an episode in progress is closed)
    restored = OnlineBuffer.from_state(buffer.state(), 120)
    assert restored.episode_start is None
    for key in expected:
        np.testing.assert_array_equal(_all_chunks(restored.device(), count)[key], expected[key])


def _mixed_data(n_offline_trajectories, online_rows):
    offline = make_dataset(num_trajectories=n_offline_trajectories, length=11)
    offline.observations[:, 0] = np.arange(offline.size)  # a row id; online rows are negative
    online_source = make_dataset(num_trajectories=4, length=11, seed=1)
    online_source.observations[:, 0] = -1 - np.arange(online_source.size)
    buffer = OnlineBuffer(64, 4, 2)
    if online_rows:
        _fill(buffer, online_source, online_rows)
    return {"offline": to_device(offline), "online": buffer.device()}


def _draw(sampler, data, batch_size=4096, draws=10):
    sample = jax.jit(lambda key: sampler(data, key, batch_size, 1, DISCOUNT)["observations"][:, 0])
    return np.concatenate([np.asarray(sample(jax.random.PRNGKey(i))) for i in range(draws)])


def test_union_sampling_is_uniform_over_offline_and_online_transitions():
    data = _mixed_data(6, 33)  # 60 offline and 30 online transitions
    n_off, n_on = int(data["offline"]["num_transitions"]), int(data["online"]["num_transitions"])
    ids = _draw(MixedSampler("union"), data)
    p = n_on / (n_off + n_on)
    # Binomial proportion of 40960 draws: sd = sqrt(p(1-p)/n) ~ 0.0023; 5 sd fails a correct
    # sampler with probability < 1e-6, while the 50/50 rule (0.5 vs 1/3) is 70 sd away.
    sd = math.sqrt(p * (1 - p) / ids.size)
    assert abs(np.mean(ids < 0) - p) < 5 * sd
    # Uniform over the union's transitions: chi-square over the 90 rows (df 89, sd sqrt(2 df)).
    counts = np.unique(ids, return_counts=True)[1]
    assert counts.size == n_off + n_on
    expected = ids.size / counts.size
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 89 + 5 * math.sqrt(2 * 89)


def test_symmetric_sampling_takes_half_of_every_batch_online():
    data = _mixed_data(6, 33)
    ids = _draw(MixedSampler("symmetric"), data, batch_size=256, draws=1)
    assert np.all(ids[:128] >= 0) and np.all(ids[128:] < 0)  # exactly half each, by construction
    # within each half, uniform over its buffer (chi-square as above)
    ids = _draw(MixedSampler("symmetric"), data)
    for part, size in ((ids[ids >= 0], 60), (ids[ids < 0], 30)):
        counts = np.unique(part, return_counts=True)[1]
        expected = part.size / size
        assert counts.size == size and np.sum((counts - expected) ** 2 / expected) < size + 5 * math.sqrt(
            2 * size
        )
    # an empty online buffer: every row offline (RLPD's first updates)
    assert np.all(_draw(MixedSampler("symmetric"), _mixed_data(6, 0), 256, 1) >= 0)


def test_online_settings_refuse_bad_values():
    from qgf.online import OnlineSettings

    for bad in ({"steps": 0}, {"steps": 5, "utd": 0}, {"steps": 5, "sampling": "half"}):
        with pytest.raises(QGFError):
            OnlineSettings(**bad)
    with pytest.raises(QGFError, match="sampling"):
        MixedSampler("half")


# ---------------------------------------------------------------- a tiny online phase on cube-double

ENV = "cube-double-play-singletask-task1-v0"


@pytest.fixture(scope="module")
def offline_run(generated_dir, tmp_path_factory):  # noqa: F811
    from qgf.training import train

    run = tmp_path_factory.mktemp("online") / "offline"
    config = small_config(agent="qgf", steps=10, log_every=10, ckpt_every=10, horizon=HORIZON)
    train(config, run, env=ENV, data_dir=generated_dir, progress=False)
    return run


def _settings(**changes):
    from qgf.online import OnlineSettings

    # 25-step episodes; checkpoints at 50 and 100 land on episode ends
    return OnlineSettings(
        **{"steps": 100, "max_episode_steps": 25, "log_every": 25, "ckpt_every": 50, **changes}
    )


def test_online_phase_kill_and_resume_labels_and_frozen_flow(offline_run, tmp_path, monkeypatch):
    from qgf import online

    traces = []
    labeller_call = online.StateLabeller.__call__

    def recording(self, trace):
        traces.append(trace)
        return labeller_call(self, trace)

    monkeypatch.setattr(online.StateLabeller, "__call__", recording)
    full = online.finetune(offline_run, tmp_path / "full", _settings(eval_every=50, eval_episodes=1))
    assert (full.env_steps, full.episodes) == (100, 4)
    curve = json.loads((online.online_dir(tmp_path / "full") / "curve.json").read_text())
    assert curve["version"] == 1 and curve["settings"]["eval_every"] == 50
    # the first point is the offline agent, before any env step (where Fig. 2's curves start)
    assert [(p["step"], p["env_steps"]) for p in curve["points"]] == [(10, 0), (60, 50), (110, 100)]
    (result,) = curve["points"][-1]["results"]
    assert result["estimator"] == "qgf" and result["episodes"] == 1 and 0 <= result["success_rate"] <= 1

    # Labels: the same episodes written in the offline layout and read by the offline loader.
    buffer = full.buffer
    qpos = np.concatenate([trace["qpos"] for trace in traces])
    assert qpos.shape[0] == buffer.size
    arrays = {
        "observations": buffer.host["observations"][: buffer.size],
        "actions": buffer.host["actions"][: buffer.size],
        "terminals": buffer.terminals.astype(bool),
        "qpos": qpos.astype(np.float32),
    }
    np.savez(tmp_path / "episodes.npz", **arrays)
    from qgf.data.load import load_file

    loaded = load_file(str(tmp_path / "episodes.npz"), ENV)
    np.testing.assert_array_equal(buffer.host["rewards"][: buffer.size], loaded.rewards)
    np.testing.assert_array_equal(buffer.host["masks"][: buffer.size], loaded.masks)
    count = buffer.num_transitions
    expected, got = _all_chunks(to_device(loaded), count), _all_chunks(buffer.device(), count)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)

    # Online QGF: the BC flow is byte-identical, the critic learned.
    offline = ckpt.load_run(offline_run).agent
    assert full.agent.step == offline.step + 100
    assert equal_trees(full.agent.params["actor"], offline.params["actor"])
    assert not equal_trees(full.agent.params["critic"], offline.params["critic"])
    assert ckpt.load_run(tmp_path / "full").step == full.agent.step  # the run's own checkpoint

    # Kill after the checkpoint at 50 env steps, then resume.
    def kill(record):
        if record["step"] == 50:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        online.finetune(offline_run, tmp_path / "killed", _settings(), on_log=kill)
    directory = online.online_dir(tmp_path / "killed")
    assert [step for step, _ in ckpt.list_checkpoints(directory)] == [50]
    template = ckpt.agent_template(offline.config, ckpt.read_meta(offline_run))
    at_kill = online._latest_snapshot(directory, template)
    reference = online._latest_snapshot(online.online_dir(tmp_path / "full"), template)
    assert reference is not None and int(reference.step) == 100
    snapshots = dict(ckpt.list_checkpoints(online.online_dir(tmp_path / "full")))
    assert 50 in snapshots
    state, _ = ckpt.verified_state(snapshots[50])
    np.testing.assert_array_equal(np.asarray(at_kill.counters), [50, 2, np.asarray(state["counters"])[2]])
    for key, value in state["buffer"].items():
        np.testing.assert_array_equal(np.asarray(at_kill.buffer[key]), np.asarray(value), err_msg=key)
    resumed = online.finetune(offline_run, tmp_path / "killed", _settings())
    assert resumed.resumed_from == 50 and resumed.env_steps == 100
    # 50 is an episode end, so the continuation is the uninterrupted run's, bit for bit (CPU)
    for key, value in full.buffer.state().items():
        np.testing.assert_array_equal(resumed.buffer.state()[key], value, err_msg=key)
    assert equal_trees(resumed.agent.params, full.agent.params)
    assert equal_trees(resumed.agent.opt_state, full.agent.opt_state)

    with pytest.raises(QGFError, match="other settings"):
        online.finetune(offline_run, tmp_path / "killed", _settings(utd=2))


def test_online_command_line_errors_are_one_line(tmp_path, capsys):
    from qgf.cli import main

    assert (
        main(["finetune", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--online-steps", "5"]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    common = ["--env", ENV, "--preset", "tiny", "--out", str(tmp_path / "r")]
    assert main(["train", *common, "--seeds", "0,1", "--online-steps", "5"]) == 2
    assert "one seed" in capsys.readouterr().err
    assert main(["train", *common, "--online-steps", "5", "--online-eval-every", "7"]) == 2
    assert "multiple of --online-log-every" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before any work
