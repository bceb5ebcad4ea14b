"""`qgf.deploy.load(POLICY)`: an exported policy (`qgf export`) as ``act(obs, key) -> chunk``.

Imports only the standard library, numpy, jax, `qgf.errors` and `qgf.compilation` (both standard
library only at import): no
agent, network, critic or guidance code, so a robot's process pays for jax and the one program,
nothing else (tests/test_deploy.py checks it in a fresh interpreter with qgf's other modules
blocked). The artifact is one zip file (format in docs/deploy.md):

- ``manifest.json``: shapes, action bounds, horizon, sampler, weight, best-of-N, batch size, the
  run's identity (config hash, step), versions, platforms and the matmul precision in force;
- ``program.bin``: the `jax.export` serialised StableHLO of ``(parameters..., obs, key_data,
  weight) -> chunk``, lowered for every platform in the manifest;
- ``parameters.npz``: the parameters the program takes, in its argument order.

The parameters are inputs of the program rather than constants folded into it, so the compiled
program has the structure of the in-library jitted sampler (whose agent is an argument too);
tests/test_deploy.py measures how close the two programs' actions are.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qgf.errors import QGFError

FORMAT = "qgf.deployed_policy"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRAM = "program.bin"
PARAMETERS = "parameters.npz"


def read_artifact(path: str | os.PathLike) -> tuple[dict[str, Any], bytes, list[np.ndarray]]:
    """(manifest, serialised program, parameters in argument order) of an exported policy."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise QGFError(f"exported policy {path} does not exist; write one with `qgf export RUN --out {path}`")
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST))
            program = archive.read(PROGRAM)
            with np.load(io.BytesIO(archive.read(PARAMETERS)), allow_pickle=False) as stored:
                parameters = [stored[f"p{index:05d}"] for index in range(len(stored.files))]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise QGFError(
            f"{path} is not an exported qgf policy ({exc}); export it again with `qgf export`"
        ) from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise QGFError(
            f"{path} is not a {FORMAT} of version {FORMAT_VERSION} (found {manifest.get('format')!r} "
            f"version {manifest.get('format_version')!r}); export it again with this qgf"
        )
    return manifest, program, parameters


class DeployedPolicy:
    """An exported policy, ready to act: ``policy(obs, key)`` (or ``policy.act``) -> chunk.

    `obs`: float32 (D,) or (B, D) with B the exported batch size (`manifest["batch_size"]`); for a
    goal-conditioned run also ``goal=``, float32 (G,) or (B, G). `key`: a `jax.random.key` or a raw
    uint32 (2,) `jax.random.PRNGKey`. Returns a numpy float32 chunk (h, A) for one observation,
    (B, h, A) for a batch, in the action bounds of the manifest. ``weight=`` overrides the exported
    guidance weight (it is an input of the program: no recompilation).
    """

    def __init__(self, manifest: dict[str, Any], program: bytes, parameters: Sequence[np.ndarray]):
        self.manifest = manifest
        platforms = tuple(manifest["platforms"])
        backend = jax.default_backend()
        if backend not in platforms:
            raise QGFError(
                f"this policy was exported for {', '.join(platforms)}, and jax runs on {backend}; "
                f"export it with --platform {backend} (or run with JAX_PLATFORMS={platforms[0]})"
            )
        self.exported = jax.export.deserialize(bytearray(program))
        self.parameters = [jax.device_put(p) for p in parameters]
        self.batch_size = int(manifest["batch_size"])
        self.network_dim = int(manifest["network_input_dim"])
        self.goal_dim = int(manifest.get("goal_dim") or 0)
        self.observation_dim = self.network_dim - self.goal_dim
        self.chunk_shape = tuple(manifest["chunk_shape"])
        self.weight = np.float32(manifest["weight"])
        self._call = jax.jit(self.exported.call)

    def __call__(self, obs: Any, key: Any, *, goal: Any = None, weight: float | None = None) -> np.ndarray:
        return self.act(obs, key, goal=goal, weight=weight)

    def act(self, obs: Any, key: Any, *, goal: Any = None, weight: float | None = None) -> np.ndarray:
        """One action chunk per observation row (see the class)."""
        single, network_input = self._network_input(obs, goal)
        chunk = self._call(*self.parameters, network_input, _key_data(key), self._weight(weight))
        chunk = np.asarray(chunk).reshape((self.batch_size, *self.chunk_shape))
        return chunk[0] if single else chunk

    def _network_input(self, obs: Any, goal: Any) -> tuple[bool, np.ndarray]:
        obs = _float32_rows("obs", obs, self.observation_dim, self.batch_size)
        if self.goal_dim:
            if goal is None:
                raise QGFError(
                    f"this policy is goal-conditioned: pass goal=, float32 ({self.goal_dim},) or "
                    f"({self.batch_size}, {self.goal_dim}) (e.g. the env's info['goal'])"
                )
            goal = _float32_rows("goal", goal, self.goal_dim, self.batch_size)
            if goal[0] != obs[0]:
                raise QGFError(
                    f"obs is {'one row' if obs[0] else 'a batch'} and goal is not: pass both alike"
                )
            return obs[0], np.concatenate([obs[1], goal[1]], axis=1)
        if goal is not None:
            raise QGFError("this policy is not goal-conditioned (its run trained on one task): drop goal=")
        return obs

    def _weight(self, weight: float | None) -> np.ndarray:
        if weight is None:
            return self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float | np.floating) or not weight >= 0:
            raise QGFError(f"weight must be a number >= 0, got {weight!r}")
        return np.float32(weight)

    def warmup(self) -> None:
        """Compile the program for this process (the first call does it otherwise)."""
        shape = (self.batch_size, self.observation_dim)
        goal = np.zeros((self.batch_size, self.goal_dim), np.float32) if self.goal_dim else None
        self.act(np.zeros(shape, np.float32), np.zeros(2, np.uint32), goal=goal)


def _float32_rows(name: str, value: Any, dim: int, batch: int) -> tuple[bool, np.ndarray]:
    """(whether one row was given, the (batch, dim) float32 array), or a one-line error."""
    expected = f"({dim},) or ({batch}, {dim})" if batch == 1 else f"({batch}, {dim})"
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        raise QGFError(f"{name} must be a float32 array of shape {expected}, got {type(value).__name__}")
    if np.dtype(dtype) != np.float32:
        raise QGFError(
            f"{name} has dtype {np.dtype(dtype)}, the policy takes float32: pass {name}.astype(np.float32)"
        )
    shape = tuple(value.shape)
    if shape == (dim,) and batch == 1:
        return True, np.asarray(value).reshape(1, dim)
    if shape == (batch, dim):
        return False, np.asarray(value)
    raise QGFError(
        f"{name} has shape {shape}, this policy takes {expected} (exported with batch size {batch})"
    )


def _key_data(key: Any) -> np.ndarray:
    """The uint32 (2,) data of a typed `jax.random.key` or a raw `jax.random.PRNGKey`."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(key) if key.shape == () else None
        if data is None or data.shape != (2,) or data.dtype != jnp.uint32:
            raise QGFError(
                f"key must be one threefry key, jax.random.key(seed); got a key array of shape {key.shape}"
            )
        return data
    dtype = getattr(key, "dtype", None)
    if dtype is None or np.dtype(dtype) != np.uint32 or tuple(key.shape) != (2,):
        raise QGFError(
            "key must be jax.random.key(seed) or a uint32 (2,) jax.random.PRNGKey(seed), got "
            + (f"{np.dtype(dtype)} {tuple(key.shape)}" if dtype is not None else type(key).__name__)
        )
    return key


def load(path: str | os.PathLike, *, warmup: bool = True, compilation_cache: bool = True) -> DeployedPolicy:
    """The exported policy at `path` (`qgf export`), compiled for this process when `warmup`.

    With `compilation_cache` the compiled program is kept in JAX's persistent cache
    (`qgf.compilation`: ~/.cache/qgf/jax, $QGF_COMPILATION_CACHE, off with QGF_COMPILATION_CACHE=off),
    so a robot's later starts load it instead of compiling (docs/deploy.md: the start times)."""
    start = time.perf_counter()
    if compilation_cache:
        from qgf.compilation import use_compilation_cache

        use_compilation_cache()
    policy = DeployedPolicy(*read_artifact(path))
    if warmup:
        policy.warmup()
    policy.load_seconds = time.perf_counter() - start
    return policy
