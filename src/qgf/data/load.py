"""Loading and validating OGBench dataset files from a local directory (never the network).

Layout kept in memory (the "compact" OGBench layout): every stored step is one row, and
`terminals[i] = 1` marks the last stored row of a trajectory. That row's observation is the final
state of the trajectory; its action has no stored successor, so it never starts a transition. This
keeps s_{t+h} available for action chunks that end exactly at a trajectory end, without duplicating
observations into a `next_observations` array.

Rewards and masks follow OGBench's single-task relabelling (`ogbench.relabel_utils`): for row i,
r_i = (#satisfied sub-goals − #sub-goals) at state s_i, m_i = 1 − success(s_i).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from qgf.data.files import NpzFile, fingerprint, one_line
from qgf.envs import ACTION_DIM, OGBenchName, ignore_box_precision_warnings, parse_name
from qgf.errors import QGFError

DATA_DIR_ENV_VAR = "QGF_DATA_DIR"
OGBENCH_DEFAULT_DATA_DIR = "~/.ogbench/data"
REQUIRED_KEYS = ("observations", "actions", "terminals")
SPLITS = ("train", "val")


def default_data_dir() -> str:
    """`$QGF_DATA_DIR` if set, else OGBench's own default `~/.ogbench/data`."""
    return os.path.expanduser(os.environ.get(DATA_DIR_ENV_VAR) or OGBENCH_DEFAULT_DATA_DIR)


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    return os.path.expanduser(os.fspath(data_dir)) if data_dir is not None else default_data_dir()


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of an OGBench dataset, in the compact layout described in the module docstring."""

    observations: np.ndarray  # (N, D) float32
    actions: np.ndarray  # (N, A) float32, clipped to [-1 + eps, 1 - eps]
    rewards: np.ndarray  # (N,) float32
    masks: np.ndarray  # (N,) float32, bootstrap mask (0 where the task is solved)
    terminals: np.ndarray  # (N,) float32, 1 at the last stored row of each trajectory
    name: str  # the name it was loaded under, e.g. cube-double-play-singletask-task2-v0
    path: str
    split: str
    fingerprint: str
    task: int | None
    sparse: bool
    action_clip_eps: float
    reward_semantics: str
    mask_semantics: str

    @property
    def size(self) -> int:
        return int(self.observations.shape[0])

    @property
    def num_trajectories(self) -> int:
        return int(self.terminals.sum())

    @property
    def num_transitions(self) -> int:
        """Rows that start a transition (every row except each trajectory's last)."""
        return self.size - self.num_trajectories

    @property
    def observation_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def metadata(self) -> dict[str, Any]:
        """Everything a run record needs to identify this data and how it was interpreted."""
        return {
            "name": self.name,
            "path": self.path,
            "split": self.split,
            "fingerprint": self.fingerprint,
            "size": self.size,
            "trajectories": self.num_trajectories,
            "transitions": self.num_transitions,
            "task": self.task,
            "sparse": self.sparse,
            "action_clip_eps": self.action_clip_eps,
            "reward_semantics": self.reward_semantics,
            "mask_semantics": self.mask_semantics,
        }


def generate_command(parsed: OGBenchName, data_dir: str, slices: bool = False) -> str:
    out = data_dir if " " not in data_dir else f"'{data_dir}'"
    command = f"qgf data generate --env {parsed.dataset_name} --out {out}"
    return command + (" --slices 10" if slices else "")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    split: str = "train",
    sparse: bool = False,
    action_clip_eps: float = 1e-5,
) -> Dataset:
    """Load one split of an OGBench dataset from `data_dir` (default: `$QGF_DATA_DIR` or ~/.ogbench/data).

    `name` is a single-task dataset name (`cube-double-play-singletask-task2-v0`: rewards and masks are
    relabelled for that task) or a plain dataset name (`cube-double-play-v0`: no task, so rewards are
    0 and masks 1). Files are never downloaded; a missing file raises a `QGFError` naming the command
    that generates it.
    """
    parsed = parse_name(name)
    if parsed.dataset_type is None:
        raise QGFError(
            f"{name!r} is an environment name; pass a dataset name such as {parsed.dataset_name} "
            f"or {parsed.with_task(parsed.task or 1).singletask_dataset_name}"
        )
    if parsed.size_tag is not None:
        raise QGFError(
            f"{name!r} names a directory of slices; load it with qgf.data.SliceDataset(directory, name) "
            "(slices are streamed, never loaded whole)"
        )
    if split not in SPLITS:
        raise QGFError(f"split must be one of {SPLITS}, got {split!r}")
    directory = resolve_data_dir(data_dir)
    filename = parsed.train_filename if split == "train" else parsed.val_filename
    path = os.path.join(directory, filename)
    fix = f"generate it with: {generate_command(parsed, directory)}"
    if not os.path.isfile(path):
        where = (
            ""
            if data_dir is not None
            else f" (set ${DATA_DIR_ENV_VAR} or pass a data directory to look elsewhere)"
        )
        raise QGFError(f"dataset file not found: {path}{where}; {fix}")
    return load_file(path, name, split=split, sparse=sparse, action_clip_eps=action_clip_eps, fix=fix)


def load_file(
    path: str,
    name: str | None = None,
    *,
    split: str = "train",
    sparse: bool = False,
    action_clip_eps: float = 1e-5,
    fix: str = "",
) -> Dataset:
    """Load and validate one OGBench-format file; relabel rewards and masks for `name`'s task."""
    if not 0.0 <= action_clip_eps < 1.0:
        raise QGFError(f"action_clip_eps must be in [0, 1), got {action_clip_eps}")
    parsed = parse_name(name) if name else None
    with NpzFile(path, fix=fix) as npz:
        arrays = read_validated(npz, parsed)
    relabelled = parsed is not None and parsed.singletask
    if relabelled:
        rewards, masks = task_labels(parsed, arrays, path, sparse)
        task_text = f"task {parsed.task}" if parsed.task else "the default task"
        reward_semantics = (
            f"OGBench single-task reward for {task_text}: (satisfied sub-goals - total sub-goals) at s_t, "
            "0 only at success"
        )
        mask_semantics = "1 - success(s_t): 0 where the task is solved, so no bootstrap past success"
        if sparse:
            reward_semantics = f"sparse OGBench reward for {task_text}: 0 at success, -1 otherwise"
    else:
        size = arrays["observations"].shape[0]
        rewards = np.zeros(size, np.float32)
        masks = np.ones(size, np.float32)
        reward_semantics = "none: goal-conditioned data without a task (load a *-singletask-taskN-v0 name)"
        mask_semantics = "all 1 (time-limit ends are not terminal; trajectory ends are in `terminals`)"
    actions = arrays["actions"]
    if action_clip_eps > 0:
        actions = np.clip(actions, -1.0 + action_clip_eps, 1.0 - action_clip_eps)
    return Dataset(
        observations=arrays["observations"],
        actions=actions,
        rewards=rewards,
        masks=masks,
        terminals=arrays["terminals"].astype(np.float32),
        name=name or os.path.basename(path),
        path=os.path.abspath(path),
        split=split,
        fingerprint=fingerprint(path),
        task=parsed.task if relabelled else None,
        sparse=bool(sparse and relabelled),
        action_clip_eps=float(action_clip_eps),
        reward_semantics=reward_semantics,
        mask_semantics=mask_semantics,
    )


def read_validated(npz: NpzFile, parsed: OGBenchName | None, *, need_info: bool | None = None) -> dict:
    """Read the keys a dataset needs from `npz` and check them; raise a one-line QGFError on any problem.

    Checks: required keys present; observations (N, D) / actions (N, A) float, terminals (N,) 0/1 with a
    terminal on the last row; dimensions match the named domain; no NaN/inf; |action| <= 1; qpos (and
    button_states where the domain has buttons) present and row-aligned when rewards must be relabelled.
    """
    path = npz.path
    npz.require(REQUIRED_KEYS, "every OGBench dataset has them")
    if need_info is None:
        need_info = parsed is not None and parsed.singletask
    info_keys = []
    if need_info:
        info_keys = ["qpos"]
        if parsed is not None and parsed.is_manipulation and parsed.spec.has_button_states:
            info_keys.append("button_states")
        npz.require(info_keys, f"needed to relabel rewards for {parsed.singletask_dataset_name}")
    arrays = {key: npz.read(key) for key in (*REQUIRED_KEYS, *info_keys)}

    expected_ndim = {"observations": 2, "actions": 2, "terminals": 1, "qpos": 2, "button_states": 2}
    for key, value in arrays.items():
        if value.ndim != expected_ndim[key]:
            layout = "(N,)" if expected_ndim[key] == 1 else "(N, dims)"
            raise QGFError(f"{path}: shape mismatch: {key} must be {layout}, got shape {value.shape}")
    observations, actions, terminals = arrays["observations"], arrays["actions"], arrays["terminals"]
    size = observations.shape[0]
    for key, value in arrays.items():
        if value.shape[0] != size:
            raise QGFError(
                f"{path}: shape mismatch: {key} has {value.shape[0]} rows, observations have {size}"
            )
    if size == 0:
        raise QGFError(f"{path}: the dataset is empty (0 rows)")
    for key in ("observations", "actions"):
        if arrays[key].dtype.kind != "f":
            raise QGFError(f"{path}: dtype mismatch: {key} must be floating point, got {arrays[key].dtype}")
    arrays["observations"] = observations.astype(np.float32, copy=False)
    arrays["actions"] = actions = actions.astype(np.float32, copy=False)
    if terminals.dtype.kind not in "biuf":
        raise QGFError(
            f"{path}: dtype mismatch: terminals must be bool or 0/1 numbers, got {terminals.dtype}"
        )
    if terminals.dtype != bool:
        if not np.isin(terminals, (0, 1)).all():
            raise QGFError(f"{path}: terminals must be 0 or 1, found other values")
        arrays["terminals"] = terminals = terminals.astype(bool)
    if not terminals[-1]:
        raise QGFError(
            f"{path}: the last row is not a trajectory end (terminals[-1] = 0): the file is cut short "
            "or was not written in OGBench's layout"
        )
    if int(terminals.sum()) == size:
        raise QGFError(f"{path}: every row is a trajectory end, so there are no transitions")

    if parsed is not None and parsed.is_manipulation:
        spec = parsed.spec
        if observations.shape[1] != spec.observation_dim:
            raise QGFError(
                f"{path}: shape mismatch: {spec.domain} observations have {spec.observation_dim} dims, the "
                f"file has {observations.shape[1]} (is it another domain's file?)"
            )
        if actions.shape[1] != ACTION_DIM:
            raise QGFError(
                f"{path}: shape mismatch: actions must have {ACTION_DIM} dims, got {actions.shape[1]}"
            )

    for key in ("observations", "actions", "qpos"):
        if key in arrays:
            if arrays[key].dtype.kind != "f":
                raise QGFError(
                    f"{path}: dtype mismatch: {key} must be floating point, got {arrays[key].dtype}"
                )
            finite = np.isfinite(arrays[key])
            if not finite.all():
                bad_rows = np.flatnonzero(~finite.all(axis=tuple(range(1, finite.ndim))))
                raise QGFError(
                    f"{path}: {key} contains NaN or inf in {bad_rows.size} row(s), first at row {bad_rows[0]}"
                )
    magnitude = np.abs(actions).max(axis=1)
    outside = np.flatnonzero(magnitude > 1.0)
    if outside.size:
        raise QGFError(
            f"{path}: {outside.size} action row(s) outside [-1, 1] (max |a| = {magnitude.max():.4g} at row "
            f"{outside[0]}); OGBench actions are normalised to [-1, 1]"
        )
    return arrays


class _ResetOnce:
    """The relabelling env, reset (which sets the task's targets) only on the first call:
    `relabel_dataset` resets on every call, ~8 ms, while the online phase labels every chunk.
    A single-task env's targets do not depend on the reset (checked on cube, scene and puzzle)."""

    def __init__(self, env):
        self._env, self._reset = env, False

    def reset(self, *args, **kwargs):
        if not self._reset:
            self._env.reset(*args, **kwargs)
            self._reset = True

    def __getattr__(self, name):
        return getattr(self._env, name)


@functools.lru_cache(maxsize=8)
def _relabel_env(singletask_dataset_name: str):
    from qgf.envs import make_env

    return _ResetOnce(make_env(singletask_dataset_name))


def task_labels(
    parsed: OGBenchName, arrays: dict, path: str, sparse: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(rewards, masks) of the states in `arrays` (rows of qpos, and button_states where the domain
    has buttons) for `parsed`'s task: how every stored row is labelled, offline (`load_file`) and
    online (`qgf.online`). `sparse`: 0 at success, -1 otherwise."""
    rewards, masks = relabel(parsed, arrays, path)
    if sparse:
        rewards = -(rewards != 0).astype(np.float32)
    return rewards, masks


def relabel(parsed: OGBenchName, arrays: dict, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Rewards and masks for `parsed`'s task, computed by OGBench's own relabelling code."""
    from ogbench.relabel_utils import relabel_dataset

    env = _relabel_env(parsed.singletask_dataset_name)
    ignore_box_precision_warnings()  # again: warning filters may have been reset since env creation
    info = {key: arrays[key] for key in ("qpos", "button_states") if key in arrays}
    try:
        relabel_dataset(parsed.env_name, env, info)
    except Exception as exc:  # ogbench indexes qpos by layout; a foreign layout fails in many ways
        raise QGFError(
            f"{path}: cannot relabel rewards for {parsed.singletask_dataset_name} ({one_line(exc)}); "
            "qpos/button_states do not match this environment"
        ) from None
    return info["rewards"].astype(np.float32), info["masks"].astype(np.float32)
