"""The online phase's cost: env steps/s at UTD 1 against one update + one env step measured alone.

    python bench/online.py [--quick] [--json PATH]

`run(quick)` returns a dict (used by `qgf bench`): on cube-single task 2 with FQL at the cpu-small
scale (a few generated play episodes as the offline data), per env step, in CPU seconds of this
process (the env runs in it, so they cover everything), the minimum over 3 interleaved rounds
(robust to other load):

- `update`: one update of the offline loop (`update_many` over many steps, offline ∪ online batches);
- `update_in_chunks`: one update when called h at a time, as the online phase calls them;
- `env`: one env step alone (random actions, chunks of h, no recording);
- `online`: one env step of the online phase at UTD 1 (acting, recording, labelling, buffer copy,
  updates);

and the ratio online ÷ (update + env), target <= 1.3 (issue 23).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

DATASET = "cube-single-play-singletask-task2-v0"
ENV = "cube-single-singletask-task2-v0"


def _cpu_time(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def run(quick: bool = True) -> dict:
    import jax

    from qgf.agents import agent_class
    from qgf.config import load_preset
    from qgf.data import generate, load_dataset
    from qgf.data.chunks import to_device
    from qgf.data.replay import MixedSampler, OnlineBuffer
    from qgf.evaluation.workers import EnvHost
    from qgf.online import OnlinePhase, OnlineSettings, StateLabeller

    steps = 250 if quick else 1000
    with tempfile.TemporaryDirectory() as data_dir:
        generate(
            "cube-single-play-v0", data_dir, episodes=2, val_episodes=1, episode_length=200, progress=False
        )
        dataset = load_dataset(DATASET, data_dir)
    config = load_preset("cpu-small", {"agent": "fql"})
    agent = agent_class("fql").create(0, dataset.observation_dim, dataset.action_dim, config)
    horizon = config.horizon
    settings = OnlineSettings(steps=10 * steps)  # capacity only: the bench drives the phase itself
    labeller = StateLabeller({"env": DATASET, "dataset": dataset.metadata()})
    phase = OnlinePhase(
        agent, to_device(dataset), OnlineBuffer(8 * steps + 16, 28, 5), settings, ENV, labeller
    )
    host = EnvHost(ENV, 1)
    host.run([(0, 0, None)])
    rng = np.random.default_rng(0)
    chunks = rng.uniform(-1, 1, size=(steps // horizon, horizon, 5)).astype(np.float32)

    def step_env():
        for chunk in chunks:
            if host.run([(0, None, chunk)])[0].truncated:
                host.run([(0, 1, None)])

    rounds = 3  # interleaved; the minimum of each quantity over the rounds (robust to other load)
    samples: dict[str, list[float]] = {"online": [], "update": [], "update_in_chunks": [], "env": []}
    try:
        phase.update_many(None, 2 * horizon)  # compile acting and the chunk's update; fill the buffer
        sampler = MixedSampler("union")
        state = None

        def updates(count, calls):
            nonlocal state
            for _ in range(calls):
                state, metrics = state.update_many(data, count, sample_fn=sampler)
            jax.block_until_ready(metrics)

        calls = steps // horizon
        for index in range(rounds):
            samples["online"].append(_cpu_time(lambda: phase.update_many(None, steps)) / steps)
            data = {"offline": phase.offline_data, "online": phase.buffer.device()}
            state = phase.agent
            if index == 0:
                updates(steps, 1)  # compile the long call
            samples["update"].append(_cpu_time(lambda: updates(steps, 1)) / steps)
            samples["update_in_chunks"].append(_cpu_time(lambda: updates(horizon, calls)) / (calls * horizon))
            samples["env"].append(_cpu_time(step_env) / (len(chunks) * horizon))
    finally:
        phase.close()
    update, in_chunks, env, online = (
        min(samples[k]) for k in ("update", "update_in_chunks", "env", "online")
    )
    return {
        "steps": steps,
        "rounds": rounds,
        "samples": samples,
        "cpu_seconds_per_env_step": {
            "update": update,
            "update_in_chunks": in_chunks,
            "env": env,
            "online": online,
        },
        "env_steps_per_cpu_second": {"online_utd1": 1 / online, "env_only": 1 / env},
        "offline_updates_per_cpu_second": 1 / update,
        "ratios": {
            "online step÷(update + env step)": online / (update + env),
            "online step÷(update in chunks + env step)": online / (in_chunks + env),
        },
        "targets": {"online step÷(update + env step)": 1.3},
        "at_most": {"online step÷(update + env step)": True},
    }


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from qgf.benchmark import script_main

    script_main(run, __doc__)
