"""A finished sweep's evaluation time against the environments alone (issue 12's 1.3x target).

    python bench/study_env_only.py SWEEP_DIR [--group qgf]

Reads the sweep's evaluation results of one run group (default: the reference agent `qgf`): mean
env steps, wall-clock and start-up per evaluation job. Then two env-only processes (sweep jobs run
two at a time on 2 cores) step that many steps each with random actions on the same number of
envs, with `qgf.evaluation.envtiming.time_env_stepping`. Prints the ratio of the two wall-clocks. Run it on a
quiet machine: the sweep's own jobs ran under their own load, not this script's.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("sweep_dir")
    parser.add_argument("--group", default="qgf", help="agent label of the evaluation jobs (default qgf)")
    parser.add_argument("--parallel", type=int, default=2, help="jobs the sweep ran at a time (default 2)")
    args = parser.parse_args()
    from qgf.evaluation.envtiming import time_env_stepping

    paths = glob.glob(os.path.join(args.sweep_dir, "evals", "*", f"{args.group}-*", "*", "*", "results.json"))
    if not paths:
        raise SystemExit(f"no evaluation results of group {args.group!r} under {args.sweep_dir}/evals")
    jobs = [json.load(open(path)) for path in paths]
    steps = statistics.mean(job["env_steps"] for job in jobs)
    wall = statistics.mean(job["wall_clock_s"] for job in jobs)
    startup = statistics.mean(job["extra"].get("startup_s", 0.0) for job in jobs)
    num_envs = jobs[0]["num_envs"] or 8
    env = jobs[0]["env"]
    timing = time_env_stepping(
        env, int(args.parallel * steps), workers=args.parallel, num_envs=args.parallel * num_envs
    )
    print(
        json.dumps(
            {
                "jobs": len(jobs),
                "env": env,
                "mean_steps": steps,
                "mean_wall_s": wall,
                "mean_startup_s": startup,
                "env_only": timing,
                "ratio": wall / timing["wall_s"],
                "ratio_without_startup": (wall - startup) / timing["stepping_s"],
                "target": 1.3,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
