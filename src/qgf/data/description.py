"""`qgf data describe`: validate a dataset file (or slice directory) and summarise it."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from qgf.data.files import NpzFile
from qgf.data.load import read_validated
from qgf.data.slices import find_slices
from qgf.envs import NUM_TASKS, OGBenchName, parse_file_name
from qgf.errors import QGFError

_SUBGOALS = {
    "cube": "each cube within 4 cm of its target",
    "scene": "cube at its target, each button in its target state, drawer and window within 4 cm",
    "puzzle": "each button (light) in its target state",
}


def describe(path: str | os.PathLike, *, task_stats: bool = True) -> dict[str, Any]:
    """Validate and summarise an OGBench-format `.npz` file or a 100M-style slice directory.

    Raises `QGFError` (one line) if the file is missing, corrupt, or fails validation.
    `task_stats` relabels the data for every task of a manipulation domain to report how often each
    task is solved in it (builds the environments, a few seconds).
    """
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        return _describe_directory(path, task_stats=task_stats)
    if not os.path.exists(path):
        raise QGFError(f"file not found: {path}")
    return _describe_file(path, task_stats=task_stats)


def _describe_file(path: str, *, task_stats: bool) -> dict[str, Any]:
    parsed, split, slice_index = parse_file_name(os.path.basename(path))
    with NpzFile(path) as npz:
        has_qpos = "qpos" in npz
        headers = {key: npz.member_shape_dtype(key) for key in npz.keys}
        arrays = read_validated(
            npz, parsed, need_info=has_qpos and parsed is not None and parsed.is_manipulation
        )
    terminals = arrays["terminals"]
    actions = arrays["actions"]
    ends = np.flatnonzero(terminals)
    lengths = np.diff(np.concatenate([[-1], ends]))
    summary: dict[str, Any] = {
        "path": os.path.abspath(path),
        "bytes": os.path.getsize(path),
        "dataset": parsed.dataset_name if parsed else None,
        "split": split,
        "slice": slice_index,
        "keys": {key: (list(shape), str(dtype)) for key, (shape, dtype) in headers.items()},
        "rows": int(terminals.size),
        "trajectories": int(ends.size),
        "transitions": int(terminals.size - ends.size),
        "trajectory_length": {
            "min": int(lengths.min()),
            "mean": float(lengths.mean()),
            "max": int(lengths.max()),
        },
        "observation_dim": int(arrays["observations"].shape[1]),
        "action_dim": int(actions.shape[1]),
        "action_min": actions.min(axis=0).round(4).tolist(),
        "action_max": actions.max(axis=0).round(4).tolist(),
        "action_at_bound_fraction": float((np.abs(actions) >= 1.0).mean()),
        "terminal_semantics": "terminals=1 on the last stored row of each trajectory (time-limit end)",
    }
    summary.update(_reward_semantics(parsed, arrays, has_qpos, task_stats))
    return summary


def _reward_semantics(parsed: OGBenchName | None, arrays: dict, has_qpos: bool, task_stats: bool) -> dict:
    if parsed is None or not parsed.is_manipulation:
        return {
            "reward_semantics": "no rewards stored; load it under a *-singletask-taskN-v0 name to relabel",
            "mask_semantics": "OGBench: masks = 1 - success after single-task relabelling",
        }
    family = parsed.spec.family
    text = {
        "reward_semantics": (
            "no rewards stored (OGBench layout); loading under a single-task name relabels from qpos"
            f"{'/button_states' if parsed.spec.has_button_states else ''}: r = #satisfied - #sub-goals "
            f"(sub-goal: {_SUBGOALS[family]}), 0 only at success; sparse option: -1 unless success"
        ),
        "mask_semantics": "masks = 1 - success(s_t); trajectory ends are time limits, not terminal states",
    }
    if not has_qpos:
        text["reward_semantics"] = "no rewards and no qpos: this file cannot be relabelled for a task"
        return text
    if task_stats:
        from qgf.data.load import relabel

        stats = {}
        for task in range(1, NUM_TASKS + 1):
            rewards, masks = relabel(parsed.with_task(task), arrays, "")
            stats[f"task{task}"] = {
                "success_fraction": float((masks == 0).mean()),
                "reward_mean": float(rewards.mean()),
                "reward_min": float(rewards.min()),
            }
        text["task_stats"] = stats
    return text


def _describe_directory(path: str, *, task_stats: bool) -> dict[str, Any]:
    train, val = find_slices(path, "train"), find_slices(path, "val")
    if not train:
        raise QGFError(f"{path}: no slice files (*.npz) in this directory")
    rows = []
    for slice_path in train + val:
        with NpzFile(slice_path, fix="regenerate the slice or remove it") as npz:
            npz.require(("observations", "actions", "terminals"))
            rows.append(npz.member_shape_dtype("observations")[0][0])
    missing_val = [p for p in train if p[: -len(".npz")] + "-val.npz" not in val]
    first = _describe_file(train[0], task_stats=task_stats)
    sliced = all(parse_file_name(os.path.basename(p))[2] is not None for p in train)
    return {
        "path": os.path.abspath(path),
        "layout": "100M-style slice directory" if sliced else "directory of dataset files",
        "slices": len(train),
        "val_slices": len(val),
        "slices_missing_val": [os.path.basename(p) for p in missing_val],
        "bytes": sum(os.path.getsize(p) for p in train + val),
        "train_rows": int(sum(rows[: len(train)])),
        "val_rows": int(sum(rows[len(train) :])),
        "first_slice": first,
    }


def format_description(summary: dict[str, Any]) -> str:
    """Human-readable text for `qgf data describe`."""
    if summary.get("layout"):
        lines = [
            f"{summary['path']}  ({summary['layout']})",
            f"  slices: {summary['slices']} train, {summary['val_slices']} val, {_mb(summary['bytes'])}",
            f"  rows: {summary['train_rows']:,} train, {summary['val_rows']:,} val",
        ]
        if summary["slices_missing_val"]:
            lines.append(f"  WARNING: no -val file for: {', '.join(summary['slices_missing_val'])}")
        lines.append("  first file:")
        lines.extend("  " + line for line in format_description(summary["first_slice"]).splitlines())
        return "\n".join(lines)
    length = summary["trajectory_length"]
    name = summary["dataset"] or "unrecognised name"
    where = f"slice {summary['slice']:03d}, " if summary["slice"] is not None else ""
    lines = [
        f"{summary['path']}",
        f"  dataset: {name} ({where}{summary['split']} split), {_mb(summary['bytes'])} on disk",
        f"  rows: {summary['rows']:,} = {summary['transitions']:,} transitions + {summary['trajectories']:,} "
        f"trajectory ends (episodes: {summary['trajectories']:,}, length {length['min']}..{length['max']}, "
        f"mean {length['mean']:.1f})",
        f"  observations: {summary['observation_dim']} dims; actions: {summary['action_dim']} dims",
        f"  action min: {_vector(summary['action_min'])}",
        f"  action max: {_vector(summary['action_max'])}  ({summary['action_at_bound_fraction']:.2%} at ±1)",
        f"  terminals: {summary['terminal_semantics']}",
        f"  rewards: {summary['reward_semantics']}",
        f"  masks: {summary['mask_semantics']}",
    ]
    if summary.get("task_stats"):
        lines.append("  per task (fraction of rows solved, mean reward):")
        for task, stats in summary["task_stats"].items():
            lines.append(
                f"    {task}: solved {stats['success_fraction']:.2%}, mean reward {stats['reward_mean']:.3f}"
            )
    lines.append("  keys: " + ", ".join(f"{k} {tuple(s)} {d}" for k, (s, d) in summary["keys"].items()))
    return "\n".join(lines)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _vector(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:+.3f}" for v in values) + "]"
