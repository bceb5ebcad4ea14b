"""Goal sampling's share of a goal-conditioned training step (issue 11).

`run(quick) -> dict` for `qgf bench`; `python bench/goals.py [--quick]` prints it.

One goal-conditioned agent of the CPU goal preset (`goal/puzzle-3x3-cpu`: 4x256 networks, batch
256, DQC critic with h_c = 25, h_a = 5) is trained by the same compiled many-updates loop
(`update_many`) with two batch samplers of the same batch size and chunk length:

- `goal`: what `qgf train --goal-conditioned` uses (`qgf.data.goals.GoalChunkSampler`): hindsight
  value and actor goals (current / future-in-trajectory with geometric offsets / random rows) and
  goal-reaching rewards and masks recomputed over the chunk;
- `plain`: single-task chunk sampling (`qgf.data.chunks.sample_chunks`) of the same h_c, with the
  chunk's own first observation as both goals (no goal search, no reward recomputation), seen
  through the same adapter, so the networks and losses are identical and only sampling differs.

Ratio = step time with goal sampling ÷ step time with single-task sampling (target <= 1.2).
Data: the synthetic trajectories of bench/training.py (50 x 200 rows).
"""

from __future__ import annotations

import dataclasses
import json

from qgf.agents import agent_class
from qgf.benchmark import load_script, script_main
from qgf.config import load_preset
from qgf.data.chunks import sample_chunks, to_device
from qgf.data.goals import goal_training_batch

PRESET = "goal/puzzle-3x3-cpu"
TARGET = 1.2
RATIO_NAME = "goal sampling step÷single-task sampling step (cpu goal preset)"


@dataclasses.dataclass(frozen=True)
class PlainChunkSampler:
    """Single-task chunks of `critic_horizon` steps in the goal-conditioned batch layout."""

    critic_horizon: int

    def __call__(self, device_data, key, batch_size, horizon, discount):
        raw = dict(sample_chunks(device_data, key, batch_size, self.critic_horizon, discount))
        raw["value_goals"] = raw["actor_goals"] = raw["observations"]
        return goal_training_batch(raw, horizon)


def run(quick: bool) -> dict:
    from qgf.agents.base import training_sample_fn

    dataset = load_script("training").synthetic_dataset()
    device_data = to_device(dataset)
    obs_dim, action_dim = dataset.observations.shape[1], dataset.actions.shape[1]
    config = load_preset(PRESET, {}, warn=False)
    samplers = {"goal": training_sample_fn(config), "plain": PlainChunkSampler(config.dqc_horizon)}
    steps = 20 if quick else 100
    cls = agent_class(config.agent)
    agents = {name: [cls.create(0, 2 * obs_dim, action_dim, config)] for name in samplers}

    def step(name):
        def call():
            agents[name][0], metrics = agents[name][0].update_many(
                device_data, steps, donate=True, sample_fn=samplers[name]
            )
            return metrics

        return call

    best_seconds = load_script("agents").best_seconds
    calls = {name: step(name) for name in samplers}
    for call in calls.values():
        call()  # compile
    repeats = 2 if quick else 4
    seconds = {name: best_seconds(calls[name], repeats) for name in samplers}
    results = {
        "preset": PRESET,
        "steps_per_call": steps,
        "batch_size": config.batch_size,
        "critic_horizon": config.dqc_horizon,
        "steps_per_s": {name: steps / seconds[name] for name in samplers},
        "ratios": {RATIO_NAME: seconds["goal"] / seconds["plain"]},
        "targets": {RATIO_NAME: TARGET},
        "at_most": {RATIO_NAME: True},
    }
    print(json.dumps(results["steps_per_s"]), flush=True)
    return results


if __name__ == "__main__":
    script_main(run, __doc__)
