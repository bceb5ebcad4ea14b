"""Seeds trained as one program, and Ray's own overhead per sweep job.

`run(quick) -> dict` for `qgf bench`; `python bench/seeds.py [--quick]` prints it.

1. Seeds in one program (issue 12): S = 4 seeds of one config stacked and trained by the vmapped
   many-updates loop that `qgf train --seeds` uses (`qgf.training.fit._update_seeds`), against one seed
   trained by `update_many` as 4 sequential runs would be. Ratio = combined steps/s of the stacked
   program ÷ combined steps/s of sequential runs = 4 · t(one seed, n steps) / t(4 seeds, n steps).
   Targets: >= 1.5 at `cpu-small` (per-step overhead weighs most there), >= 1.0 at `cpu`.
   Also reported, without a target: the same `cpu-small` ratio in a process pinned to one core.
   1.0 there means the step is compute-bound (nothing per step left to amortise), so on 2 cores
   the stacked program can only win by using the second core better than one seed already does
   (docs/performance.md).
2. Ray overhead per job: the wall-clock a sweep job pays to Ray itself — a task round trip on a
   fresh worker process (worker start-up; what a job pays when Ray starts a worker for it) and on a
   warm one (scheduling only) — next to `ray.init` (paid once per sweep). Reported as a fraction of
   a CPU-study training job: 20k steps at the `cpu` preset, at the steps/s measured here (target
   < 5%).

Data: the synthetic cube-single-shaped dataset of bench/training.py.
"""

from __future__ import annotations

import json
import os
import time

import jax

from qgf.agents import agent_class
from qgf.benchmark import ScriptProcess, load_script, script_main
from qgf.config import load_preset
from qgf.data.chunks import sample_chunks, to_device
from qgf.training.fit import _update_seeds, stack_agents

SEEDS = 4
STUDY_STEPS = 20_000  # a CPU-study training job (src/qgf/experiments/specs/cpu-study.toml)
TARGETS = {"cpu-small": 1.5, "cpu": 1.0}
RAY_TARGET = 0.05


def seeds_case(preset: str, steps: int, device_data, obs_dim: int, action_dim: int) -> dict:
    config = load_preset(preset, {}, warn=False)
    cls = agent_class(config.agent)
    single = [cls.create(0, obs_dim, action_dim, config)]
    stacked = [stack_agents([cls.create(seed, obs_dim, action_dim, config) for seed in range(SEEDS)])]
    count = jax.numpy.asarray(steps, jax.numpy.int32)

    def one():
        single[0], metrics = single[0].update_many(device_data, steps, donate=True)
        return metrics

    def many():
        stacked[0], metrics = _update_seeds(stacked[0], device_data, count, sample_chunks)
        return metrics

    one()  # compile both
    many()
    best_seconds = load_script("agents").best_seconds
    t_one, t_many = best_seconds(one, 2), best_seconds(many, 2)
    return {
        "preset": preset,
        "steps_per_call": steps,
        "one_seed_steps_per_s": steps / t_one,
        "stacked_combined_steps_per_s": SEEDS * steps / t_many,
        "ratio": SEEDS * t_one / t_many,
    }


def one_core_case(steps: int) -> dict:
    """`seeds_case` at cpu-small in a fresh process pinned to one core."""
    return ScriptProcess("seeds", "_cpu_small_case", steps, affinity={min(os.sched_getaffinity(0))}).result()


def _cpu_small_case(steps: int) -> dict:
    dataset = load_script("training").synthetic_dataset()
    obs_dim, action_dim = dataset.observations.shape[1], dataset.actions.shape[1]
    return seeds_case("cpu-small", steps, to_device(dataset), obs_dim, action_dim)


def _noop() -> float:
    return time.perf_counter()


def ray_overhead() -> dict:
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        init_seconds = time.perf_counter() - start
        fresh = ray.remote(max_calls=1)(_noop)  # a new worker process for every call
        warm = ray.remote(_noop)
        ray.get(warm.remote())  # starts the reused worker

        def round_trip(task) -> float:
            began = time.perf_counter()
            ray.get(task.remote())
            return time.perf_counter() - began

        fresh_seconds = min(round_trip(fresh) for _ in range(3))
        warm_seconds = min(round_trip(warm) for _ in range(10))
    finally:
        ray.shutdown()
    return {"init_s": init_seconds, "fresh_worker_task_s": fresh_seconds, "warm_task_s": warm_seconds}


def run(quick: bool) -> dict:
    dataset = load_script("training").synthetic_dataset()
    device_data = to_device(dataset)
    obs_dim, action_dim = dataset.observations.shape[1], dataset.actions.shape[1]
    results: dict = {"seeds": SEEDS, "quick": quick, "cases": {}}
    for preset, steps in (("cpu-small", 100 if quick else 400), ("cpu", 20 if quick else 100)):
        case = seeds_case(preset, steps, device_data, obs_dim, action_dim)
        results["cases"][preset] = case
        print(f"{preset:>10}: {json.dumps(case)}", flush=True)
    if hasattr(os, "sched_setaffinity"):  # Linux
        case = one_core_case(100 if quick else 400)
        results["cases"]["cpu-small, one core"] = case
        print(f"  one core: {json.dumps(case)}", flush=True)
    ray_numbers = ray_overhead()
    job_seconds = STUDY_STEPS / results["cases"]["cpu"]["one_seed_steps_per_s"]
    ray_numbers["cpu_study_training_job_s"] = job_seconds
    results["ray"] = ray_numbers
    print(f"{'ray':>10}: {json.dumps(ray_numbers)}", flush=True)
    results["ratios"] = {
        **{
            f"{SEEDS} seeds as one program÷{SEEDS} sequential runs ({preset})": results["cases"][preset][
                "ratio"
            ]
            for preset in TARGETS
        },
        "Ray overhead per job (fresh worker)÷CPU-study training job": ray_numbers["fresh_worker_task_s"]
        / job_seconds,
    }
    if "cpu-small, one core" in results["cases"]:
        name = f"{SEEDS} seeds as one program÷{SEEDS} sequential runs (cpu-small, one core)"
        results["ratios"][name] = results["cases"]["cpu-small, one core"]["ratio"]
    results["targets"] = {
        **{
            f"{SEEDS} seeds as one program÷{SEEDS} sequential runs ({preset})": target
            for preset, target in TARGETS.items()
        },
        "Ray overhead per job (fresh worker)÷CPU-study training job": RAY_TARGET,
    }
    results["at_most"] = {name: name.startswith("Ray") for name in results["ratios"]}
    return results


if __name__ == "__main__":
    script_main(run, __doc__)
