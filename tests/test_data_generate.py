import hashlib
import os

import numpy as np
import ogbench
import pytest

from _data_fixtures import TINY_EPISODES, TINY_LENGTH, TINY_VAL_EPISODES, generated_dir, no_network  # noqa: F401
from qgf.data import generate, load_dataset
from qgf.data import generation as generation_module
from qgf.data.generation import episode_seeds, scene_cube_visible
from qgf.errors import QGFError

# ogbench's own loader is called directly here; its envs warn about float32 action bounds.
pytestmark = pytest.mark.filterwarnings("ignore:.*precision lowered by casting")


def md5(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.md5(handle.read()).hexdigest()


def test_ogbench_loads_generated_files_unchanged(generated_dir, no_network):  # noqa: F811
    env, train, val = ogbench.make_env_and_datasets(
        "cube-double-play-singletask-task2-v0", dataset_dir=generated_dir, add_info=True
    )
    # ogbench drops each trajectory's last row to build next_observations.
    assert train["observations"].shape == (TINY_EPISODES * (TINY_LENGTH - 1), 37)
    assert val["observations"].shape == (TINY_VAL_EPISODES * (TINY_LENGTH - 1), 37)
    assert train["terminals"].sum() == TINY_EPISODES
    for key in ("rewards", "masks", "next_observations", "qpos", "qvel"):
        assert key in train
    assert set(np.unique(train["rewards"])) <= {-2.0, -1.0, 0.0}
    raw = np.load(os.path.join(generated_dir, "cube-double-play-v0.npz"))
    assert sorted(raw.files) == ["actions", "observations", "qpos", "qvel", "terminals"]
    assert raw["terminals"].dtype == bool and raw["observations"].dtype == np.float32
    assert raw["qpos"].dtype == np.float32 and raw["actions"].dtype == np.float32
    assert np.abs(raw["actions"]).max() <= 1.0
    # qpos is the state the action was taken in: row 0's arm joints match the reset state, and the
    # observation of the next row comes from simulating that action.
    assert not np.allclose(raw["qpos"][0], raw["qpos"][1])


def test_our_loader_agrees_with_ogbench_relabelling(generated_dir):  # noqa: F811
    _, train, _ = ogbench.make_env_and_datasets(
        "cube-double-play-singletask-task4-v0", dataset_dir=generated_dir
    )
    ours = load_dataset("cube-double-play-singletask-task4-v0", generated_dir, action_clip_eps=0.0)
    starts = ours.terminals == 0  # ogbench keeps exactly the rows that start a transition
    np.testing.assert_array_equal(ours.observations[starts], train["observations"])
    np.testing.assert_array_equal(ours.actions[starts], train["actions"])
    np.testing.assert_array_equal(ours.rewards[starts], train["rewards"])
    np.testing.assert_array_equal(ours.masks[starts], train["masks"])


def test_generation_is_deterministic_across_worker_counts(tmp_path):
    kwargs = dict(episodes=2, val_episodes=1, episode_length=25, seed=3, progress=False)
    one = generate("cube-single-play-v0", tmp_path / "one", workers=1, **kwargs)
    two = generate("cube-single-play-v0", tmp_path / "two", workers=2, **kwargs)
    other_seed = generate("cube-single-play-v0", tmp_path / "seed4", workers=1, **{**kwargs, "seed": 4})
    assert two.workers == 2
    for a, b, c in zip(one.paths, two.paths, other_seed.paths, strict=True):
        assert md5(a) == md5(b)  # byte-identical, not just equal arrays
        assert md5(a) != md5(c)
    assert not (tmp_path / "one" / ".qgf-work").exists()


def test_episode_seeds_depend_on_seed_split_index_and_attempt():
    seeds = {episode_seeds(0, "train", 0, 0), episode_seeds(1, "train", 0, 0), episode_seeds(0, "val", 0, 0)}
    seeds |= {episode_seeds(0, "train", 1, 0), episode_seeds(0, "train", 0, 1)}
    assert len(seeds) == 5


def test_interrupted_generation_resumes_without_redoing_episodes(tmp_path, monkeypatch):
    kwargs = dict(episodes=3, val_episodes=1, episode_length=20, seed=5, workers=1, progress=False)
    reference = generate("cube-single-play-v0", tmp_path / "reference", **kwargs)

    real_run = generation_module._run_episode
    calls = []

    def interrupt_after_two(task):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(task)
        return real_run(task)

    monkeypatch.setattr(generation_module, "_run_episode", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate("cube-single-play-v0", tmp_path / "resumed", **kwargs)
    assert not (tmp_path / "resumed" / "cube-single-play-v0.npz").exists()  # nothing half-written

    monkeypatch.setattr(generation_module, "_run_episode", real_run)
    resumed = generate("cube-single-play-v0", tmp_path / "resumed", **kwargs)
    assert resumed.episodes_resumed == 2
    assert resumed.steps_generated == 2 * 20  # only the two missing episodes were simulated
    for a, b in zip(reference.paths, resumed.paths, strict=True):
        assert md5(a) == md5(b)


def test_refuses_to_overwrite_and_rejects_bad_arguments(generated_dir, tmp_path):  # noqa: F811
    with pytest.raises(QGFError, match="--overwrite"):
        generate("cube-double-play-v0", generated_dir, episodes=1, episode_length=5, progress=False)
    with pytest.raises(QGFError, match="only play datasets"):
        generate("cube-double-noisy-v0", tmp_path, episodes=1, progress=False)
    with pytest.raises(QGFError, match="not a manipulation domain"):
        generate("antmaze-large-navigate-v0", tmp_path, episodes=1, progress=False)
    with pytest.raises(QGFError, match="did you mean"):
        generate("cube-dubble-v0", tmp_path, episodes=1, progress=False)
    with pytest.raises(QGFError, match="at least the number of slices"):
        generate("cube-double-v0", tmp_path, episodes=2, slices=3, progress=False)


@pytest.mark.parametrize("env_name, buttons", [("puzzle-3x3-play-v0", 9), ("scene-play-v0", 2)])
def test_button_domains_store_button_states_like_upstream(tmp_path, env_name, buttons, no_network):  # noqa: F811
    generate(env_name, tmp_path, episodes=1, val_episodes=1, episode_length=15, workers=1, progress=False)
    dataset_name = env_name.replace("-play-v0", "-play-singletask-task1-v0")
    _, train, _ = ogbench.make_env_and_datasets(dataset_name, dataset_dir=str(tmp_path), add_info=True)
    assert train["button_states"].shape == (14, buttons)
    raw = np.load(tmp_path / env_name.replace("-v0", "-v0.npz"))
    assert raw["button_states"].dtype == np.int64


def test_scene_health_check_matches_upstream_rule():
    qpos = np.zeros((3, 25), np.float32)
    qpos[:, 14:17] = [0.4, 0.0, 0.02]
    assert scene_cube_visible(qpos)
    qpos[1, 15] = 0.29  # too far right
    assert not scene_cube_visible(qpos)
    qpos[1, 15] = -0.35  # far left: fine only inside the drawer (height 0.06..0.08)
    qpos[1, 16] = 0.07
    assert scene_cube_visible(qpos)
    qpos[1, 16] = 0.02
    assert not scene_cube_visible(qpos)


def test_slices_layout_is_loadable_by_ogbench_per_slice(tmp_path, no_network):  # noqa: F811
    result = generate(
        "cube-single-play-v0", tmp_path, episodes=3, val_episodes=2, episode_length=12, slices=2, workers=1
    )
    directory = tmp_path / "cube-single-play-100m-v0"
    assert result.paths == [str(directory)]
    assert sorted(os.listdir(directory)) == [
        "cube-single-play-v0-000-val.npz",
        "cube-single-play-v0-000.npz",
        "cube-single-play-v0-001-val.npz",
        "cube-single-play-v0-001.npz",
    ]
    rows = []
    for index in range(2):
        path = str(directory / f"cube-single-play-v0-{index:03d}.npz")
        _, train, val = ogbench.make_env_and_datasets(
            "cube-single-play-singletask-task1-v0", dataset_path=path
        )
        rows.append(train["observations"].shape[0])
        assert val["observations"].shape[0] == 11
    assert rows == [11, 22]  # episodes 0 | 1, 2 split contiguously
    # The slices hold exactly the episodes of the standard layout with the same seed.
    standard = generate(
        "cube-single-play-v0", tmp_path / "std", episodes=3, val_episodes=2, episode_length=12, workers=1
    )
    whole = np.load(standard.paths[0])["observations"]
    first = np.load(directory / "cube-single-play-v0-000.npz")["observations"]
    np.testing.assert_array_equal(first, whole[:12])


def test_cli_generate_then_describe(tmp_path, capsys):
    from qgf.cli import main

    args = ["data", "generate", "--env", "cube-single-play-v0", "--episodes", "1", "--val-episodes", "1"]
    args += ["--episode-length", "10", "--workers", "1", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "generated 20 steps" in out and str(tmp_path / "cube-single-play-v0.npz") in out
    assert main(["data", "describe", str(tmp_path / "cube-single-play-v0.npz"), "--no-task-stats"]) == 0
    assert "episodes: 1" in capsys.readouterr().out
    assert main(args) == 2  # exists already
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
