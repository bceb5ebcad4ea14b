"""Evaluation throughput: guided-policy rollouts against the environments alone.

    python bench/evaluation.py [--quick] [--json PATH]

The issue's target: evaluating 9 weights x 10 episodes of one sampler on cube-single takes at most
about 1.5x the time the environments alone take to step the same number of steps. In one run,
`run(quick)` measures

- `eval`: `qgf.evaluation.rollout.rollout` with `qgf.policy.AgentPolicy` (what `qgf evaluate` runs) over a
  randomly initialised CPU-preset agent (4x256 networks, QGF sampler, 10 Euler steps), all cores;
- `env_only`: the same number of worker processes building the same number of envs and stepping
  the same total number of steps with uniformly random actions, no policy and no messages;
- `free_policy`: the rollout engine with a policy that costs nothing (a constant chunk), which
  separates the engine's own overhead (messages, bookkeeping) from the policy's compute;

- `study`: what a sweep's evaluation does on 2 cores -- two job slots at once (as Ray runs them),
  each running several evaluation jobs of the shipped CPU study's reference agent (its 12
  conditions, cpu-small networks, 8 envs kept between jobs in the layout its spec gives a sweep:
  stepped in the job's own process, one env group) --
  against two processes stepping the same envs with random actions for the same number of steps
  (issue 12's target: `study_ratio` <= 1.3, over the jobs after each slot's first);

and reports `ratio` = eval wall-clock / env-only wall-clock, both from process start to the last
step (spawning, env construction and JAX compilation included), plus `stepping_ratio`, the same
ratio with the start-up phases left out. Without --quick, eval and env-only alternate twice and the
ratios are of the sums. Target: `ratio` <= 1.5. Like `qgf evaluate`, the bench keeps compiled
samplers in JAX's persistent cache (`qgf.policy.use_compilation_cache`) in its `eval` case (the
`study` case compiles as a sweep's evaluation jobs do): the first run on a machine compiles them,
later runs load them; QGF_COMPILATION_CACHE=off measures the cold start every
time. Other processes on the machine distort wall-clock (the load average at the end is reported);
`cpu_ratio`, the same comparison in CPU seconds (main process with its JAX threads + worker
processes), is what a dedicated machine would pay and is robust to that.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ENV = "cube-single-play-singletask-task1-v0"
WEIGHTS = (0.004, 0.008, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12)  # the paper's single-task grid


class CpuClock:
    """CPU seconds used by this process (all its threads) and by its finished child processes.

    On a busy machine wall-clock ratios drift with other people's load; CPU time, which is what a
    dedicated machine would have to supply, does not (much)."""

    @staticmethod
    def now() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime


def env_only(env_name: str, workers: int, num_envs: int, total_steps: int) -> dict:
    """Wall-clock of ``workers`` processes stepping ``total_steps`` random actions between them."""
    from qgf.evaluation.envtiming import time_env_stepping

    cpu_start = CpuClock.now()
    timing = time_env_stepping(env_name, total_steps, workers, num_envs)
    return {
        "wall_s": round(timing["wall_s"], 3),
        "cpu_s": round(CpuClock.now() - cpu_start, 3),
        "stepping_s": round(timing["stepping_s"], 3),
        "steps_per_second": round(timing["steps_per_second"], 1),
    }


def _random_agent(obs_dim: int, action_dim: int):
    import jax

    from qgf.agents.qgf import QGFAgent
    from qgf.config import load_preset

    config = load_preset("cpu", warn=False)
    # One compiled initialisation instead of an eager one (which compiles every small op).
    return jax.jit(lambda: QGFAgent.create(0, obs_dim, action_dim, config))()


class _ConstantPolicy:
    def __init__(self, horizon: int, action_dim: int):
        self.chunk = np.zeros((horizon, action_dim), np.float32)

    def __call__(self, observations, condition_indices, noise_seeds):
        from qgf.evaluation.rollout import PolicyOutput

        rows = len(observations)
        return PolicyOutput(np.broadcast_to(self.chunk, (rows,) + self.chunk.shape), np.zeros(rows))


def evaluation(env_name: str, weights, episodes: int, workers: int, agent) -> dict:
    from qgf.evaluation.conditions import sweep_conditions
    from qgf.evaluation.rollout import rollout
    from qgf.policy import AgentPolicy

    conditions = sweep_conditions(["qgf"], weights, [1], agent.config.flow_steps)
    policy = AgentPolicy(agent, conditions)
    cpu_start = CpuClock.now()
    result = rollout(env_name, policy, conditions, episodes, seed=0, workers=workers)
    cpu = CpuClock.now() - cpu_start
    policy_seconds = sum(record.policy_seconds for record in result.episodes)
    return {
        "wall_s": round(result.wall_clock_s, 3),
        "cpu_s": round(cpu, 3),
        "startup_s": round(result.startup_s, 3),
        "stepping_s": round(result.wall_clock_s - result.startup_s, 3),
        "env_steps": result.env_steps,
        "policy_compute_s": round(policy_seconds, 3),
        "num_envs": result.num_envs,
    }


STUDY_SPEC = "cpu-study"  # the shipped spec whose evaluation the `study` case mirrors


def _study_conditions(flow_steps: int):
    """The reference agent's conditions in the shipped CPU study (its samplers x weights x BFN)."""
    from qgf.experiments.spec import agent_conditions, load_spec

    spec = load_spec(STUDY_SPEC)
    reference = next(agent for agent in spec.agents if agent.name == "qgf")
    return agent_conditions(spec, reference, flow_steps, True), spec


def _study_slot(env_name: str, jobs: int, episodes: int, slot: int, layout: dict) -> list[dict]:
    """One sweep job slot (a Ray worker): `jobs` evaluation jobs in a row, each a fresh
    `AgentPolicy`, the envs kept between jobs as sweep jobs keep them. `layout`: the rollout's
    `workers`, `num_envs` and `groups`, each defaulting to the shipped study's value."""
    import jax

    from qgf.agents.qgf import QGFAgent
    from qgf.config import load_preset
    from qgf.evaluation.rollout import rollout
    from qgf.evaluation.workers import close_kept_envs, make_ogbench_env
    from qgf.policy import AgentPolicy

    # No persistent compilation cache here: a sweep's evaluation jobs compile in their own process.
    probe = make_ogbench_env(env_name)
    obs_dim, action_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()
    conditions, spec = _study_conditions(10)
    config = load_preset(spec.preset, warn=False)
    agent = jax.jit(lambda: QGFAgent.create(slot, obs_dim, action_dim, config))()
    records = []
    try:
        for job in range(jobs):
            result = rollout(
                env_name,
                AgentPolicy(agent, conditions),
                conditions,
                episodes,
                seed=100 * slot + job,
                workers=layout.get("workers", spec.evaluation["workers"]),
                num_envs=layout.get("num_envs", spec.evaluation.get("num_envs")),
                groups=layout.get("groups", spec.evaluation["groups"]),
                keep_envs=True,
            )
            records.append(
                {
                    "wall_s": result.wall_clock_s,
                    "startup_s": result.startup_s,
                    "env_steps": result.env_steps,
                    "num_envs": result.num_envs,
                    "policy_s": sum(record.policy_seconds for record in result.episodes),
                }
            )
    finally:
        close_kept_envs()
    return records


def study(env_name: str, slots: int, jobs: int, episodes: int, **layout) -> dict:
    """A sweep's evaluation on this machine: `slots` job slots at once (the sweep runs
    `num_cpus / evaluate_cpus` jobs at a time; 2 on 2 cores), each running `jobs` evaluation jobs
    of the CPU study's reference agent (its 12 conditions, cpu-small networks, 8 envs kept between
    jobs; `layout` overrides the spec's `workers`, `num_envs`, `groups`) -- against `slots`
    processes stepping the same envs with random actions for the same number of steps.

    `ratio` compares the jobs after each slot's first (what every later job of a study costs:
    envs and compiled samplers are reused) with the env-only stepping; `ratio_with_startup`
    charges the first job's start-up (spawn, env build, compile) to these few jobs as well, where
    a study spreads it over every job of its task in that worker."""
    from qgf.benchmark import ScriptProcess
    from qgf.evaluation.envtiming import time_env_stepping

    began = time.perf_counter()
    slot_processes = [
        ScriptProcess("evaluation", "_study_slot", env_name, jobs, episodes, slot, layout)
        for slot in range(slots)
    ]
    reports = [process.result() for process in slot_processes]
    wall = time.perf_counter() - began
    warm = [report[1:] for report in reports]
    warm_steps = sum(job["env_steps"] for jobs_ in warm for job in jobs_)
    warm_wall = max(sum(job["wall_s"] for job in jobs_) for jobs_ in warm)
    all_steps = sum(job["env_steps"] for report in reports for job in report)
    num_envs = reports[0][0]["num_envs"]
    alone = time_env_stepping(env_name, all_steps, workers=slots, num_envs=slots * num_envs)
    stepping_per_step = alone["stepping_s"] / all_steps * slots  # wall per step of one env process
    return {
        "slots": slots,
        "jobs_per_slot": jobs,
        "episodes_per_condition": episodes,
        "layout": layout,
        "jobs": reports,
        "wall_s": round(wall, 3),
        "env_only": {key: round(value, 3) for key, value in alone.items()},
        "ratio": round(warm_wall / (stepping_per_step * warm_steps / slots), 3),
        "ratio_with_startup": round(wall / alone["wall_s"], 3),
        "policy_share": round(
            sum(job["policy_s"] for jobs_ in warm for job in jobs_)
            / sum(job["wall_s"] for jobs_ in warm for job in jobs_),
            3,
        ),
    }


def free_policy(env_name: str, conditions: int, episodes: int, workers: int, horizon: int) -> dict:
    from qgf.evaluation.rollout import rollout

    cpu_start = CpuClock.now()
    result = rollout(
        env_name, _ConstantPolicy(horizon, 5), list(range(conditions)), episodes, workers=workers
    )
    return {
        "wall_s": round(result.wall_clock_s, 3),
        "cpu_s": round(CpuClock.now() - cpu_start, 3),
        "stepping_s": round(result.wall_clock_s - result.startup_s, 3),
        "env_steps": result.env_steps,
    }


def run(quick: bool = True) -> dict:
    from qgf.policy import use_compilation_cache

    # As `qgf evaluate` does: compiled samplers persist on disk, so only the first evaluation of
    # these shapes on this machine compiles (QGF_COMPILATION_CACHE=off measures a cold start).
    cache = use_compilation_cache()
    workers = os.cpu_count() or 1
    weights = WEIGHTS[:3] if quick else WEIGHTS
    episodes = 2 if quick else 10
    agent = _random_agent(obs_dim=28, action_dim=5)
    # Alternate eval and env-only runs so that a change in machine load hits both alike.
    evaluated, baseline = [], []
    for _ in range(1 if quick else 2):
        evaluated.append(evaluation(ENV, weights, episodes, workers, agent))
        baseline.append(env_only(ENV, workers, evaluated[-1]["num_envs"], evaluated[-1]["env_steps"]))
    engine = free_policy(ENV, len(weights), episodes, workers, agent.config.horizon)
    # A sweep's evaluation: two job slots at once, several jobs each, the CPU study's conditions.
    sweep_share = study(ENV, slots=2, jobs=2 if quick else 3, episodes=2 if quick else 4)

    def total(runs: list[dict], key: str) -> float:
        return sum(r[key] for r in runs)

    return {
        "env": ENV,
        "quick": quick,
        "workers": workers,
        "conditions": len(weights),
        "episodes_per_condition": episodes,
        "policy": "random QGFAgent, cpu preset (4x256), qgf sampler, 10 Euler steps",
        "eval": evaluated,
        "env_only": baseline,
        "free_policy": engine,
        "ratio": round(total(evaluated, "wall_s") / total(baseline, "wall_s"), 3),
        "stepping_ratio": round(total(evaluated, "stepping_s") / total(baseline, "stepping_s"), 3),
        "cpu_ratio": round(total(evaluated, "cpu_s") / total(baseline, "cpu_s"), 3),
        "ratio_per_pair": [
            round(e["wall_s"] / b["wall_s"], 3) for e, b in zip(evaluated, baseline, strict=True)
        ],
        "free_policy_ratio": round(engine["wall_s"] / baseline[-1]["wall_s"], 3),
        "free_policy_cpu_ratio": round(engine["cpu_s"] / baseline[-1]["cpu_s"], 3),
        "target_ratio": 1.5,
        "study": sweep_share,
        "study_ratio": sweep_share["ratio"],
        "study_target_ratio": 1.3,
        "compilation_cache": None if cache is None else str(cache),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 weights x 2 episodes instead of 9 x 10")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = run(quick=args.quick)
    text = json.dumps(results, indent=2)
    print(text)
    print(f"eval / env-only wall-clock: {results['ratio']:.2f} (target <= {results['target_ratio']})")
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
