"""The one atomic-write mechanism every qgf writer uses."""

from __future__ import annotations

import json
import os

import pytest

from qgf import fileio


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "data.bin"
    fileio.atomic_write_bytes(target, b"old contents")
    with pytest.raises(RuntimeError), fileio.atomic_path(target) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(b"half of the new")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_json_and_permissions_of_a_new_file(tmp_path):
    target = tmp_path / "sub" / "x.json"
    fileio.atomic_write_json(target, {"a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2]}
    mode = target.stat().st_mode & 0o777
    assert mode == 0o666 & ~fileio._UMASK  # not mkstemp's owner-only 0o600


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".step_1.msgpack.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "step_1.msgpack").write_bytes(b"complete")
    fileio.remove_stale_temporaries(tmp_path)
    assert os.listdir(tmp_path) == ["step_1.msgpack"]
