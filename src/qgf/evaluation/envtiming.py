"""How long the environments alone take: the reference an evaluation's overhead is measured
against (bench/evaluation.py, bench/study_env_only.py).

Imports only numpy, the standard library and `qgf.evaluation.workers` (its spawned processes
import this module, and must not pay for JAX).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from qgf.errors import QGFError
from qgf.evaluation.workers import EnvHost, spawn_context


def _random_stepping_worker(make_env, num_envs: int, steps: int, seed: int, connection: Any) -> None:
    try:
        build_start = time.perf_counter()
        host = EnvHost(make_env, num_envs)
        for index, env in enumerate(host.envs):
            env.reset(seed=seed + index)
        rng = np.random.default_rng(seed)
        actions = rng.uniform(-1, 1, size=(steps, host.description.action_dim)).astype(np.float32)
        step_start = time.perf_counter()
        for step, action in enumerate(actions):  # round-robin over the envs, as rollouts interleave them
            env = host.envs[step % num_envs]
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset(seed=seed + num_envs + step)
        connection.send(("ok", (step_start - build_start, time.perf_counter() - step_start)))
    except BaseException:
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def time_env_stepping(
    env: str | Callable[[], Any], total_steps: int, workers: int, num_envs: int, seed: int = 0
) -> dict[str, float]:
    """How long the environments alone take: ``workers`` spawned processes build ``num_envs`` envs
    between them and step ``total_steps`` uniformly random actions, with no policy and no messages.

    The reference for an evaluation's overhead (bench/evaluation.py). Returns ``wall_s`` (process
    start to last step), ``build_s`` and ``stepping_s`` (slowest worker) and ``steps_per_second``.
    """
    context = spawn_context()
    start = time.perf_counter()
    processes, connections = [], []
    for worker in range(workers):
        parent_end, child_end = context.Pipe(duplex=False)
        envs = len(range(worker, num_envs, workers))
        steps = len(range(worker, total_steps, workers))
        process = context.Process(
            target=_random_stepping_worker, args=(env, envs, steps, seed + 1000 * worker, child_end)
        )
        process.start()
        child_end.close()
        processes.append(process)
        connections.append(parent_end)
    timings = []
    for worker, connection in enumerate(connections):
        kind, payload = connection.recv()
        if kind == "error":
            raise QGFError(f"env stepping worker {worker} failed:\n{payload}")
        timings.append(payload)
    wall = time.perf_counter() - start
    for process in processes:
        process.join()
    stepping = max(step for _, step in timings)
    return {
        "wall_s": wall,
        "build_s": max(build for build, _ in timings),
        "stepping_s": stepping,
        "steps_per_second": total_steps / stepping,
    }
