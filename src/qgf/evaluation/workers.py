"""Env hosts: the environments of an evaluation, in this process or in spawned worker processes.

- `EnvHost`: a fixed set of envs ("slots") in one process, driven by command lists (reset a slot
  with a seed, or execute a chunk of actions until it runs out or the episode ends);
- `InProcessPool` (workers = 0: tests, debugging) and `ProcessPool` (one spawned process per
  worker, one message per worker per chunk) behind the same submit / collect interface;
- the kept-env registry: pools kept alive between rollouts of one process (`open_pool`,
  `keep_pool`, `close_kept_envs`), so a sweep's evaluation jobs build their envs once.

Imports: numpy, the standard library, `qgf.errors` and `qgf.envs` (itself light; it imports OGBench
only when an env is built). Nothing here may import JAX, directly or through another module: the
worker processes import this module to unpickle their entry point, and must not pay for JAX.
"""

from __future__ import annotations

import atexit
import dataclasses
import multiprocessing
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from qgf.envs import make_env, make_goal_env
from qgf.errors import QGFError

# An OGBench manipulation env holds ~150-200 MB and takes ~0.5 s to build: build a few per worker
# and reuse them across episodes.
DEFAULT_ENVS_PER_WORKER = 8
MAX_DEFAULT_ENVS = 64
ENV_MEMORY_BYTES = 200 * 2**20

EnvFactory = str | Callable[[], Any]  # an OGBench env name, or a picklable zero-argument factory


def make_ogbench_env(name: str) -> Any:
    """An OGBench env by name, without datasets and without touching the network."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless: never needs a display
    return make_env(name)


def make_goal_evaluation_env(name: str, goal: int) -> Any:
    """The env of one evaluation goal (module level: `functools.partial(make_goal_evaluation_env,
    name, goal)` is what the worker processes receive). The goal's settling actions are seeded from
    the reset seed (`qgf.envs.GoalTaskEnv`), so an episode is a function of its reset seed."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless: never needs a display
    return make_goal_env(name, goal, seed_goal=True)


@dataclasses.dataclass(frozen=True)
class EnvDescription:
    observation_dim: int
    action_dim: int
    max_episode_steps: int | None
    success_timing: str | None  # OGBench's setting ('pre' or 'post'); None for other envs


def describe_env(env: Any) -> EnvDescription:
    spec = getattr(env, "spec", None)
    max_steps = getattr(spec, "max_episode_steps", None) if spec is not None else None
    if max_steps is None:
        max_steps = getattr(env, "max_episode_steps", None)
    unwrapped = getattr(env, "unwrapped", env)
    return EnvDescription(
        observation_dim=int(np.prod(env.observation_space.shape)),
        action_dim=int(np.prod(env.action_space.shape)),
        max_episode_steps=None if max_steps is None else int(max_steps),
        success_timing=getattr(unwrapped, "_success_timing", None),
    )


class StepOutcome(NamedTuple):
    """What one command did to one env: a reset, or a chunk executed until it ran out or the
    episode ended."""

    observation: np.ndarray  # float32, the observation the next chunk is chosen from
    reward: float  # summed over the executed steps
    steps: int  # 0 for a reset
    terminated: bool
    truncated: bool
    success: bool  # info['success'] at the last executed step
    seconds: float  # time spent inside the env
    # With `record`: per state reached (1 for a reset, one per executed step) its observation and
    # the info arrays the offline relabelling reads (`RECORDED_INFO`), plus the executed actions.
    trace: dict[str, np.ndarray] | None = None


# The per-state info arrays the online phase labels transitions with (OGBench's relabelling input).
RECORDED_INFO = ("qpos", "button_states")


class EnvHost:
    """A fixed set of envs ("slots") in one process, driven by command lists.

    A command is ``(slot, reset_seed, actions)``: reset the slot's env with ``reset_seed``, or (when
    it is None) execute ``actions`` (h, A) until they run out or the episode ends. With `record`
    (the online phase), each outcome carries the trace of the states it reached.
    """

    def __init__(self, make_env: EnvFactory, num_slots: int, record: bool = False):
        factory = (lambda: make_ogbench_env(make_env)) if isinstance(make_env, str) else make_env
        self.envs = [factory() for _ in range(num_slots)]
        self.description = describe_env(self.envs[0])
        self.record = record

    def run(self, commands: Sequence[tuple[int, int | None, np.ndarray | None]]) -> list[StepOutcome]:
        return [self._run_one(*command) for command in commands]

    def _run_one(self, slot: int, reset_seed: int | None, actions: np.ndarray | None) -> StepOutcome:
        env = self.envs[slot]
        start = time.perf_counter()
        if reset_seed is not None:
            # Some OGBench code paths draw from the global np.random; seed it too.
            np.random.seed(reset_seed)
            observation, info = env.reset(seed=reset_seed)
            trace = _trace([observation], [info], None) if self.record else None
            return StepOutcome(
                np.asarray(observation, np.float32),
                0.0,
                0,
                False,
                False,
                False,
                time.perf_counter() - start,
                trace,
            )
        reward_sum, steps = 0.0, 0
        terminated = truncated = success = False
        observations, infos = [], []
        for action in actions:
            observation, reward, terminated, truncated, info = env.step(action)
            if self.record:
                observations.append(observation)
                infos.append(info)
            reward_sum += float(reward)
            steps += 1
            success = bool(info.get("success", False))
            if terminated or truncated:
                break
        trace = _trace(observations, infos, actions[:steps]) if self.record else None
        return StepOutcome(
            np.asarray(observation, np.float32),
            reward_sum,
            steps,
            bool(terminated),
            bool(truncated),
            success,
            time.perf_counter() - start,
            trace,
        )


def _trace(observations: list, infos: list[dict], actions: np.ndarray | None) -> dict[str, np.ndarray]:
    trace = {"observations": np.asarray(observations, np.float32)}
    if actions is not None:
        trace["actions"] = np.asarray(actions, np.float32)
    for key in RECORDED_INFO:
        if infos and key in infos[0]:
            trace[key] = np.asarray([info[key] for info in infos])
    return trace


def _worker_main(connection: Any, make_env: EnvFactory, num_slots: int, record: bool = False) -> None:
    try:
        host = EnvHost(make_env, num_slots, record)
        connection.send(("ready", host.description))
        while True:
            message = connection.recv()
            if message is None:
                break
            connection.send(("ok", host.run(message)))
    except KeyboardInterrupt:
        pass
    except BaseException:
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


class InProcessPool:
    """All slots in this process; `submit` runs at once. For tests and debugging (workers=0)."""

    def __init__(self, make_env: EnvFactory, slots_per_worker: list[int], record: bool = False):
        self.hosts = [EnvHost(make_env, n, record) for n in slots_per_worker]
        # Per worker, replies in submission order (like a pipe: one group's round may be pending
        # while another group's is submitted).
        self.replies: list[deque[list[StepOutcome]]] = [deque() for _ in slots_per_worker]

    def wait_ready(self) -> EnvDescription:
        return self.hosts[0].description

    def submit(self, worker: int, commands: list) -> None:
        self.replies[worker].append(self.hosts[worker].run(commands))

    def collect(self, worker: int) -> list[StepOutcome]:
        return self.replies[worker].popleft()

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


def spawn_context() -> Any:
    """The multiprocessing context of every env worker: spawn, not fork (the parent usually runs
    JAX, whose threads do not survive a fork); headless rendering is inherited by the workers."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    return multiprocessing.get_context("spawn")


class ProcessPool:
    """One spawned process per worker, each hosting its slots; one message per worker per chunk.
    The processes start building their envs at once; `wait_ready` waits for them."""

    def __init__(self, make_env: EnvFactory, slots_per_worker: list[int], record: bool = False):
        context = spawn_context()
        self.description: EnvDescription | None = None
        self.connections = []
        self.processes = []
        try:
            for num_slots in slots_per_worker:
                parent_end, child_end = context.Pipe()
                process = context.Process(
                    target=_worker_main, args=(child_end, make_env, num_slots, record), daemon=True
                )
                process.start()
                child_end.close()
                self.connections.append(parent_end)
                self.processes.append(process)
        except BaseException:
            self.close()
            raise

    def _receive(self, worker: int) -> Any:
        try:
            kind, payload = self.connections[worker].recv()
        except EOFError:
            self.processes[worker].join(timeout=1)
            raise QGFError(
                f"evaluation worker {worker} exited (code {self.processes[worker].exitcode}) without "
                "replying; see its error above. Code -9 (killed): out of memory, use fewer workers or "
                "envs. A script that evaluates must guard its entry point with "
                "`if __name__ == '__main__':` (spawned workers import it)"
            ) from None
        if kind == "error":
            raise QGFError(f"evaluation worker {worker} failed:\n{payload}")
        return payload

    def wait_ready(self) -> EnvDescription:
        if self.description is None:  # a kept pool answers again without waiting
            descriptions = [self._receive(worker) for worker in range(len(self.connections))]
            self.description = descriptions[0]
        return self.description

    def alive(self) -> bool:
        return all(process.is_alive() for process in self.processes)

    def submit(self, worker: int, commands: list) -> None:
        self.connections[worker].send(commands)

    def collect(self, worker: int) -> list[StepOutcome]:
        return self._receive(worker)

    def close(self) -> None:
        for connection in self.connections:
            try:
                connection.send(None)
            except (OSError, ValueError):
                pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
        for connection in self.connections:
            connection.close()


Pool = ProcessPool | InProcessPool


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_num_envs(workers: int) -> int:
    """8 envs per worker, at most 64, and no more than half the free memory holds."""
    envs = min(DEFAULT_ENVS_PER_WORKER * max(workers, 1), MAX_DEFAULT_ENVS)
    try:
        free_bytes = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return envs
    return max(min(envs, int(0.5 * free_bytes / ENV_MEMORY_BYTES)), max(workers, 1))


# --------------------------------------------------------------------------------------------------
# Env pools kept alive between rollouts in one process (`rollout(..., keep_envs=True)`): a sweep's
# evaluation jobs run in long-lived Ray worker processes, so the envs of a task are built once per
# Ray worker and reused by every later run and condition of that task. Keyed by (env, slots per
# worker, in-process): worker processes for workers >= 1, the envs themselves for workers = 0.
_KEPT_POOLS: dict[tuple, Pool] = {}


def keep_key(env: EnvFactory, slots_per_worker: Sequence[int], in_process: bool) -> tuple | None:
    """The registry key of a pool, or None when the env cannot be a key (an unhashable factory)."""
    try:
        hash(env)
    except TypeError:
        return None
    return (env, tuple(slots_per_worker), in_process)


def open_pool(env: EnvFactory, slots_per_worker: list[int], in_process: bool, key: tuple | None) -> Pool:
    """The kept pool under `key` (taken out of the registry) if it is still alive, else a new one."""
    pool = _KEPT_POOLS.pop(key, None) if key is not None else None
    if pool is not None and not pool.alive():
        pool.close()
        pool = None
    if pool is None:
        pool = (InProcessPool if in_process else ProcessPool)(env, slots_per_worker)
    return pool


def keep_pool(key: tuple, pool: Pool) -> None:
    """Keep `pool` for the next `open_pool` with the same key."""
    _KEPT_POOLS[key] = pool


def close_kept_envs() -> None:
    """Close every env worker kept by `rollout(..., keep_envs=True)` in this process."""
    while _KEPT_POOLS:
        _KEPT_POOLS.popitem()[1].close()


atexit.register(close_kept_envs)
