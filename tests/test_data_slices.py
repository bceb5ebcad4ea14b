import gc
import json
import weakref

import numpy as np
import pytest

from _data_fixtures import generated_dir, synthetic_arrays, write_npz  # noqa: F401
from qgf.cli import main
from qgf.data import SliceDataset, describe, format_description, iterate_slices
from qgf.errors import QGFError

NAME = "cube-double-play-v0"


@pytest.fixture
def slice_dir(tmp_path):
    directory = tmp_path / "cube-double-play-100m-v0"
    directory.mkdir()
    for index in range(4):
        arrays = synthetic_arrays(lengths=(3 + index, 4), seed=index)
        write_npz(directory / f"{NAME}-{index:03d}.npz", arrays)
        write_npz(directory / f"{NAME}-{index:03d}-val.npz", synthetic_arrays(lengths=(3,), seed=10 + index))
    return directory


def test_discovers_slices_in_order_and_infers_the_dataset(slice_dir):
    slices = SliceDataset(slice_dir)
    assert len(slices) == 4 and slices.name == NAME
    assert [p.rsplit("/", 1)[-1] for p in slices.paths] == [f"{NAME}-00{i}.npz" for i in range(4)]
    assert [d.size for d in slices] == [7, 8, 9, 10]
    assert [d.size for d in SliceDataset(slice_dir, split="val")] == [3, 3, 3, 3]
    assert slices.total_bytes > 0


def test_prefetching_iteration_holds_at_most_two_slices(slice_dir):
    alive = weakref.WeakSet()
    seen = []
    for dataset in iterate_slices(slice_dir, cycle=True):
        alive.add(dataset)
        seen.append(dataset.size)
        gc.collect()
        assert len(alive) <= 2  # the slice in use and the one being prefetched
        if len(seen) == 6:
            break
    assert seen == [7, 8, 9, 10, 7, 8]  # cycles through the directory


def test_singletask_name_relabels_each_slice(generated_dir, tmp_path):  # noqa: F811
    directory = tmp_path / "slices"
    directory.mkdir()
    source = np.load(f"{generated_dir}/{NAME}.npz")
    write_npz(directory / f"{NAME}-000.npz", {k: source[k] for k in source.files})
    (data,) = list(SliceDataset(directory, "cube-double-play-singletask-task2-v0"))
    assert data.task == 2 and set(np.unique(data.rewards)) <= {-2.0, -1.0, 0.0}


def test_slice_directory_errors(tmp_path, slice_dir):
    with pytest.raises(QGFError, match="qgf data generate --env cube-double-play-v0 .* --slices"):
        SliceDataset(tmp_path / "missing", "cube-double-play-singletask-task2-v0")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(QGFError, match="no train slice files"):
        SliceDataset(empty)
    (slice_dir / f"{NAME}-002.npz").write_bytes(b"truncated")
    slices = SliceDataset(slice_dir)
    with pytest.raises(QGFError, match=f"corrupt or truncated npz file .*{NAME}-002.npz"):
        list(slices)


def test_describe_file_and_directory(generated_dir, slice_dir, capsys):  # noqa: F811
    summary = describe(f"{generated_dir}/{NAME}.npz")
    assert (summary["rows"], summary["trajectories"], summary["transitions"]) == (120, 3, 117)
    assert summary["dataset"] == NAME and summary["observation_dim"] == 37
    assert len(summary["action_min"]) == 5 and max(summary["action_max"]) <= 1.0
    assert set(summary["task_stats"]) == {f"task{t}" for t in range(1, 6)}
    text = format_description(summary)
    assert "episodes: 3" in text and "masks = 1 - success" in text and "action max" in text

    directory = describe(slice_dir, task_stats=False)
    assert directory["slices"] == 4 and directory["train_rows"] == 7 + 8 + 9 + 10
    assert "100M-style slice directory" in format_description(directory)

    assert main(["data", "describe", str(slice_dir), "--json", "--no-task-stats"]) == 0
    assert json.loads(capsys.readouterr().out)["val_rows"] == 12
