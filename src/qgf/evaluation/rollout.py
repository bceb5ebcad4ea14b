"""The rollout loop: episodes of a list of conditions on many envs, with open-loop action chunks.

`rollout` is policy-agnostic. It runs ``episodes_per_condition`` episodes for every condition in a
list (a condition is anything: a sampler, a weight, a label) on the envs of an env pool
(`qgf.evaluation.workers`), and queries ``policy_fn`` once per chunk for all the live episodes of
one env group as a single batch. Each chunk of h actions is clipped to [-1, 1] and executed
open-loop; the episode ending mid-chunk drops the rest of the chunk.

Reproducibility: episode ``e`` of every condition starts from the same reset seed and its policy
draws the same noise at the same chunk (common random numbers), both derived from (seed, e, chunk)
only (`episode_reset_seed`, `chunk_noise_seed`). Results therefore do not depend on the number of
workers, environments or groups, nor on which environment an episode happened to run in -- and
differences between weights are paired.

Imports: numpy, the standard library, `qgf.errors`, `qgf.progress` and `qgf.evaluation.workers`.
The policy comes in as a callable (`PolicyFn`; `qgf.policy.AgentPolicy` for a trained run).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from qgf.errors import QGFError
from qgf.evaluation.workers import (
    EnvDescription,
    EnvFactory,
    StepOutcome,
    available_cores,
    default_num_envs,
    keep_key,
    keep_pool,
    open_pool,
)
from qgf.progress import progress_bar

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


def rollout(
    env: EnvFactory,
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
            envs. `qgf.evaluation.workers.close_kept_envs` ends them.
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
    key = keep_key(env, slots_per_worker, in_process) if keep_envs else None
    pool = open_pool(env, slots_per_worker, in_process, key)
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
        if key is not None and completed:  # an interrupted pool may have replies in flight
            keep_pool(key, pool)
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
