import pytest

from qgf.envs import MANIPULATION_DOMAINS, make_env, manipulation_spec, parse_file_name, parse_name
from qgf.errors import QGFError


def test_singletask_dataset_name_maps_to_env_files_and_task():
    name = parse_name("cube-double-play-singletask-task2-v0")
    assert (name.domain, name.dataset_type, name.singletask, name.task) == ("cube-double", "play", True, 2)
    assert name.env_name == "cube-double-singletask-task2-v0"
    assert name.goal_env_name == "cube-double-v0"
    assert name.dataset_name == "cube-double-play-v0"
    assert (name.train_filename, name.val_filename) == (
        "cube-double-play-v0.npz",
        "cube-double-play-v0-val.npz",
    )
    assert name.slice_dir_name == "cube-double-play-100m-v0"
    assert name.slice_filename(7) == "cube-double-play-v0-007.npz"
    assert name.slice_filename(7, "val") == "cube-double-play-v0-007-val.npz"


def test_default_task_plain_dataset_env_names_and_multi_part_domains():
    default = parse_name("puzzle-4x4-play-singletask-v0")
    assert default.singletask and default.task is None
    assert default.env_name == "puzzle-4x4-singletask-v0"
    plain = parse_name("scene-play-v0")
    assert not plain.singletask and plain.env_name == "scene-v0"
    env = parse_name("cube-triple-singletask-task5-v0")
    assert env.dataset_type is None and env.task == 5 and env.env_name == "cube-triple-singletask-task5-v0"
    big = parse_name("cube-quadruple-play-100m-v0")
    assert big.size_tag == "100m" and big.dataset_name == "cube-quadruple-play-v0"
    maze = parse_name("antmaze-large-navigate-singletask-task1-v0")
    assert maze.env_name == "antmaze-large-singletask-task1-v0" and not maze.is_manipulation


@pytest.mark.parametrize(
    "bad, expected",
    [
        ("cube-dubble-play-v0", "cube-double-play-v0"),
        ("cube-double-play-singletask-task2", "cube-double-play-singletask-task2-v0"),
        ("scene-ply-v0", "scene-play-v0"),
        ("puzzle-3x3-navigate-v0", "puzzle-3x3-play-v0"),
    ],
)
def test_unknown_names_list_close_matches(bad, expected):
    with pytest.raises(QGFError, match="did you mean") as info:
        parse_name(bad)
    assert expected in str(info.value)


def test_rejects_out_of_range_task_and_visual_datasets():
    with pytest.raises(QGFError, match="task must be 1..5"):
        parse_name("cube-single-play-singletask-task9-v0")
    with pytest.raises(QGFError, match="visual"):
        parse_name("visual-cube-single-play-v0")
    with pytest.raises(QGFError, match="not a manipulation domain"):
        manipulation_spec("antmaze-large-navigate-v0")


def test_file_names_are_recognised():
    parsed, split, index = parse_file_name("/data/cube-double-play-v0-012-val.npz")
    assert parsed.dataset_name == "cube-double-play-v0" and split == "val" and index == 12
    parsed, split, index = parse_file_name("scene-play-v0.npz")
    assert parsed.domain == "scene" and split == "train" and index is None
    assert parse_file_name("my-data.npz")[0] is None


def test_make_env_builds_the_singletask_env_offline():
    env = make_env("cube-single-play-singletask-task3-v0")
    observation, _ = env.reset(seed=0)
    assert observation.shape == (MANIPULATION_DOMAINS["cube-single"].observation_dim,)
    assert env.unwrapped._reward_task_id == 3
    assert env.action_space.shape == (5,)
    with pytest.raises(QGFError, match="did you mean"):
        make_env("cube-singel-v0")


def test_goal_env_appends_ogbench_goal_and_keeps_its_success():
    import numpy as np

    from qgf.envs import make_goal_env

    wrapped = make_goal_env("puzzle-3x3-play-v0", 3)
    plain = make_env("puzzle-3x3-play-v0")
    observation, info = wrapped.reset(seed=5)
    reference, reference_info = plain.reset(seed=5, options={"task_id": 3, "render_goal": False})
    dim = reference.shape[0]
    assert wrapped.observation_space.shape == (2 * dim,) and observation.shape == (2 * dim,)
    np.testing.assert_array_equal(observation[:dim], reference)
    # OGBench's goal observation for the seed (its arm pose is drawn without the reset seed, so
    # compare with the goal this reset returned; the buttons' goal states are the task's own)
    np.testing.assert_array_equal(observation[dim:], info["goal"])
    task_part = observation[dim:] == reference_info["goal"]  # what the seed does not move
    assert task_part.sum() >= 9  # at least one state feature per button of the 3x3 puzzle
    assert not np.array_equal(info["goal"], reference)  # goal 3 is not the start
    action = np.zeros(wrapped.action_space.shape)
    stepped, _, _, _, step_info = wrapped.step(action)
    expected, _, _, _, expected_info = plain.step(action)
    # (the physics may differ in the last bits: computing the goal moved the simulator differently)
    np.testing.assert_allclose(stepped, np.concatenate([expected, info["goal"]]), rtol=0, atol=1e-12)
    assert step_info["success"] == expected_info["success"]
    other, _ = make_goal_env("puzzle-3x3-v0", 4).reset(seed=5)
    assert not np.array_equal(other[dim:][task_part], observation[dim:][task_part])  # another goal


def test_goal_env_refuses_singletask_names_and_unknown_goals():
    from qgf.envs import make_goal_env

    with pytest.raises(QGFError, match="single-task name.*puzzle-3x3-v0"):
        make_goal_env("puzzle-3x3-play-singletask-task2-v0", 1)
    with pytest.raises(QGFError, match="goals 1..5"):
        make_goal_env("puzzle-3x3-play-v0", 6)
