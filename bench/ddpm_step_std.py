"""A DDPM policy (dac, qsm-bc) sampled with each `ddpm_step_std`: how close its chunks come to the
data, and its success (docs/fidelity.md, "DAC and QSM-BC", reverse-step std).

    python bench/ddpm_step_std.py RUN [RUN ...] [--episodes 20] [--seed 1000] [--no-rollouts]

For every run (its latest checkpoint) and both settings (`beta`: sqrt(beta_i), the papers';
`posterior`: sqrt(beta~_i)): the mean distance of 4 x 512 sampled chunks, on validation
observations, to the nearest of 20,000 dataset chunks (and the dataset's own chunks' distance, the
floor), the mean distance between two samples of one observation, and success over --episodes
episodes on evaluation seed --seed. The run is not changed: the setting only replaces the loaded
config's sampler field.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def with_step_std(run, std: str):
    agent = run.agent.replace(config=dataclasses.replace(run.agent.config, ddpm_step_std=std))
    return dataclasses.replace(run, agent=agent, config=agent.config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--no-rollouts", action="store_true", help="distances only")
    args = parser.parse_args()
    import jax
    import numpy as np

    from qgf.analysis.distances import nearest_neighbour_distances
    from qgf.analysis.run import sample_run_data
    from qgf.checkpoint import load_run
    from qgf.errors import QGFError
    from qgf.evaluation.run import evaluate_run

    print("run | std | nn distance (data's own) | sample spread | success")
    for path in args.runs:
        loaded = load_run(path)
        if loaded.config.agent not in ("dac", "qsm-bc"):
            raise QGFError(f"{path} is a {loaded.config.agent} run: ddpm_step_std applies to dac and qsm-bc")
        data = sample_run_data(loaded, num_observations=512, nn_chunks=20000, seed=0)
        floor = nearest_neighbour_distances(data.observation_chunks, data.dataset_chunks).mean()
        for std in ("beta", "posterior"):
            run = with_step_std(loaded, std)
            sample = jax.jit(run.agent.policy_actions_from)
            keys = [jax.random.PRNGKey(r) for r in range(4)]
            draws = [np.asarray(sample(run.agent.params, data.observations, key)) for key in keys]
            near = nearest_neighbour_distances(np.concatenate(draws), data.dataset_chunks).mean()
            spread = np.linalg.norm(draws[0] - draws[1], axis=1).mean()
            success = "-"
            if not args.no_rollouts:
                result = evaluate_run(run, episodes=args.episodes, seed=args.seed, workers=0).results[0]
                success = f"{result.successes}/{result.episodes}"
            print(f"{path} | {std} | {near:.3f} ({floor:.3f}) | {spread:.3f} | {success}", flush=True)


if __name__ == "__main__":
    main()
