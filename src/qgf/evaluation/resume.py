"""Resuming an evaluation condition by condition: each finished condition's episodes are saved
in a partial file named by the condition's identity (run step, env, goal, seed, episodes, sampler,
weight), and `rollout_resumable` runs only the conditions not saved yet, then merges both into one
`RolloutResult`. Episodes depend only on (seed, episode) (common random numbers), so a resumed
evaluation gives the same results as an uninterrupted one.

Imports: the standard library, `qgf.fileio` and `qgf.evaluation.{rollout,workers}`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qgf.evaluation.rollout import EpisodeRecord, PolicyFn, RolloutResult, rollout
from qgf.evaluation.workers import EnvDescription, EnvFactory
from qgf.fileio import atomic_write_json

PARTIAL_FORMAT = 1


def condition_identity(
    run: Any, env_name: str, seed: int, episodes: int, condition: Any, goal: int | None = None
) -> dict:
    """What a saved condition must match to be reused. `goal` is added for goal-conditioned
    evaluations only: single-task identities stay as they were, so their saved files still resume."""
    spec = condition.spec
    identity = {
        "format": PARTIAL_FORMAT,
        "run_step": int(run.step),
        "env": env_name,
        "seed": int(seed),
        "episodes": int(episodes),
        "spec": repr(spec),  # every field of the sampler (estimator, steps, best-of-N, ...)
        "weight": float(condition.weight),
    }
    if goal is not None:
        identity["goal"] = int(goal)
    return identity


def partial_path(resume_dir: str | os.PathLike, identity: dict) -> Path:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return Path(resume_dir) / f"condition-{digest}.json"


def load_partial(resume_dir: str | os.PathLike, identity: dict) -> dict | None:
    """A finished condition saved by an earlier (killed) evaluation with the same identity."""
    path = partial_path(resume_dir, identity)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or cut short by a kill before the atomic rename (never happens) or edited
    return document if document.get("identity") == identity else None


def save_partial(resume_dir, identity: dict, records, description, horizon, seconds: float) -> None:
    atomic_write_json(
        partial_path(resume_dir, identity),
        {
            "identity": identity,
            "episodes": [dataclasses.asdict(record) for record in records],
            "env": dataclasses.asdict(description),
            "action_horizon": int(horizon),
            "wall_clock_s": float(seconds),
        },
    )


def rollout_resumable(
    env: EnvFactory,
    conditions: Sequence[Any],
    identities: Sequence[dict],
    episodes: int,
    seed: int,
    resume_dir: str | os.PathLike | None,
    make_policy: Callable[[list[int]], PolicyFn],
    **rollout_options: Any,
) -> RolloutResult:
    """`rollout` of the conditions not yet saved in `resume_dir` (all of them without one), merged
    with the saved ones into one `RolloutResult` over every condition. `identities[i]` names
    condition i (`condition_identity`); `make_policy(remaining)` is the policy over the conditions
    still to run (their indices into `conditions`), called only when there are some."""
    saved = {}
    if resume_dir is not None:
        os.makedirs(resume_dir, exist_ok=True)
        saved = {i: doc for i, ident in enumerate(identities) if (doc := load_partial(resume_dir, ident))}
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
        save_partial(
            resume_dir,
            identities[remaining[local_index]],
            condition_records,
            description,
            horizon,
            now - last_finish[0],
        )
        last_finish[0] = now

    result = rollout(
        env,
        make_policy(remaining),
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
