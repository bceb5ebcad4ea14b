"""An offline (rollout-free) choice of the guidance weight, reported next to the protocol's
rollout choice with its regret.

The QGF paper chooses w with rollouts on tasks 2 and 4 (App. J) and gives no offline rule. Ours
uses only the trained run and its dataset's observations, through the quantities `qgf analyze`
measures (Figs. 4 and 17):

- gain(w): the critic's mean paired gain Q(s, a_w) - Q(s, a_0) of the method's final action at
  weight w over the same method at weight 0 (the unguided BC flow for QGF), same noise a_0;
- dist(w): the mean Euclidean distance of a_w to its nearest dataset action chunk.

**Rule** (`offline_weight_choice`): a weight is *admissible* when dist(w) <= c * dist(0), i.e.
its actions stay about as close to the data as the unguided flow's own samples (default c =
`DEFAULT_TOLERANCE`); among admissible weights take the one with the largest gain; equal gains go
to the smaller weight (nearer the data, and the protocol's own tie rule). When no weight is
admissible (possible when c < 1 or the grid lacks w = 0) the weight with the smallest distance
is taken (ties: the smaller), flagged `fallback`. The critic alone would always prefer the
largest weight (gain grows with w until the critic's extrapolation errors dominate); the distance
bound is the offline stand-in for "the critic is still trustworthy here".

Per (method, domain) the tables of every tuning run (tuning tasks x seeds) of the rollout-chosen
grid point are averaged and the rule is applied once, like the protocol's choice. The offline
choice picks the weight only: training-time hyperparameters stay those chosen with rollouts,
since critics of different runs are not comparable. docs/fidelity.md records the design.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qgf.errors import QGFError
from qgf.experiments.protocol import chosen_sampler

# c: admissible when dist(w) <= c * dist(0). Measured on the demo run (docs/fidelity.md): the
# distance ratio was <= 1.02 up to w = 0.1 (rollout success 0.8) and 1.25 at w = 0.3 (0.2).
DEFAULT_TOLERANCE = 1.1
DEFAULT_OBSERVATIONS = 128  # dataset observations acted on per run
DEFAULT_NN_CHUNKS = 5000  # training chunks searched for nearest neighbours per run
RULE = (
    "offline: among weights w with dist(w) <= c * dist(0) (nearest-dataset-chunk distance of the "
    "final actions; c = {tolerance:g}) the largest critic gain Q(a_w) - Q(a_0); ties: smaller w; "
    "none admissible: the smallest distance (fallback)"
)


def offline_weight_choice(
    weights: Sequence[float],
    gains: Sequence[float],
    distances: Sequence[float],
    reference_distance: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """The offline rule on one (weight, gain, distance) table; see the module docstring.

    Returns {'weight', 'index', 'gain', 'distance', 'bound', 'admissible' (per weight), 'fallback'}.
    """
    weights = [float(w) for w in weights]
    gains = [float(g) for g in gains]
    distances = [float(d) for d in distances]
    if not weights:
        raise QGFError("offline weight choice needs at least one weight")
    if not len(weights) == len(gains) == len(distances):
        raise QGFError(
            f"offline weight choice: {len(weights)} weights, {len(gains)} gains, {len(distances)} distances"
        )
    if len(set(weights)) != len(weights):
        raise QGFError(f"offline weight choice: duplicate weights {weights}")
    if not all(math.isfinite(x) for x in (*weights, *gains, *distances, reference_distance)):
        raise QGFError("offline weight choice: weights, gains and distances must be finite")
    if any(d < 0 for d in (*distances, reference_distance)):
        raise QGFError("offline weight choice: distances must be >= 0")
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise QGFError(f"offline weight choice: tolerance must be > 0, got {tolerance}")
    bound = tolerance * float(reference_distance)
    admissible = [d <= bound for d in distances]
    order = sorted(range(len(weights)), key=lambda i: weights[i])  # ties go to the smaller weight
    if any(admissible):
        index = max((i for i in order if admissible[i]), key=lambda i: gains[i])
    else:
        index = min(order, key=lambda i: distances[i])
    return {
        "weight": weights[index],
        "index": index,
        "gain": gains[index],
        "distance": distances[index],
        "bound": bound,
        "admissible": admissible,
        "fallback": not any(admissible),
    }


def average_tables(tables: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The mean of per-run tables over the same weights (tuning tasks x seeds)."""
    if not tables:
        raise QGFError("no weight tables to average")
    weights = tables[0]["weights"]
    if any(table["weights"] != weights for table in tables):
        raise QGFError("weight tables of one method must share their weights")
    return {
        "weights": list(weights),
        "gain": np.mean([t["gain"] for t in tables], axis=0).tolist(),
        "distance": np.mean([t["distance"] for t in tables], axis=0).tolist(),
        "reference_distance": float(np.mean([t["reference_distance"] for t in tables])),
        "runs": len(tables),
    }


def compare_choices(
    protocol: dict[str, Any],
    tables: dict[tuple[str, str], dict[str, Any]],
    final_success: dict[tuple[str, str, float], float],
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[dict[str, Any]]:
    """One row per protocol choice that has an averaged weight table (keyed (method, domain)):
    rollout and offline weights, their tuning success (from the protocol's evidence), the regret
    tune_success(rollout) - tune_success(offline) and, when the final stage evaluated both weights
    (`final_success[(method, domain, weight)]`, mean over tasks and seeds), the final regret."""
    rows = []
    for choice in protocol["choices"]:
        key = (choice["method"], choice["domain"])
        if key not in tables:
            continue
        table = tables[key]
        picked = offline_weight_choice(
            table["weights"], table["gain"], table["distance"], table["reference_distance"], tolerance
        )
        tune = {e["weight"]: e["success"] for e in chosen_sampler(choice["evidence"], choice)}
        if picked["weight"] not in tune:
            raise QGFError(
                f"offline choice {picked['weight']:g} for {key[0]} on {key[1]} has no tuning evaluation"
            )
        rollout_weight = float(choice["weight"])
        final_rollout = final_success.get((*key, rollout_weight))
        final_offline = final_success.get((*key, picked["weight"]))
        if picked["weight"] == rollout_weight:
            final_regret, final_note = 0.0, "same weight"
        elif final_rollout is not None and final_offline is not None:
            final_regret, final_note = final_rollout - final_offline, ""
        else:
            final_regret, final_note = None, "final stage evaluated only the rollout choice"
        rows.append(
            {
                "method": key[0],
                "domain": key[1],
                "point": choice["point"],
                "rollout_weight": rollout_weight,
                "offline_weight": picked["weight"],
                "fallback": picked["fallback"],
                "tune_success_rollout": tune[rollout_weight],
                "tune_success_offline": tune[picked["weight"]],
                "tune_regret": tune[rollout_weight] - tune[picked["weight"]],
                "final_regret": final_regret,
                "final_note": final_note,
                "offline_gain": picked["gain"],
                "offline_distance": picked["distance"],
                "distance_bound": picked["bound"],
                "runs": table.get("runs"),
            }
        )
    return rows


# ------------------------------------------------------------------ tables from trained runs


def weight_table(policy, data, spec, weights: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """gain(w) and dist(w) of one run (`policy`, a `qgf.policy.RunPolicy`, with `data` from
    `qgf.analysis.run.sample_run_data`) for sampler `spec` at each weight; dist(0) is
    `reference_distance`. Every weight starts from the same noise, so gains are paired. The
    sampler compiles once per spec and shapes: runs of one configuration share it."""
    import jax
    import jax.numpy as jnp

    from qgf.analysis.distances import nearest_neighbour_distances

    agent = policy.agent
    observations = data.observations
    batch = observations.shape[0]
    noise_key, sample_key = jax.random.split(jax.random.key(seed))
    shape = (batch, agent.chunk_dim) if spec.best_of_n == 1 else (batch, spec.best_of_n, agent.chunk_dim)
    noise = jax.random.normal(noise_key, shape)
    reference = None
    gains, distances = [], []
    dataset = jnp.asarray(data.dataset_chunks, jnp.float32)
    for weight in [0.0, *weights]:
        actions, q = policy.scored_actions(
            observations, noise, sample_key, jnp.full((batch,), weight, jnp.float32), spec
        )
        q = np.asarray(q, np.float64)
        distance = float(nearest_neighbour_distances(actions, dataset).mean())
        if reference is None:
            reference = (q, distance)
            continue
        gains.append(float(np.mean(q - reference[0])))
        distances.append(distance)
    return {
        "weights": [float(w) for w in weights],
        "gain": gains,
        "distance": distances,
        "reference_distance": reference[1],
    }


def sweep_tables(
    sweep_dir: str | Path,
    protocol: dict[str, Any],
    *,
    observations: int = DEFAULT_OBSERVATIONS,
    nn_chunks: int = DEFAULT_NN_CHUNKS,
    seed: int = 0,
) -> tuple[dict[tuple[str, str], dict[str, Any]], list[str]]:
    """Averaged weight tables per (method, domain) for every protocol choice with a weight grid,
    from the tuning runs of its chosen grid point (found through the tune-stage results), and notes
    on choices left out. Runs are loaded once each."""
    from qgf.analysis.run import sample_run_data
    from qgf.checkpoint import load_run
    from qgf.envs import parse_name
    from qgf.evaluation.results import read_results
    from qgf.guidance import SamplerSpec
    from qgf.policy import RunPolicy

    runs: dict[tuple[str, str], list[str]] = {}  # (group, domain) -> tuning run directories
    for path in sorted(Path(sweep_dir).glob("evals/tune/*/*/*/results.json")):
        results = read_results(path)
        sweep = results.extra.get("sweep") or {}
        if sweep.get("stage") == "tune" and results.run:
            key = (sweep["group"], parse_name(sweep["task"]).domain)
            runs.setdefault(key, []).append(results.run)
    loaded: dict[str, Any] = {}
    tables: dict[tuple[str, str], dict[str, Any]] = {}
    notes = []
    for choice in protocol["choices"]:
        method, domain = choice["method"], choice["domain"]
        weights = sorted({e["weight"] for e in chosen_sampler(choice["evidence"], choice)})
        spec = SamplerSpec(**choice["spec"])
        if len(weights) < 2 or not spec.uses_weight or not spec.uses_critic:
            continue
        if spec.needs:
            notes.append(f"{method} on {domain}: its sampler needs an add-on ({', '.join(spec.needs)})")
            continue
        directories = runs.get((choice["group"], domain), [])
        if not directories:
            notes.append(f"{method} on {domain}: no tuning run found")
            continue
        try:
            per_run = []
            for directory in directories:
                if directory not in loaded:
                    run = load_run(directory)
                    data = sample_run_data(run, num_observations=observations, nn_chunks=nn_chunks, seed=seed)
                    loaded[directory] = (RunPolicy.for_run(run, []), data)
                policy, data = loaded[directory]
                per_run.append(weight_table(policy, data, spec, weights, seed))
            tables[(method, domain)] = average_tables(per_run)
        except QGFError as exc:
            notes.append(f"{method} on {domain}: {exc}")
    return tables, notes
