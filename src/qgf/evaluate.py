"""Parallel OGBench rollouts with open-loop action chunks, and per-condition statistics.

Two layers:

- `rollout` is policy-agnostic. It runs ``episodes_per_condition`` episodes for every condition in
  a list (a condition is anything: a sampler, a weight, a label) on many environments hosted by
  worker processes, and queries ``policy_fn`` once per chunk for all the live episodes of one env
  group as a single batch. Each chunk of h actions is clipped to [-1, 1] and executed open-loop;
  the episode ending mid-chunk drops the rest of the chunk.
- `evaluate_run` builds that policy from a trained run (``run.agent.sample_actions`` with any
  `qgf.guidance.SamplerSpec`), sweeps (sampler, weight, best-of-N) and returns
  `qgf.results.EvaluationResults`.
- `evaluate_goals` does the same for a goal-conditioned run on OGBench's evaluation goals (one
  rollout per goal in `make_goal_evaluation_env`, observations ``concat(observation, goal)``) and
  returns a `qgf.results.GoalEvaluation` (per goal, and pooled).

Reproducibility: episode ``e`` of every condition starts from the same reset seed and its policy
draws the same noise at the same chunk (common random numbers), both derived from (seed, e, chunk)
only. Results therefore do not depend on the number of workers, environments or groups, nor on
which environment an episode happened to run in — and differences between weights are paired.

Success (docs/evaluation.md): an episode counts as a success when ``info['success']`` is true at
its last step. OGBench singletask envs use ``success_timing='pre'`` (ogbench >= 1.2): success and
``terminated`` describe the state *before* the step's action, so an episode ends one step after
the goal state is reached and a goal reached by the very last action of a truncated episode is not
counted. OGBench's goal-conditioned envs keep ``success_timing='post'`` (success describes the
state after the action). The env's setting is recorded with the results.

This module imports only numpy and the standard library at import time: the worker processes
import it, and they must not pay for (or fork) JAX.
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import multiprocessing
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from qgf.envs import NUM_EVALUATION_GOALS
from qgf.errors import QGFError
from qgf.progress import progress_bar
from qgf.results import ConditionResult, EvaluationResults, GoalEvaluation

# An OGBench manipulation env holds ~150-200 MB and takes ~0.5 s to build: build a few per worker
# and reuse them across episodes.
DEFAULT_ENVS_PER_WORKER = 8
MAX_DEFAULT_ENVS = 64
ENV_MEMORY_BYTES = 200 * 2**20
CONFIDENCE_LEVEL = 0.95
_Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal
SUCCESS_DEFINITION = "info['success'] at the episode's last step"


# --------------------------------------------------------------------------------------------------
# Policy interface


class PolicyOutput(NamedTuple):
    """What a policy returns for a batch of B rows.

    actions: (B, h, A) or flattened (B, h * A); clipped to [-1, 1] by the rollout anyway.
    q: (B,) the critic's value of each chosen chunk (NaN when the policy has no critic).
    seconds_per_row: optional (B,) compute time attributable to each row, for per-condition cost
        accounting when one call mixes conditions of different cost; default: the call's wall time
        split evenly over its rows.
    """

    actions: np.ndarray
    q: np.ndarray
    seconds_per_row: np.ndarray | None = None


# policy_fn(observations (B, D) float32, condition_indices (B,) int64, noise_seeds (B,) uint32).
# The noise seed of a row depends only on (rollout seed, episode index, chunk index): a policy that
# draws its randomness from it (one PRNG key per row) is reproducible whatever the batching.
# A policy may also have a ``warmup(batch_size)`` method; the rollout calls it while the
# environments are being built so that compilation overlaps with env construction.
PolicyFn = Callable[[np.ndarray, np.ndarray, np.ndarray], PolicyOutput]


# --------------------------------------------------------------------------------------------------
# Statistics


def wilson_interval(successes: int, trials: int, z: float = _Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default: two-sided 95%).

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0 or n
    successes, which is where few-episode success rates often sit.
    """
    if trials < 1:
        raise ValueError("a confidence interval needs at least one trial")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}], got {successes}")
    p = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    center = (p + z2 / (2 * trials)) / denominator
    half_width = z / denominator * math.sqrt(p * (1.0 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, center - half_width), min(1.0, center + half_width)


# --------------------------------------------------------------------------------------------------
# Environments (this part runs inside the worker processes)


def make_ogbench_env(name: str) -> Any:
    """An OGBench env by name, without datasets and without touching the network."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless: never needs a display
    from qgf.envs import make_env

    return make_env(name)


@dataclasses.dataclass(frozen=True)
class EnvDescription:
    observation_dim: int
    action_dim: int
    max_episode_steps: int | None
    success_timing: str | None  # OGBench's setting ('pre' or 'post'); None for other envs


def _describe(env: Any) -> EnvDescription:
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


class EnvHost:
    """A fixed set of envs ("slots") in one process, driven by command lists.

    A command is ``(slot, reset_seed, actions)``: reset the slot's env with ``reset_seed``, or (when
    it is None) execute ``actions`` (h, A) until they run out or the episode ends.
    """

    def __init__(self, make_env: str | Callable[[], Any], num_slots: int):
        factory = (lambda: make_ogbench_env(make_env)) if isinstance(make_env, str) else make_env
        self.envs = [factory() for _ in range(num_slots)]
        self.description = _describe(self.envs[0])

    def run(self, commands: Sequence[tuple[int, int | None, np.ndarray | None]]) -> list[StepOutcome]:
        return [self._run_one(*command) for command in commands]

    def _run_one(self, slot: int, reset_seed: int | None, actions: np.ndarray | None) -> StepOutcome:
        env = self.envs[slot]
        start = time.perf_counter()
        if reset_seed is not None:
            # Some OGBench code paths draw from the global np.random; seed it too.
            np.random.seed(reset_seed)
            observation, _ = env.reset(seed=reset_seed)
            return StepOutcome(
                np.asarray(observation, np.float32), 0.0, 0, False, False, False, time.perf_counter() - start
            )
        reward_sum, steps = 0.0, 0
        terminated = truncated = success = False
        for action in actions:
            observation, reward, terminated, truncated, info = env.step(action)
            reward_sum += float(reward)
            steps += 1
            success = bool(info.get("success", False))
            if terminated or truncated:
                break
        return StepOutcome(
            np.asarray(observation, np.float32),
            reward_sum,
            steps,
            bool(terminated),
            bool(truncated),
            success,
            time.perf_counter() - start,
        )


def _worker_main(connection: Any, make_env: str | Callable[[], Any], num_slots: int) -> None:
    try:
        host = EnvHost(make_env, num_slots)
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


class _InProcessPool:
    """All slots in this process; `submit` runs at once. For tests and debugging (workers=0)."""

    def __init__(self, make_env: str | Callable[[], Any], slots_per_worker: list[int]):
        self.hosts = [EnvHost(make_env, n) for n in slots_per_worker]
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


class _ProcessPool:
    """One spawned process per worker, each hosting its slots; one message per worker per chunk."""

    def __init__(self, make_env: str | Callable[[], Any], slots_per_worker: list[int]):
        os.environ.setdefault("MUJOCO_GL", "egl")  # inherited by the workers
        # spawn, not fork: the parent usually runs JAX, whose threads do not survive a fork.
        context = multiprocessing.get_context("spawn")
        self.description: EnvDescription | None = None
        self.connections = []
        self.processes = []
        try:
            for num_slots in slots_per_worker:
                parent_end, child_end = context.Pipe()
                process = context.Process(
                    target=_worker_main, args=(child_end, make_env, num_slots), daemon=True
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
    os.environ.setdefault("MUJOCO_GL", "egl")
    context = multiprocessing.get_context("spawn")
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


# --------------------------------------------------------------------------------------------------
# The rollout loop


@dataclasses.dataclass
class EpisodeRecord:
    """One finished episode. ``episode`` indexes episodes within a condition (its reset seed and
    noise stream are shared by all conditions)."""

    condition: int
    episode: int
    success: bool = False
    terminated: bool = False
    episode_return: float = 0.0
    length: int = 0
    chunk_q: list[float] = dataclasses.field(default_factory=list)
    env_seconds: float = 0.0
    policy_seconds: float = 0.0


@dataclasses.dataclass
class RolloutResult:
    conditions: list[Any]
    episodes_per_condition: int
    seed: int
    episodes: list[EpisodeRecord]  # sorted by (condition, episode)
    env: EnvDescription
    action_horizon: int
    env_steps: int
    wall_clock_s: float  # the whole call: worker start, env construction, stepping, policy
    startup_s: float  # worker start and env construction (overlapping policy warm-up)
    num_envs: int
    workers: int

    def for_condition(self, index: int) -> list[EpisodeRecord]:
        return [record for record in self.episodes if record.condition == index]


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


def episode_reset_seed(seed: int, episode: int) -> int:
    """The env reset seed of episode ``episode`` (shared by every condition)."""
    return int(np.random.SeedSequence((seed, 0, episode)).generate_state(1)[0])


def chunk_noise_seed(seed: int, episode: int, chunk: int) -> int:
    """The policy noise seed for chunk ``chunk`` of episode ``episode`` (shared by every condition)."""
    return int(np.random.SeedSequence((seed, 1, episode, chunk)).generate_state(1)[0])


class _Layout(NamedTuple):
    worker_of: list[int]  # slot -> worker
    local_index: list[int]  # slot -> index of its env within the worker
    group_of: list[int]  # slot -> group
    groups: int


def _layout(num_envs: int, workers: int, groups: int) -> _Layout:
    """Consecutive slots go to different workers and each worker gets slots in every group, so
    that all workers have envs to step while the policy computes another group's chunks."""
    return _Layout(
        worker_of=[slot % workers for slot in range(num_envs)],
        local_index=[slot // workers for slot in range(num_envs)],
        group_of=[(slot // workers) % groups for slot in range(num_envs)],
        groups=groups,
    )


def _as_chunks(actions: np.ndarray, rows: int, action_dim: int) -> np.ndarray:
    actions = np.asarray(actions, np.float32)
    if actions.ndim == 2:
        if actions.shape[1] % action_dim:
            raise QGFError(
                f"policy returned actions of width {actions.shape[1]}, not a multiple of {action_dim}"
            )
        actions = actions.reshape(rows, -1, action_dim)
    if actions.ndim != 3 or actions.shape[0] != rows or actions.shape[2] != action_dim:
        raise QGFError(
            f"policy returned actions of shape {actions.shape}, expected ({rows}, h, {action_dim})"
        )
    return np.clip(actions, -1.0, 1.0)


# Env pools kept alive between `rollout` calls in one process (`keep_envs=True`): a sweep's
# evaluation jobs run in long-lived Ray worker processes, so the envs of a task are built once per
# Ray worker and reused by every later run and condition of that task. Keyed by (env, slots per
# worker, in-process): worker processes for workers >= 1, the envs themselves for workers = 0.
_KEPT_POOLS: dict[tuple, _ProcessPool | _InProcessPool] = {}


def _open_pool(env: str | Callable[[], Any], slots: list[int], in_process: bool, key: tuple | None):
    """The kept pool under `key` if it is still alive, else a new one."""
    pool = _KEPT_POOLS.pop(key, None) if key is not None else None
    if pool is not None and not pool.alive():
        pool.close()
        pool = None
    if pool is None:
        pool = (_InProcessPool if in_process else _ProcessPool)(env, slots)
    return pool


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def close_kept_envs() -> None:
    """Close every env worker kept by `rollout(..., keep_envs=True)` in this process."""
    while _KEPT_POOLS:
        _KEPT_POOLS.popitem()[1].close()


atexit.register(close_kept_envs)


def rollout(
    env: str | Callable[[], Any],
    policy_fn: PolicyFn,
    conditions: Sequence[Any],
    episodes_per_condition: int,
    seed: int = 0,
    *,
    workers: int | None = None,
    num_envs: int | None = None,
    groups: int = 2,
    max_episode_steps: int | None = None,
    progress: bool = False,
    on_condition_done: Callable[[int, list[EpisodeRecord], EnvDescription, int], None] | None = None,
    keep_envs: bool = False,
) -> RolloutResult:
    """Run ``episodes_per_condition`` episodes of every condition and record each episode.

    Args:
        env: an OGBench env name, or a picklable zero-argument factory of a gymnasium-like env
            (``reset(seed=) -> (obs, info)``, ``step(a) -> (obs, r, terminated, truncated, info)``).
        policy_fn: see `PolicyFn`. Called once per group round with the live rows of that group.
        conditions: one entry per condition; only their count and order matter here.
        workers: env processes (default: all available cores). 0 runs the envs in this process.
        num_envs: envs alive at once (default: `default_num_envs`; never more than the episodes).
        groups: the envs are split into this many groups stepped in turn, so the policy computes one
            group's chunks while the workers step the others (2 = ping-pong). That overlap pays
            when the policy has a core of its own; when every core is already busy (a sweep's
            evaluation jobs fill the machine), it only splits each policy call in two, and one
            group is cheaper (docs/performance.md).
        max_episode_steps: episode limit; default the env's own (``env.spec.max_episode_steps``).
        progress: show a tqdm bar over episodes.
        on_condition_done: called as ``(condition index, its episodes, env description, action
            horizon)`` as soon as every episode of a condition has finished (to save it).
        keep_envs: keep the envs alive after this call (their worker processes, or with
            ``workers=0`` the envs in this process) and reuse them in a later call with the same
            env, layout and ``workers == 0``-ness (a sweep's evaluation jobs do): no env start-up
            per call. Every episode starts with a seeded reset, so results are the same. Needs a
            hashable env (a name, a module-level factory); a rollout that fails closes its
            envs. `close_kept_envs` ends them.
    """
    start = time.perf_counter()
    if episodes_per_condition < 1 or not conditions:
        raise QGFError("need at least one condition and one episode per condition")
    total_episodes = len(conditions) * episodes_per_condition
    if workers is None:
        workers = available_cores()
    if num_envs is None:
        num_envs = default_num_envs(workers)
    num_envs = max(1, min(num_envs, total_episodes))
    hosts = max(1, min(workers, num_envs))
    groups = max(1, min(groups, math.ceil(num_envs / hosts)))
    layout = _layout(num_envs, hosts, groups)
    slots_per_worker = [layout.worker_of.count(w) for w in range(hosts)]

    in_process = workers == 0
    keep_key = (env, tuple(slots_per_worker), in_process) if keep_envs and _hashable(env) else None
    pool = _open_pool(env, slots_per_worker, in_process, keep_key)
    completed = False
    try:
        warmup = getattr(policy_fn, "warmup", None)
        if warmup is not None:
            warmup(max(layout.group_of.count(g) for g in range(groups)))
        description = pool.wait_ready()
        startup_s = time.perf_counter() - start
        limit = max_episode_steps or description.max_episode_steps
        if not limit:
            raise QGFError("the env has no episode limit (spec.max_episode_steps): pass max_episode_steps")
        loop = _RolloutLoop(
            pool, policy_fn, description.action_dim, limit, seed, episodes_per_condition, total_episodes
        )
        if on_condition_done is not None:
            loop.on_condition_done = lambda index, records: on_condition_done(
                index, records, description, loop.action_horizon
            )
        loop.run(layout, progress)
        completed = True
    finally:
        if keep_key is not None and completed:  # an interrupted pool may have replies in flight
            _KEPT_POOLS[keep_key] = pool
        else:
            pool.close()

    episodes = sorted(loop.finished, key=lambda r: (r.condition, r.episode))
    return RolloutResult(
        conditions=list(conditions),
        episodes_per_condition=episodes_per_condition,
        seed=seed,
        episodes=episodes,
        env=description,
        action_horizon=loop.action_horizon,
        env_steps=sum(r.length for r in episodes),
        wall_clock_s=time.perf_counter() - start,
        startup_s=startup_s,
        num_envs=num_envs,
        workers=workers,
    )


class _RolloutLoop:
    """Bookkeeping of one rollout: the episode queue, which episode each slot runs, chunk counts."""

    def __init__(self, pool, policy_fn, action_dim, limit, seed, episodes_per_condition, total):
        self.pool = pool
        self.policy_fn = policy_fn
        self.action_dim = action_dim
        self.limit = limit
        self.seed = seed
        self.episodes_per_condition = episodes_per_condition
        self.total = total
        # Condition-major order: the rows of one sampler mostly share a batch (one compiled call).
        self.queue = deque(range(total))
        self.finished: list[EpisodeRecord] = []
        self.action_horizon = 0
        self.env_steps = 0
        self.running: dict[int, EpisodeRecord] = {}  # slot -> its episode
        self.chunks_done: dict[int, int] = {}  # slot -> chunks chosen so far in its episode
        self.observations: dict[int, np.ndarray] = {}  # slot -> observation to choose from
        self.layout: _Layout | None = None
        self.on_condition_done: Callable[[int, list[EpisodeRecord]], None] | None = None
        self.episodes_left = [episodes_per_condition] * (total // episodes_per_condition)

    def run(self, layout: _Layout, progress: bool) -> None:
        self.layout = layout
        pending: list[dict[int, list[int]]] = [{} for _ in range(layout.groups)]  # per group: worker -> slots
        bar = progress_bar(progress, self.total, unit="episode", desc="evaluate")
        try:
            for group in range(layout.groups):
                commands: dict[int, list] = {}
                for slot, slot_group in enumerate(layout.group_of):
                    if slot_group == group:
                        self._start_episode(slot, commands)
                self._dispatch(commands, pending[group])
            while any(pending):
                for group_pending in pending:
                    if group_pending:
                        self._round(group_pending, bar)
        finally:
            bar.close()

    def _start_episode(self, slot: int, commands: dict[int, list]) -> None:
        """Queue a reset of ``slot`` into the next episode, or retire the slot."""
        self.running.pop(slot, None)
        if not self.queue:
            return
        condition, episode = divmod(self.queue.popleft(), self.episodes_per_condition)
        self.running[slot] = EpisodeRecord(condition, episode)
        self.chunks_done[slot] = 0
        self._command(commands, slot, episode_reset_seed(self.seed, episode), None)

    def _command(self, commands: dict[int, list], slot: int, reset_seed: int | None, actions) -> None:
        worker = self.layout.worker_of[slot]
        commands.setdefault(worker, []).append((slot, (self.layout.local_index[slot], reset_seed, actions)))

    def _dispatch(self, commands: dict[int, list], pending: dict[int, list[int]]) -> None:
        for worker, worker_commands in commands.items():
            self.pool.submit(worker, [command for _, command in worker_commands])
            pending[worker] = [slot for slot, _ in worker_commands]

    def _round(self, pending: dict[int, list[int]], bar) -> None:
        """Collect one group's outcomes, book them, choose its next chunks and send them."""
        outcomes: dict[int, StepOutcome] = {}
        for worker in sorted(pending):
            outcomes.update(zip(pending[worker], self.pool.collect(worker), strict=True))
        pending.clear()

        commands: dict[int, list] = {}
        ready: list[int] = []
        for slot in sorted(outcomes):
            outcome, record = outcomes[slot], self.running[slot]
            if outcome.steps == 0:  # a reset: the new episode's first chunk is chosen below
                self.observations[slot] = outcome.observation
                ready.append(slot)
                continue
            record.episode_return += outcome.reward
            record.length += outcome.steps
            record.env_seconds += outcome.seconds
            self.env_steps += outcome.steps
            if outcome.terminated or outcome.truncated or record.length >= self.limit:
                record.success = outcome.success
                record.terminated = outcome.terminated
                self.finished.append(record)
                self.episodes_left[record.condition] -= 1
                if self.episodes_left[record.condition] == 0 and self.on_condition_done is not None:
                    self.on_condition_done(
                        record.condition, [r for r in self.finished if r.condition == record.condition]
                    )
                bar.set_postfix_str(f"{self.env_steps} env steps", refresh=False)
                bar.update(1)
                self._start_episode(slot, commands)
            else:
                self.observations[slot] = outcome.observation
                ready.append(slot)

        if ready:
            self._query_policy(ready, commands)
        self._dispatch(commands, pending)

    def _query_policy(self, slots: list[int], commands: dict[int, list]) -> None:
        records = [self.running[slot] for slot in slots]
        rows = list(zip(records, slots, strict=True))
        observations = np.stack([self.observations[slot] for slot in slots])
        condition_indices = np.array([record.condition for record in records], np.int64)
        noise_seeds = np.array(
            [chunk_noise_seed(self.seed, record.episode, self.chunks_done[slot]) for record, slot in rows],
            np.uint32,
        )
        start = time.perf_counter()
        output = self.policy_fn(observations, condition_indices, noise_seeds)
        elapsed = time.perf_counter() - start
        chunks = _as_chunks(output.actions, len(slots), self.action_dim)
        self.action_horizon = chunks.shape[1]
        q = np.asarray(output.q, np.float64).reshape(len(slots))
        if output.seconds_per_row is None:
            seconds = np.full(len(slots), elapsed / len(slots))
        else:
            seconds = np.asarray(output.seconds_per_row, np.float64).reshape(len(slots))
        for row, (slot, record) in enumerate(zip(slots, records, strict=True)):
            record.chunk_q.append(float(q[row]))
            record.policy_seconds += float(seconds[row])
            self.chunks_done[slot] += 1
            # Never step past the limit, even in an env without its own time limit.
            self._command(commands, slot, None, chunks[row, : self.limit - record.length])


# --------------------------------------------------------------------------------------------------
# Per-condition statistics


def summarize(
    result: RolloutResult, describe: Callable[[Any], tuple[str, float, int, str]]
) -> list[ConditionResult]:
    """One `qgf.results.ConditionResult` per condition of ``result``.

    ``describe(condition) -> (sampler, weight, bfn, label)`` names a condition. Each condition's
    ``wall_clock_s`` is its share of the rollout's wall-clock, in proportion to the env and policy
    compute time its episodes used (conditions run interleaved, so no condition has a wall-clock of
    its own).
    """
    compute = [
        sum(r.env_seconds + r.policy_seconds for r in result.for_condition(i))
        for i in range(len(result.conditions))
    ]
    total_compute = sum(compute) or 1.0
    summaries = []
    for index, condition in enumerate(result.conditions):
        records = result.for_condition(index)
        sampler, weight, bfn, label = describe(condition)
        successes = sum(r.success for r in records)
        low, high = wilson_interval(successes, len(records))
        returns = np.array([r.episode_return for r in records])
        chunk_q = np.array([q for r in records for q in r.chunk_q], np.float64)
        q_mean = float(chunk_q.mean()) if chunk_q.size and np.isfinite(chunk_q).all() else None
        summaries.append(
            ConditionResult(
                sampler=sampler,
                weight=float(weight),
                bfn=int(bfn),
                label=label,
                episodes=len(records),
                successes=successes,
                success_rate=successes / len(records),
                ci_low=low,
                ci_high=high,
                return_mean=float(returns.mean()),
                return_std=float(returns.std()),
                length_mean=float(np.mean([r.length for r in records])),
                q_mean=q_mean,
                policy_seconds=float(sum(r.policy_seconds for r in records)),
                wall_clock_s=result.wall_clock_s * compute[index] / total_compute,
                episode_success=[bool(r.success) for r in records],
                episode_return=[float(r.episode_return) for r in records],
                episode_length=[int(r.length) for r in records],
            )
        )
    return summaries


# --------------------------------------------------------------------------------------------------
# Evaluating a trained run


@dataclasses.dataclass(frozen=True)
class Condition:
    """One evaluated condition: a sampler (`qgf.guidance.SamplerSpec`) and a guidance weight."""

    spec: Any  # SamplerSpec
    weight: float


def sweep_conditions(
    samplers: Sequence[Any],
    weights: Sequence[float],
    bfn: Sequence[int],
    steps: int,
    gradstep_steps: int | None = None,
):
    """The (sampler, N, weight) grid, sampler-major. A sampler given by name is crossed with every
    N in ``bfn`` (with `gradstep_steps` = GradStep's L when given); a `SamplerSpec` is used as given.
    Plain BC (``none``) and a method's own policy (``policy``) ignore the weight, so they are
    evaluated once, at weight 0."""
    from qgf.guidance import SamplerSpec

    if not samplers or not weights or not bfn:
        raise QGFError("need at least one sampler, one weight and one best-of-N")
    for weight in weights:
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
            raise QGFError(f"guidance weights must be finite numbers >= 0, got {weight!r}")
    specs = []
    for sampler in samplers:
        if isinstance(sampler, SamplerSpec):
            specs.append(sampler)
        else:
            options = {} if gradstep_steps is None else {"gradstep_steps": int(gradstep_steps)}
            specs.extend(
                SamplerSpec(estimator=sampler, steps=steps, best_of_n=int(n), **options) for n in bfn
            )
    conditions = []
    for spec in dict.fromkeys(specs):
        spec_weights = sorted(set(map(float, weights))) if spec.uses_weight else [0.0]
        conditions.extend(Condition(spec, weight) for weight in spec_weights)
    return conditions


# Compiled acting functions of add-on-free samplers, by spec, shared by every AgentPolicy of the
# process (jax.jit caches per agent structure and shapes, so different configs still compile apart).
_SHARED_ACT: dict[Any, Callable] = {}


class AgentPolicy:
    """A `PolicyFn` over an agent (`qgf.agents`) for a list of `Condition`s.

    Rows are grouped by sampler spec: one compiled call per distinct spec and batch, each row with
    its own weight. Each row draws its noise from its own key (``jax.random.key(noise_seed)``), so
    a row's chunk does not depend on which other rows share the batch. Batches are padded to a fixed
    size so that every spec compiles once.

    Samplers that need an add-on (`qgf.addons`: robustq, cfgrl, qgf-distill, ...) take its
    callables from `addons` ({name: `qgf.addons.base.LoadedAddon`}); `for_run` loads them.
    """

    def __init__(self, agent: Any, conditions: Sequence[Condition], addons: Mapping[str, Any] | None = None):
        self.agent = agent
        self.specs = [condition.spec for condition in conditions]
        self.weights = np.array([condition.weight for condition in conditions], np.float32)
        self.batch_size = 1
        self.addons = dict(addons or {})
        self._addon_states = {name: loaded.state for name, loaded in self.addons.items()}
        self._compiled: dict[Any, Callable] = {}

    @classmethod
    def for_run(cls, run: Any, conditions: Sequence[Condition]) -> AgentPolicy:
        """The policy of a loaded run, with the add-ons its samplers need loaded with it."""
        return cls(run.agent, conditions, check_run_samplers(run, [c.spec for c in conditions]))

    def _act(self, spec: Any) -> Callable:
        if spec not in self._compiled:
            import jax

            from qgf.guidance import sample

            addons = self.addons
            if not addons and spec in _SHARED_ACT:
                # Another policy of this process (a later sweep job, another run of the same
                # shapes) compiled it already: the agent is an argument, so jax reuses the program.
                shared = _SHARED_ACT[spec]
                self._compiled[spec] = lambda agent, *args: shared(agent, {}, *args)
                return self._compiled[spec]

            def act(agent, addon_states, observations, noise_seeds, weights):
                extras = {}
                for name, loaded in addons.items():
                    extras.update(loaded.extras(agent, addon_states[name]))

                def one_row(observation, noise_seed, weight):
                    key = jax.random.key(noise_seed)
                    if not spec.needs:
                        return agent.sample_actions(observation[None], key, weight, spec)[0]
                    return sample(
                        agent.behavior_velocity_fn,
                        agent.q_fn,
                        observation[None],
                        key,
                        weight,
                        spec,
                        agent.chunk_dim,
                        extras=extras,
                    )[0]

                actions = jax.vmap(one_row)(observations, noise_seeds, weights)
                return actions, agent.q_fn(observations, actions)

            compiled = jax.jit(act)
            if not addons:  # nothing run-specific is closed over: share it with later policies
                _SHARED_ACT[spec] = compiled
            self._compiled[spec] = lambda agent, *args: compiled(agent, self._addon_states, *args)
        return self._compiled[spec]

    def warmup(self, batch_size: int, specs: Sequence[Any] | None = None) -> None:
        """Compile every spec (or only `specs`) for batches of `batch_size` rows."""
        self.batch_size = batch_size
        observations = np.zeros((batch_size, self.agent.obs_dim), np.float32)
        for spec in dict.fromkeys(self.specs if specs is None else specs):
            actions, _ = self._act(spec)(
                self.agent, observations, np.zeros(batch_size, np.uint32), np.zeros(batch_size, np.float32)
            )
            actions.block_until_ready()

    def __call__(self, observations, condition_indices, noise_seeds) -> PolicyOutput:
        rows_total, obs_dim = observations.shape
        if obs_dim != self.agent.obs_dim:
            raise QGFError(
                f"the env's observations have {obs_dim} dims but the run was trained on "
                f"{self.agent.obs_dim}; evaluate on the run's own environment"
            )
        actions = np.empty((rows_total, self.agent.chunk_dim), np.float32)
        q = np.empty(rows_total, np.float64)
        seconds = np.empty(rows_total, np.float64)
        by_spec: dict[Any, list[int]] = {}
        for row, condition in enumerate(condition_indices):
            by_spec.setdefault(self.specs[condition], []).append(row)
        for spec, rows in by_spec.items():
            size = max(self.batch_size, len(rows))
            padded = np.concatenate([rows, np.full(size - len(rows), rows[0])]).astype(np.int64)
            start = time.perf_counter()
            spec_actions, spec_q = self._act(spec)(
                self.agent,
                observations[padded],
                noise_seeds[padded],
                self.weights[condition_indices[padded]],
            )
            actions[rows] = np.asarray(spec_actions)[: len(rows)]
            q[rows] = np.asarray(spec_q)[: len(rows)]
            seconds[rows] = (time.perf_counter() - start) / len(rows)
        return PolicyOutput(actions, q, seconds)


def check_run_samplers(run: Any, specs: Sequence[Any]) -> dict[str, Any]:
    """Check that the run can sample every spec (a behaviour flow for the guided samplers; the
    add-ons that robustq, cfgrl and the distill samplers need) and return those add-ons, loaded:
    {name: `qgf.addons.base.LoadedAddon`}. A missing add-on is a one-line QGFError naming the
    command that trains it."""
    from qgf.addons import load_addons
    from qgf.agents.base import check_sampler

    specs = list(dict.fromkeys(specs))
    for spec in specs:
        check_sampler(run.agent, spec)
    return load_addons(run, specs)


def default_samplers(run: Any) -> tuple[str, ...]:
    """QGF where the run has a behaviour flow to guide, else the method's own policy."""
    return ("qgf",) if run.agent.behavior_velocity_fn is not None else ("policy",)


def run_dataset_name(meta: dict[str, Any]) -> str:
    """The OGBench name a run was trained on, from its meta.json."""
    dataset = meta.get("dataset") or {}
    for name in (
        meta.get("env"),
        meta.get("env_name"),
        dataset.get("name") if isinstance(dataset, dict) else None,
    ):
        if isinstance(name, str) and name:
            return name
    raise QGFError("the run's meta.json names no dataset or environment; cannot choose an evaluation env")


def evaluation_env_name(name: str, task: int | None = None) -> tuple[str, int | None]:
    """The single-task env to evaluate in, from a run's dataset or env name and an optional task
    override: ``(cube-double-play-singletask-task2-v0, 3) -> (cube-double-singletask-task3-v0, 3)``."""
    from qgf.envs import parse_name

    parsed = parse_name(name)
    if task is not None:
        parsed = parsed.with_task(task)
    elif not parsed.singletask:
        parsed = parsed.with_task(None)  # OGBench's default task
    return parsed.env_name, parsed.task


# --------------------------------------------------------------------------------------------------
# Resuming an evaluation condition by condition

PARTIAL_FORMAT = 1


def _condition_identity(run: Any, env_name: str, seed: int, episodes: int, condition: Condition) -> dict:
    spec = condition.spec
    return {
        "format": PARTIAL_FORMAT,
        "run_step": int(run.step),
        "env": env_name,
        "seed": int(seed),
        "episodes": int(episodes),
        "spec": repr(spec),  # every field of the sampler (estimator, steps, best-of-N, ...)
        "weight": float(condition.weight),
    }


def _partial_path(resume_dir: Any, identity: dict) -> Any:
    import hashlib
    import json
    from pathlib import Path

    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return Path(resume_dir) / f"condition-{digest}.json"


def _load_partial(resume_dir: Any, identity: dict) -> dict | None:
    """A finished condition saved by an earlier (killed) evaluation with the same identity."""
    import json

    path = _partial_path(resume_dir, identity)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or cut short by a kill before the atomic rename (never happens) or edited
    return document if document.get("identity") == identity else None


def _save_partial(resume_dir: Any, identity: dict, records, description, horizon, seconds: float) -> None:
    from qgf.fileio import atomic_write_json

    atomic_write_json(
        _partial_path(resume_dir, identity),
        {
            "identity": identity,
            "episodes": [dataclasses.asdict(record) for record in records],
            "env": dataclasses.asdict(description),
            "action_horizon": int(horizon),
            "wall_clock_s": float(seconds),
        },
    )


def evaluate_run(
    run: Any,
    samplers: Sequence[Any] | None = None,
    weights: Sequence[float] = (0.0,),
    bfn: Sequence[int] = (1,),
    episodes: int = 50,
    task: int | None = None,
    seed: int = 0,
    *,
    workers: int | None = None,
    num_envs: int | None = None,
    progress: bool = False,
    resume_dir: str | os.PathLike | None = None,
    conditions: Sequence[Condition] | None = None,
    max_episode_steps: int | None = None,
    keep_envs: bool = False,
    groups: int = 2,
) -> EvaluationResults:
    """Evaluate a run (a `qgf.checkpoint.Run` or its path) on its single-task env for every
    (sampler, best-of-N, weight); returns `qgf.results.EvaluationResults`. `samplers` default to
    `default_samplers(run)`.

    A goal-conditioned run (`is_goal_conditioned`) is evaluated on OGBench's evaluation goal
    `task` (1..5, required) of its domain, with observations `concat(observation, goal)`; the
    results record the goal as `task` and `extra["goal_conditioned"] = True`. `evaluate_goals`
    evaluates several goals (default all five) and pools them.

    With `resume_dir`, each condition's episodes are saved there as soon as the condition finishes,
    and conditions already saved (same run step, env, goal, seed, episodes, sampler and weight) are
    not run again: a killed evaluation resumes at the next condition. Episodes depend only on (seed,
    episode) (common random numbers), so a resumed evaluation gives the same results as an
    uninterrupted one; its wall-clock is the sum of the parts. `conditions` (a list of
    `Condition`) replaces the samplers x bfn x weights grid; `max_episode_steps` shortens episodes
    (toy sweeps; default the env's own limit); `keep_envs` keeps the env workers for the next
    evaluation of the same task in this process, and `groups` is the number of env groups stepped
    in turn (see `rollout`; sweeps keep the envs and use one group)."""
    run = _as_run(run)
    if is_goal_conditioned(run):
        if task is None:
            raise QGFError(
                f"run {run.path} is goal-conditioned: evaluate_run evaluates one OGBench evaluation goal "
                f"(task=1..{NUM_EVALUATION_GOALS}); evaluate_goals evaluates several (default all)"
            )
        (goal,) = check_goals([task])
        return evaluate_goals(
            run,
            samplers,
            weights,
            bfn,
            episodes,
            goals=[goal],
            seed=seed,
            workers=workers,
            num_envs=num_envs,
            progress=progress,
            resume_dir=resume_dir,
            conditions=conditions,
            max_episode_steps=max_episode_steps,
            groups=groups,
        ).per_goal[goal]
    env_name, env_task = evaluation_env_name(run_dataset_name(run.meta), task)
    if conditions is None:
        conditions = sweep_conditions(samplers or default_samplers(run), weights, bfn, run.config.flow_steps)
    check_run_samplers(run, [condition.spec for condition in conditions])
    result = _rollout_resumable(
        run,
        env_name,
        conditions,
        episodes,
        seed,
        resume_dir,
        workers=workers,
        num_envs=num_envs,
        progress=progress,
        max_episode_steps=max_episode_steps,
        keep_envs=keep_envs,
        groups=groups,
    )
    # the limit the episodes ran under: an override shortens them (None: the env's own)
    return _evaluation_results(run, env_name, env_task, result, seed, episodes, limit=max_episode_steps)


def _as_run(run: Any) -> Any:
    if not isinstance(run, str | os.PathLike) and not hasattr(run, "agent"):
        raise QGFError(f"expected a run or a run directory, got {type(run).__name__}")
    if isinstance(run, str | os.PathLike):
        from qgf.checkpoint import load_run

        run = load_run(run)
    return run


def _evaluation_results(
    run, env_name, task, result: RolloutResult, seed, episodes, extra: dict | None = None, limit=None
) -> EvaluationResults:
    import datetime

    from qgf import __version__
    from qgf.versions import package_version

    return EvaluationResults(
        env=env_name,
        task=task,
        ogbench_version=package_version("ogbench"),
        success_timing=result.env.success_timing,
        success_definition=SUCCESS_DEFINITION,
        max_episode_steps=limit or result.env.max_episode_steps,
        action_horizon=result.action_horizon,
        seed=seed,
        episodes_per_condition=episodes,
        interval={"method": "wilson", "level": CONFIDENCE_LEVEL},
        wall_clock_s=result.wall_clock_s,
        env_steps=result.env_steps,
        num_envs=result.num_envs,
        workers=result.workers,
        run=str(run.path),
        qgf_version=__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        results=summarize(result, lambda c: (c.spec.estimator, c.weight, c.spec.best_of_n, c.spec.label)),
        extra={
            "run_step": run.step,
            "agent": run.config.agent,
            "critic": run.config.critic,
            "flow_steps": run.config.flow_steps,
            "guidance_critic": run.config.guidance_critic,
            "startup_s": result.startup_s,
            "common_random_numbers": True,
            **(extra or {}),
        },
    )


# --------------------------------------------------------------------------------------------------
# Goal-conditioned evaluation: OGBench's five evaluation goals


def is_goal_conditioned(run: Any) -> bool:
    """Whether a loaded run was trained goal-conditioned (its config or meta.json says so)."""
    return bool(getattr(run.config, "goal_conditioned", False) or run.meta.get("goal_conditioned", False))


def check_goals(goals: Sequence[int] | int | None) -> list[int]:
    """The evaluation goals to run, in order, without repeats: `None` is all of OGBench's goals
    (1..5); anything outside 1..5 is a one-line QGFError."""
    count = NUM_EVALUATION_GOALS
    if goals is None:
        return list(range(1, count + 1))
    if isinstance(goals, int):
        goals = [goals]
    checked = []
    for goal in goals:
        if isinstance(goal, bool) or not isinstance(goal, int | np.integer) or not 1 <= goal <= count:
            raise QGFError(f"evaluation goal {goal!r} does not exist: OGBench has goals 1..{count}")
        checked.append(int(goal))
    if not checked:
        raise QGFError(f"no evaluation goal given; OGBench has goals 1..{count}")
    return list(dict.fromkeys(checked))


def goal_env_name(run: Any) -> str:
    """The goal-conditioned env a goal-conditioned run is evaluated in (`puzzle-3x3-play-v0` ->
    `puzzle-3x3-v0`). A single-task run, or a run whose name has a task, is a one-line error."""
    from qgf.envs import parse_name

    name = run_dataset_name(run.meta)
    if not is_goal_conditioned(run):
        raise QGFError(
            f"run {run.path} was trained single-task on {name}, not goal-conditioned: it has no evaluation "
            "goals; evaluate it on a single task (qgf evaluate RUN [--task K], evaluate_run(run, task=K))"
        )
    parsed = parse_name(name)
    if parsed.singletask:
        raise QGFError(
            f"run {run.path} is goal-conditioned but names the single-task {name}; a goal-conditioned run "
            f"evaluates in {parsed.goal_env_name} (fix meta.json's env to {parsed.dataset_name})"
        )
    return parsed.goal_env_name


def make_goal_evaluation_env(name: str, goal: int) -> Any:
    """The env of one evaluation goal (module level: `functools.partial(make_goal_evaluation_env,
    name, goal)` is what the worker processes receive). The goal's settling actions are seeded from
    the reset seed (`qgf.envs.GoalTaskEnv`), so an episode is a function of its reset seed."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless: never needs a display
    from qgf.envs import make_goal_env

    return make_goal_env(name, goal, seed_goal=True)


def _goal_size_error(run: Any, env_name: str, env_dim: int) -> QGFError:
    meta = run.meta
    network = int(run.agent.obs_dim)
    observation = meta.get("observation_dim", network // 2)
    goal = meta.get("goal_dim", network - observation)
    return QGFError(
        f"run {run.path} takes {network} = {observation} (observation) + {goal} (goal) inputs, but "
        f"{env_name} gives {env_dim} = {env_dim // 2} + {env_dim - env_dim // 2}: the run was not trained "
        f"on this domain's observations; evaluate it on the domain of its data, or retrain it on "
        f"{env_name}'s play data (qgf data generate --env {run_dataset_name(meta)})"
    )


def _check_goal_observation_size(run: Any, env_name: str) -> None:
    """Before any env is built: the run's input size against the domain's [observation, goal]
    size, where qgf knows the domain's observation size (manipulation domains; goals there are
    full observations). Other envs are checked at the first policy call (`_GoalPolicy`)."""
    from qgf.envs import MANIPULATION_DOMAINS, parse_name

    spec = MANIPULATION_DOMAINS.get(parse_name(env_name).domain)
    if spec is not None and 2 * spec.observation_dim != int(run.agent.obs_dim):
        raise _goal_size_error(run, env_name, 2 * spec.observation_dim)


class _GoalPolicy:
    """One goal's view of the `AgentPolicy` shared by all goals of an evaluation (so each sampler
    compiles once, not once per goal): maps the rollout's condition indices (over the conditions
    still to run) to the shared list, and names the sizes if the env's observations do not fit."""

    def __init__(self, policy: AgentPolicy, indices: Sequence[int], size_error: Callable[[int], QGFError]):
        self.policy = policy
        self.indices = np.asarray(indices, np.int64)
        self.size_error = size_error

    def warmup(self, batch_size: int) -> None:
        self.policy.warmup(batch_size, [self.policy.specs[index] for index in self.indices])

    def __call__(self, observations, condition_indices, noise_seeds) -> PolicyOutput:
        if observations.shape[1] != self.policy.agent.obs_dim:
            raise self.size_error(observations.shape[1])
        return self.policy(observations, self.indices[condition_indices], noise_seeds)


def evaluate_goals(
    run: Any,
    samplers: Sequence[Any] | None = None,
    weights: Sequence[float] = (0.0,),
    bfn: Sequence[int] = (1,),
    episodes: int = 50,
    goals: Sequence[int] | int | None = None,
    seed: int = 0,
    *,
    workers: int | None = None,
    num_envs: int | None = None,
    progress: bool = False,
    resume_dir: str | os.PathLike | None = None,
    conditions: Sequence[Condition] | None = None,
    max_episode_steps: int | None = None,
    on_goal_done: Callable[[int, EvaluationResults], None] | None = None,
    groups: int = 2,
) -> GoalEvaluation:
    """Evaluate a goal-conditioned run on OGBench's evaluation goals of its domain (`goals`,
    default all five: `task_id` 1..5 of the goal-conditioned env, goals given by the env) for every
    (sampler, best-of-N, weight); returns a `qgf.results.GoalEvaluation` (one
    `EvaluationResults` per goal, and `.overall()`: success pooled over goals).

    Each goal runs as its own rollout in `make_goal_evaluation_env(dataset, goal)`, whose
    observations are `concat(observation, goal)`; the goals share one compiled policy. Goal K's
    results record `task = K`, `env` = the goal-conditioned env (e.g. `puzzle-3x3-v0`) and
    `extra["goal_conditioned"] = True`. Episode e of every goal and condition starts from the same
    reset seed and chunk noise (common random numbers; the goal observation is a function of the
    seed, see `qgf.envs.GoalTaskEnv`). `resume_dir` saves and reuses finished (goal, condition)
    pairs as in `evaluate_run`; `on_goal_done(goal, results)` is called as each goal finishes
    (e.g. to write its files)."""
    import functools

    run = _as_run(run)
    env_name = goal_env_name(run)
    goals = check_goals(goals)
    _check_goal_observation_size(run, env_name)
    if conditions is None:
        conditions = sweep_conditions(samplers or default_samplers(run), weights, bfn, run.config.flow_steps)
    conditions = list(conditions)
    policy = AgentPolicy.for_run(run, conditions)
    dataset = run_dataset_name(run.meta)
    per_goal = {}
    for goal in goals:
        result = _rollout_resumable(
            run,
            env_name,
            conditions,
            episodes,
            seed,
            resume_dir,
            env=functools.partial(make_goal_evaluation_env, dataset, goal),
            goal=goal,
            policy=policy,
            workers=workers,
            num_envs=num_envs,
            progress=progress,
            max_episode_steps=max_episode_steps,
            groups=groups,
        )
        extra = {"goal_conditioned": True, "goal": goal, "goal_seeded_by_reset_seed": True}
        per_goal[goal] = _evaluation_results(
            run, env_name, goal, result, seed, episodes, extra, limit=max_episode_steps
        )
        if on_goal_done is not None:
            on_goal_done(goal, per_goal[goal])
    return GoalEvaluation(env=env_name, per_goal=per_goal)


def _rollout_resumable(
    run,
    env_name,
    conditions,
    episodes,
    seed,
    resume_dir,
    *,
    env: str | Callable[[], Any] | None = None,
    goal: int | None = None,
    policy: AgentPolicy | None = None,
    **rollout_options,
) -> RolloutResult:
    """`rollout` of the conditions not yet saved in `resume_dir` (all of them without one), merged
    with the saved ones into one `RolloutResult` over every condition.

    Goal-conditioned evaluations pass `env` (the env factory; default `env_name`), `goal` (part of
    each condition's identity) and `policy` (an `AgentPolicy` over all `conditions`, shared by the
    goals)."""
    identities = [_condition_identity(run, env_name, seed, episodes, c) for c in conditions]
    if goal is not None:  # single-task identities stay as they were: their saved files still resume
        identities = [{**identity, "goal": int(goal)} for identity in identities]
    saved = {}
    if resume_dir is not None:
        os.makedirs(resume_dir, exist_ok=True)
        saved = {i: doc for i, ident in enumerate(identities) if (doc := _load_partial(resume_dir, ident))}
    remaining = [index for index in range(len(conditions)) if index not in saved]
    records = [
        EpisodeRecord(**{**episode, "condition": index})
        for index, document in saved.items()
        for episode in document["episodes"]
    ]
    wall_clock_s = sum(document["wall_clock_s"] for document in saved.values())
    if not remaining:
        any_saved = next(iter(saved.values()))
        return RolloutResult(
            conditions=list(conditions),
            episodes_per_condition=episodes,
            seed=seed,
            episodes=sorted(records, key=lambda r: (r.condition, r.episode)),
            env=EnvDescription(**any_saved["env"]),
            action_horizon=any_saved["action_horizon"],
            env_steps=sum(r.length for r in records),
            wall_clock_s=wall_clock_s,
            startup_s=0.0,
            num_envs=0,
            workers=0,
        )
    todo = [conditions[index] for index in remaining]
    last_finish = [time.perf_counter()]

    def save(local_index, condition_records, description, horizon) -> None:
        now = time.perf_counter()  # wall-clock since the previous condition finished: its share
        _save_partial(
            resume_dir,
            identities[remaining[local_index]],
            condition_records,
            description,
            horizon,
            now - last_finish[0],
        )
        last_finish[0] = now

    if policy is None:
        policy_fn = AgentPolicy.for_run(run, todo)
    else:
        policy_fn = _GoalPolicy(policy, remaining, lambda dim: _goal_size_error(run, env_name, dim))
    result = rollout(
        env_name if env is None else env,
        policy_fn,
        todo,
        episodes,
        seed,
        on_condition_done=save if resume_dir is not None else None,
        **rollout_options,
    )
    for record in result.episodes:
        record.condition = remaining[record.condition]
    merged = sorted(records + result.episodes, key=lambda r: (r.condition, r.episode))
    return dataclasses.replace(
        result,
        conditions=list(conditions),
        episodes=merged,
        env_steps=sum(r.length for r in merged),
        wall_clock_s=result.wall_clock_s + wall_clock_s,
    )
