import os
import shutil

import numpy as np
import pytest

from _data_fixtures import generated_dir, no_network, synthetic_arrays, write_npz  # noqa: F401
from qgf.cli import main
from qgf.data import DATA_DIR_ENV_VAR, load_dataset, load_file
from qgf.errors import QGFError

TASK2 = "cube-double-play-singletask-task2-v0"


def test_singletask_load_contract(generated_dir, no_network):  # noqa: F811
    data = load_dataset(TASK2, generated_dir)
    assert data.observations.dtype == np.float32 and data.observations.shape == (120, 37)
    for array in (data.actions, data.rewards, data.masks, data.terminals):
        assert array.dtype == np.float32 and array.shape[0] == data.size
    assert data.terminals.sum() == 3 and data.terminals[-1] == 1
    assert (data.num_trajectories, data.num_transitions) == (3, 117)
    assert data.task == 2 and data.split == "train"
    # Dense single-task reward: -(unsolved sub-goals) for two cubes, mask 0 exactly where solved.
    assert set(np.unique(data.rewards)) <= {-2.0, -1.0, 0.0}
    np.testing.assert_array_equal(data.masks == 0, data.rewards == 0)
    assert len(data.fingerprint) == 16 and data.metadata()["fingerprint"] == data.fingerprint
    assert "task 2" in data.reward_semantics


def test_sparse_rewards_clip_epsilon_and_validation_split(generated_dir):  # noqa: F811
    dense = load_dataset(TASK2, generated_dir, action_clip_eps=0.0)
    sparse = load_dataset(TASK2, generated_dir, sparse=True)
    np.testing.assert_array_equal(sparse.rewards, np.where(dense.rewards == 0, 0.0, -1.0))
    np.testing.assert_array_equal(sparse.masks, dense.masks)
    assert np.abs(dense.actions).max() == 1.0  # the oracle's actions do reach the bounds
    assert np.abs(sparse.actions).max() <= 1.0 - 1e-5
    val = load_dataset(TASK2, generated_dir, split="val")
    assert val.split == "val" and val.size == 40 and val.path.endswith("cube-double-play-v0-val.npz")


def test_plain_dataset_name_has_no_task(generated_dir):  # noqa: F811
    data = load_dataset("cube-double-play-v0", generated_dir)
    assert data.task is None and not data.rewards.any() and (data.masks == 1).all()


def test_data_dir_from_environment_variable(generated_dir, monkeypatch):  # noqa: F811
    monkeypatch.setenv(DATA_DIR_ENV_VAR, generated_dir)
    assert load_dataset(TASK2).path.startswith(os.path.abspath(generated_dir))


def test_missing_file_names_the_generate_command(tmp_path, no_network):  # noqa: F811
    with pytest.raises(QGFError) as info:
        load_dataset(TASK2, tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cube-double-play-v0.npz") in message
    assert f"qgf data generate --env cube-double-play-v0 --out {tmp_path}" in message
    assert "\n" not in message


def test_unknown_name_lists_close_matches(tmp_path):
    with pytest.raises(QGFError, match="did you mean 'cube-double-play-singletask-task2-v0'"):
        load_dataset("cube-double-play-singletask-tsk2-v0", tmp_path)
    with pytest.raises(QGFError, match="environment name"):
        load_dataset("cube-double-v0", tmp_path)


def _corrupt(arrays, key, value):
    arrays = dict(arrays)
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    return arrays


BASE = synthetic_arrays()
NAN_OBS = BASE["observations"].copy()
NAN_OBS[3, 1] = np.nan
INF_QPOS = BASE["qpos"].copy()
INF_QPOS[5, 0] = np.inf
BIG_ACTION = BASE["actions"].copy()
BIG_ACTION[2, 4] = 1.5
OPEN_END = BASE["terminals"].copy()
OPEN_END[-1] = False


@pytest.mark.parametrize(
    "arrays, message",
    [
        (_corrupt(BASE, "actions", None), "missing key.*actions"),
        (_corrupt(BASE, "qpos", None), "missing key.*qpos.*needed to relabel"),
        (_corrupt(BASE, "observations", BASE["observations"][:, :28]), "shape mismatch.*37 dims.*28"),
        (_corrupt(BASE, "actions", BASE["actions"][:-1]), "shape mismatch: actions has 8 rows"),
        (_corrupt(BASE, "actions", BASE["actions"][:, :3]), "actions must have 5 dims"),
        (_corrupt(BASE, "qpos", BASE["qpos"][:, 0]), r"qpos must be \(N, dims\), got shape \(9,\)"),
        (_corrupt(BASE, "terminals", np.array(True)), r"terminals must be \(N,\)"),
        (
            _corrupt(BASE, "observations", BASE["observations"].astype(np.int32)),
            "dtype mismatch: observations",
        ),
        (_corrupt(BASE, "terminals", BASE["terminals"].astype(np.float32) * 2), "terminals must be 0 or 1"),
        (_corrupt(BASE, "observations", NAN_OBS), "observations contains NaN or inf in 1 row.*row 3"),
        (_corrupt(BASE, "qpos", INF_QPOS), "qpos contains NaN or inf.*row 5"),
        (_corrupt(BASE, "actions", BIG_ACTION), r"outside \[-1, 1\].*1\.5 at row 2"),
        (_corrupt(BASE, "terminals", OPEN_END), "last row is not a trajectory end"),
    ],
)
def test_each_bad_input_gets_its_error(tmp_path, arrays, message):
    path = write_npz(tmp_path / "cube-double-play-v0.npz", arrays)
    with pytest.raises(QGFError, match=message) as info:
        load_file(path, TASK2)
    assert "\n" not in str(info.value)


def test_corrupt_and_truncated_archives(generated_dir, tmp_path):  # noqa: F811
    source = os.path.join(generated_dir, "cube-double-play-v0.npz")
    truncated = tmp_path / "cube-double-play-v0.npz"
    truncated.write_bytes(open(source, "rb").read()[:5000])
    with pytest.raises(QGFError, match="corrupt or truncated npz"):
        load_dataset(TASK2, tmp_path)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(QGFError, match="corrupt or truncated npz"):
        load_file(str(garbage), TASK2)
    # A flipped byte inside a compressed member is caught by the CRC/zlib check when reading it.
    flipped = tmp_path / "flipped.npz"
    shutil.copy(source, flipped)
    data = bytearray(flipped.read_bytes())
    data[len(data) // 3] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(QGFError, match="corrupt"):
        load_file(str(flipped), TASK2)


def test_describe_bad_file_exits_nonzero_with_one_line(tmp_path, capsys):
    bad = write_npz(tmp_path / "cube-double-play-v0.npz", _corrupt(BASE, "actions", BIG_ACTION))
    assert main(["data", "describe", bad]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qgf: error: ") and "outside [-1, 1]" in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert main(["data", "describe", str(tmp_path / "nope.npz")]) == 2
    assert "file not found" in capsys.readouterr().err
