"""The planner's rough cost model, in CPU-seconds and GPU-seconds per job: what `qgf sweep --plan`
prints and the progress bar's ETA uses. Each constant says what it was fitted to or taken from;
refit it when a measurement disagrees (docs/experiments.md, "Cost model")."""

from __future__ import annotations

import functools
from typing import Any

# ~300 oracle rollout steps per CPU-second (OGBench's scripted oracles, MuJoCo on one core)
GENERATE_SECONDS_PER_STEP = 3e-3


def generate_cost(episodes: int, episode_length: int) -> float:
    return episodes * episode_length * GENERATE_SECONDS_PER_STEP


def train_cost(config, seeds: int) -> float:
    width = max(config.actor_hidden_dims + config.critic_hidden_dims)
    # CPU-seconds per seed-step: 9.5 ms fixed plus 4e-10 s per (batch row x width^2 x layer), fitted
    # to sweep training jobs (one CPU each, two side by side on 2 cores, seeds vmapped; the
    # calibration and domains sweeps of docs/results.md): 10.5-12.3 ms at cpu-small, 34-44 ms at
    # cpu. Other agents run 1-2x that (docs/agents.md).
    depth = len(config.actor_hidden_dims)
    return config.steps * seeds * (0.0095 + 4e-10 * config.batch_size * width * width * depth)


@functools.cache
def episode_limit(task: str) -> int:
    """The env's own episode limit, from the gymnasium registry OGBench fills (500 if unknown)."""
    import gymnasium
    import ogbench  # noqa: F401  (registers the envs)

    from qgf.envs import parse_name

    name = parse_name(task).env_name
    limit = gymnasium.registry[name].max_episode_steps if name in gymnasium.registry else None
    return int(limit or 500)


# CPU-seconds per env step of an evaluation: MuJoCo with OGBench's wrappers (~1.5 ms) plus the
# policy's share (one chunk query per h steps), measured order of magnitude on 2 cores.
EVAL_SECONDS_PER_STEP = 2.5e-3


def evaluation_cost(task: str, episodes: int, max_episode_steps: int | None) -> float:
    limit = max_episode_steps or episode_limit(task)
    return episodes * limit * EVAL_SECONDS_PER_STEP


def curve_cost(task: str, config, params: dict[str, Any]) -> float:
    curve = params.get("curve")
    if curve is None:
        return 0.0
    points = -(-config.steps // curve["every"])
    episodes = points * curve["episodes"] * len(curve["conditions"]) * len(params["seeds"])
    return evaluation_cost(task, episodes, curve["max_episode_steps"])


# One online env step at UTD 1, less the env's share, over the offline cost model's seed-step
# (`train_cost`), by what the online phase runs: fitted to online-cube (cube-single task 2,
# cpu-small, two jobs side by side on 2 cores; 30k env steps in 362-401 s for FQL, 618 s RLPD,
# about 1140 s QAM-EDIT, 1891-1971 s online QGF with the td critic, whose every backup runs the
# guided sampler on the batch; docs/results.md). Agents not listed: 1.
ONLINE_UPDATE_FACTORS: dict[str, float] = {
    "fql": 0.85,
    "rlpd": 1.5,
    "qam-edit": 3.0,
    "qgf/td": 5.2,  # the guided backup (docs/fidelity.md, "online QGF, critic=td")
}


def _online_factor(config) -> float:
    key = f"{config.agent}/{config.critic}" if config.agent == "qgf" else config.agent
    return ONLINE_UPDATE_FACTORS.get(key, 1.0)


def online_cost(task: str, config, online: dict[str, Any], gpu: bool = False) -> float:
    """CPU-seconds. Per env step: the env and the policy's share, plus `utd` updates at the agent's
    measured factor (on the GPU instead when `gpu`: `online_gpu_cost`); plus the curve's points (env
    step 0, every eval_every, and the last step)."""
    update = 0.0 if gpu else train_cost(config.replace(steps=1), 1) * _online_factor(config)
    per_step = EVAL_SECONDS_PER_STEP + online["utd"] * update
    points = 1 + -(-online["steps"] // online["eval_every"])
    episodes = points * online["eval_episodes"]
    return online["steps"] * per_step + evaluation_cost(task, episodes, online["max_episode_steps"])


# GPU milliseconds per training step of one seed: the QAM paper's Table 6 (its authors' code on their
# GPU, cube-triple, the paper's 4 x 512 networks, batch 256). Nothing here has been measured on a GPU
# by this project yet: bench/gpu_check.py's speed parts print our ms/step over these same values, and
# a lent GPU's numbers replace them. Agents without a row of their own take the row of the method
# whose update they repeat (GPU_STAND_INS). Small networks on a GPU are launch-bound, so the value is
# not scaled by width; seeds are counted linearly (vmapped seeds share launches: an upper bound).
GPU_MS_PER_STEP: dict[str, float] = {
    "rebrac": 2.97,
    "fbrac": 4.54,
    "cgql": 9.62,
    "cgql-mse": 10.40,
    "cgql-linex": 10.40,
    "fql": 3.58,
    "dsrl": 5.63,
    "fedit": 3.77,
    "fawac": 3.44,
    "ifql": 2.66,
    "dac": 4.44,
    "qsm-bc": 4.44,
    "qam": 5.83,
    "qam-edit": 6.61,
    "qam-fql": 6.36,
}
GPU_STAND_INS: dict[str, str] = {
    "qgf": "ifql",  # a BC flow and an IQL critic: IFQL's training, without its best-of-N at test time
    "edp": "dac",  # a flow trained with a critic term at each noise level's one-step estimate
    "bam": "qam",  # QAM with the basic adjoint (through f_beta too): QAM's row is a lower bound
    "rlpd": "rebrac",  # a Gaussian actor on an ensemble critic
}


def gpu_ms_per_step(agent: str) -> float:
    """One seed's training step on a GPU, in ms (the largest row for an agent the table lacks)."""
    return GPU_MS_PER_STEP.get(GPU_STAND_INS.get(agent, agent), max(GPU_MS_PER_STEP.values()))


def gpu_train_cost(config, seeds: int) -> float:
    """GPU-seconds of a training job on a GPU (the curve's evaluations stay on CPUs: `curve_cost`)."""
    return config.steps * seeds * gpu_ms_per_step(config.agent) / 1000


# An add-on's update (RobustQ's critic, CFGRL's conditional flow): one small network; order of
# magnitude on a CPU, and IFQL's row of Table 6 on a GPU.
ADDON_SECONDS_PER_STEP = 0.01


def addon_costs(steps: int, gpu: bool) -> tuple[float, float]:
    """(CPU-seconds, GPU-seconds) of training an add-on for `steps` steps."""
    return (0.0, steps * gpu_ms_per_step("ifql") / 1000) if gpu else (steps * ADDON_SECONDS_PER_STEP, 0.0)


def online_gpu_cost(config, online: dict[str, Any]) -> float:
    """GPU-seconds of an online phase on a GPU: `utd` updates per env step at the agent's online factor."""
    return online["steps"] * online["utd"] * gpu_ms_per_step(config.agent) / 1000 * _online_factor(config)
