"""Self-describing run directories with atomic writes; load any run from its path alone.

Layout of a run directory::

    RUN/config.json                          resolved TrainConfig (JSON)
    RUN/meta.json                            format version, package versions, dataset identity,
                                             observation/action sizes, creation time
    RUN/checkpoints/step_0001000.msgpack     every agent array (params, optimiser states, rng, step)
    RUN/checkpoints/step_0001000.json        sidecar: step, size and sha256 of the msgpack, metrics,
                                             training seconds so far, pinned (never pruned)
    RUN/log.jsonl (+ log.csv)                written by qgf.training

Every file is written to a temporary name in the same directory, flushed, fsynced and moved into
place with `os.replace`, so a killed process leaves either the old file or the new one. A
checkpoint counts only once its sidecar exists (the sidecar is written last), and loading checks
the msgpack against the sidecar's size and hash. No pickle: arrays go through
`flax.serialization` (msgpack), everything else is JSON.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from qgf.agents import agent_class
from qgf.agents.base import Agent
from qgf.config import TrainConfig
from qgf.errors import QGFError
from qgf.fileio import atomic_write_bytes, atomic_write_json, remove_stale_temporaries
from qgf.versions import package_versions

FORMAT_VERSION = 2
# Format 1 (qgf 0.1.0) held only the QGF agent, with one field per network; format 2 holds any
# agent, its networks by name. Format-1 checkpoints are converted on load.
READABLE_FORMATS = (1, 2)
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"^step_(\d+)\.msgpack$")


@dataclasses.dataclass
class Run:
    """A loaded run: the agent at `step`, its config and its meta (versions, dataset, sizes)."""

    path: Path
    agent: Agent
    config: TrainConfig
    meta: dict[str, Any]
    step: int


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise QGFError(f"{path} is missing: not a qgf run directory (or an incomplete one)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QGFError(f"{what} {path} is corrupt ({exc}); restore it or start a new run") from None


# ------------------------------------------------------------------ run directories


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def create_run(
    path: str | os.PathLike,
    config: TrainConfig,
    *,
    obs_dim: int,
    action_dim: int,
    dataset: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write config.json and meta.json of a new run; returns the meta dict.

    `dataset` is the dataset identity (name, path, size, fingerprint, ...); `extra` adds
    free-form fields (for instance the environment name).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "backend": jax.default_backend(),
        "obs_dim": int(obs_dim),
        "action_dim": int(action_dim),
        "chunk_dim": int(config.horizon * action_dim),
        "dataset": dataset or {},
        **(extra or {}),
    }
    atomic_write_json(path / CONFIG_FILE, config.to_dict())
    atomic_write_json(path / META_FILE, meta)
    return meta


def read_config(path: str | os.PathLike) -> TrainConfig:
    path = Path(path)
    values = read_json(path / CONFIG_FILE, "config")
    try:
        return TrainConfig.from_dict(values)
    except QGFError as exc:
        raise QGFError(f"{path / CONFIG_FILE} does not fit this qgf version: {exc}") from None


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    meta = read_json(path / META_FILE, "meta")
    version = meta.get("format_version")
    if version not in READABLE_FORMATS:
        raise QGFError(
            f"{path} has run format version {version!r}; this qgf reads versions "
            f"{', '.join(map(str, READABLE_FORMATS))} (the run was written by qgf "
            f"{meta.get('versions', {}).get('qgf', '?')}); use that qgf version or retrain"
        )
    for key in ("obs_dim", "action_dim"):
        if not isinstance(meta.get(key), int):
            raise QGFError(f"{path / META_FILE} lacks {key!r}; the run cannot be rebuilt")
    return meta


# ------------------------------------------------------------------ checkpoints


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:07d}.msgpack"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints (msgpack plus sidecar) as (step, msgpack path), oldest first."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _CHECKPOINT_NAME.match(entry.name)
        if match and entry.with_suffix(".json").is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_step(run_dir: str | os.PathLike) -> int | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1][0] if checkpoints else None


def save_checkpoint(
    run_dir: str | os.PathLike,
    agent: Agent,
    *,
    metrics: dict[str, float] | None = None,
    keep: int | None = None,
    pin: bool = False,
    train_seconds: float | None = None,
) -> Path:
    """Write the agent at its current step; keep only the newest `keep` unpinned checkpoints.

    `pin` marks it as never pruned (a learning curve's evaluation step, `qgf.evaluation.curve`);
    `train_seconds` records the training wall-clock that produced it (resumes continue from it)."""
    step = int(agent.step)
    pin = pin or is_pinned(run_dir, step)  # rewriting a pinned step keeps it pinned
    path = checkpoint_path(run_dir, step)
    payload = flax.serialization.to_bytes(jax.device_get(agent))
    atomic_write_bytes(path, payload)
    sidecar = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "file": path.name,
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "saved": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "metrics": metrics or {},
        "pinned": bool(pin),
    }
    if train_seconds is not None:
        sidecar["train_seconds"] = float(train_seconds)
    atomic_write_json(path.with_suffix(".json"), sidecar)
    if keep is not None:
        unpinned = [(s, old) for s, old in list_checkpoints(run_dir) if not is_pinned(run_dir, s)]
        for _, old in unpinned[:-keep]:
            # Sidecar first: a half-deleted checkpoint is then merely incomplete, never corrupt.
            old.with_suffix(".json").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
    remove_stale_temporaries(path.parent)
    return path


def _sidecar(run_dir: str | os.PathLike, step: int) -> dict[str, Any]:
    try:
        return json.loads(checkpoint_path(run_dir, step).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


def is_pinned(run_dir: str | os.PathLike, step: int) -> bool:
    """Whether the checkpoint at `step` is pinned (kept whatever `keep_checkpoints` says)."""
    return bool(_sidecar(run_dir, step).get("pinned"))


def pin_checkpoint(run_dir: str | os.PathLike, step: int) -> None:
    """Mark the existing checkpoint at `step` as never pruned (a no-op when it is already)."""
    sidecar = _sidecar(run_dir, step)
    if sidecar and not sidecar.get("pinned"):
        atomic_write_json(checkpoint_path(run_dir, step).with_suffix(".json"), {**sidecar, "pinned": True})


def train_seconds_at(run_dir: str | os.PathLike, step: int | None) -> float | None:
    """The training wall-clock recorded with the checkpoint at `step` (None: not recorded, e.g. a
    checkpoint of an older version, or no checkpoint)."""
    if step is None:
        return None
    value = _sidecar(run_dir, step).get("train_seconds")
    return float(value) if isinstance(value, int | float) else None


def agent_template(config: TrainConfig, meta: dict[str, Any]) -> Agent:
    """The agent's structure (shapes and dtypes, no values) for a run's config and sizes."""
    cls = agent_class(config.agent)
    return jax.eval_shape(lambda: cls.create(0, meta["obs_dim"], meta["action_dim"], config))


def _from_format_1(state: dict) -> dict:
    """A format-1 (qgf 0.1.0, QGF agent only) checkpoint state in the format-2 layout."""
    networks = ("actor", "critic", "value")
    return {
        "params": {name: state[f"{name}_params"] for name in networks},
        "target_params": {"critic": state["target_critic_params"]},
        "opt_state": {name: state[f"{name}_opt_state"] for name in networks},
        "rng": state["rng"],
        "step": state["step"],
    }


def _without_retired_networks(template: Agent, state: Any) -> Any:
    """`state` without the networks its critic no longer trains (`Critic.retired_networks`: the
    'value' network that critic=td checkpoints of earlier versions hold), where `template` has none."""
    retired = [name for name in template.critic.retired_networks if name not in template.params]
    if not isinstance(state, dict) or not retired:
        return state
    return {
        key: {n: v for n, v in part.items() if n not in retired} if isinstance(part, dict) else part
        for key, part in state.items()
    }


def read_checkpoint(path: Path, template: Agent) -> Agent:
    """Restore an agent from a msgpack checkpoint, verified against its sidecar and `template`."""
    state, sidecar = verified_state(path)
    if sidecar.get("format_version") == 1 and isinstance(state, dict) and "actor_params" in state:
        state = _from_format_1(state)
    return restore(path, template, state)


def restore(path: Path, template: Any, state: Any) -> Any:
    """`template` (an agent, or any pytree of them) filled with the decoded `state` of checkpoint
    `path`, after checking every array's presence, shape and dtype."""
    if isinstance(template, Agent):
        state = _without_retired_networks(template, state)
    _check_structure(path, flax.serialization.to_state_dict(template), state)
    restored = flax.serialization.from_state_dict(template, state)
    return jax.tree_util.tree_map(jnp.asarray, restored)


def verified_state(path: Path) -> tuple[Any, dict]:
    """(decoded msgpack state, sidecar) of a checkpoint whose size and hash match its sidecar."""
    sidecar = read_json(path.with_suffix(".json"), "checkpoint sidecar")
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise QGFError(f"checkpoint {path} is missing") from None
    if len(payload) != sidecar.get("bytes") or hashlib.sha256(payload).hexdigest() != sidecar.get("sha256"):
        raise QGFError(
            f"checkpoint {path} is corrupt (size or hash differs from {path.with_suffix('.json').name}); "
            "delete it and its .json to fall back to the previous checkpoint"
        )
    try:
        state = flax.serialization.msgpack_restore(payload)
    except Exception as exc:
        raise QGFError(f"checkpoint {path} cannot be decoded: {exc}") from None
    return state, sidecar


def _check_structure(path: Path, expected: Any, found: Any, prefix: str = "") -> None:
    """Raise a QGFError naming the first array whose presence, shape or dtype differs."""
    if isinstance(expected, dict):
        if not isinstance(found, dict) or set(expected) != set(found):
            missing = sorted(set(expected) - set(found if isinstance(found, dict) else {}))
            extra = sorted(set(found) - set(expected)) if isinstance(found, dict) else []
            raise QGFError(
                f"checkpoint {path} does not match its config at {prefix or '/'}: "
                f"missing {missing}, unexpected {extra}; was config.json edited?"
            )
        for key in expected:
            _check_structure(path, expected[key], found[key], f"{prefix}/{key}")
        return
    shape, dtype = tuple(expected.shape), np.dtype(expected.dtype)
    found = np.asarray(found)
    if tuple(found.shape) != shape or found.dtype != dtype:
        raise QGFError(
            f"checkpoint {path} does not match its config at {prefix}: stored "
            f"{found.dtype}{list(found.shape)}, expected {dtype}{list(shape)}; was config.json edited?"
        )


def load_run(path: str | os.PathLike, step: int | None = None) -> Run:
    """Load a run from its directory (latest checkpoint, or `step`), or from a checkpoint file."""
    path = Path(path)
    if path.is_file() and _CHECKPOINT_NAME.match(path.name):
        run_dir, checkpoint = path.parent.parent, path
    else:
        run_dir = path
        if not path.is_dir():
            raise QGFError(f"run directory {path} does not exist")
        checkpoints = dict(list_checkpoints(path))
        if not checkpoints:
            if not is_run_dir(path):
                raise QGFError(f"{path} is not a qgf run directory (no {CONFIG_FILE})")
            raise QGFError(f"run {path} has no complete checkpoint yet; train it first")
        if step is None:
            step = max(checkpoints)
        if step not in checkpoints:
            raise QGFError(f"run {path} has no checkpoint at step {step}; available: {sorted(checkpoints)}")
        checkpoint = checkpoints[step]
    config = read_config(run_dir)
    meta = read_meta(run_dir)
    agent = read_checkpoint(checkpoint, agent_template(config, meta))
    return Run(path=run_dir, agent=agent, config=config, meta=meta, step=int(agent.step))
