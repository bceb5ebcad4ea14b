"""The whole analysis: `analyze` (all four diagnostics on any `PolicyAndCritic`, written as JSON + PNG)
and `analyze_run` (a trained run's latest checkpoint on its own dataset, `sample_run_data`).

docs/analysis.md describes the outputs, docs/fidelity.md ("Diagnostics") the choices made where the
paper is silent. Imports every other `qgf.analysis` module; run loading, data and add-ons
(`qgf.checkpoint`, `qgf.data`, `qgf.addons`) inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qgf.analysis.claims import paper_orderings
from qgf.analysis.compute import compute_report
from qgf.analysis.distances import action_chunks, distance_report
from qgf.analysis.methods import (
    BC_LABEL,
    DATASET_LABEL,
    GRADSTEP_LABEL,
    AnalysisSettings,
    PolicyAndCritic,
    bfn_label,
    comparison_methods,
)
from qgf.analysis.noise import bc_denoising_path, estimator_gradient_fn, noise_sensitivity
from qgf.analysis.plots import plot_compute, plot_distances, plot_noise_sensitivity, plot_q_values
from qgf.analysis.qvalues import method_noise, method_sampler, q_value_report
from qgf.data.chunks import complete_chunk_starts
from qgf.errors import QGFError
from qgf.fileio import atomic_write_json
from qgf.guidance.estimators import SamplerSpec
from qgf.progress import progress_bar

Array = jax.Array


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON, written atomically; numpy scalars as numbers, NaN and inf as null."""
    atomic_write_json(path, _json_ready(data), allow_nan=False)


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self._bar = progress_bar(enabled, total, unit="step", desc="analyze")

    def __call__(self, description: str) -> None:
        self._bar.set_description(description, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def analyze(
    model: PolicyAndCritic,
    observations: Any,
    dataset_chunks: np.ndarray,
    settings: AnalysisSettings,
    out_dir: str | os.PathLike,
    *,
    observation_chunks: np.ndarray | None = None,
    observation_chunks_in_reference: bool = False,
    context: Mapping[str, Any] | None = None,
    title: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Run all four diagnostics and write them to `out_dir`; returns the analysis.json summary.

    Args:
        observations: (B, D) observations to act on (B = settings.num_observations, or fewer).
        dataset_chunks: (M, d) dataset action chunks for nearest-neighbour distances.
        observation_chunks: optional (B, d) dataset actions taken at `observations`; reported as
            the ``dataset`` row (its Q, its distance to BFN and, unless
            `observation_chunks_in_reference`, its nearest-neighbour distance).
        context: extra facts recorded in analysis.json (run path, env, ...).
    """
    started = time.perf_counter()
    out = Path(out_dir)
    batch = jax.tree.leaves(observations)[0].shape[0]
    methods = comparison_methods(model, settings)
    steps = model.base_spec.steps
    total = len(settings.estimators) * steps + len(methods) * 2 + 1
    bar = _Progress(total, progress)
    noise_key, path_key, sample_key = jax.random.split(jax.random.key(settings.seed), 3)
    try:
        # Fig. 3
        path = bc_denoising_path(model, observations, jax.random.normal(path_key, (batch, model.action_dim)))
        gradient_fns = {name: estimator_gradient_fn(model, name) for name in settings.estimators}
        noise_report = noise_sensitivity(
            gradient_fns, path, observations, settings.noise_scales, noise_key, bar
        )

        # Fig. 4: common random numbers across methods (see `method_noise`)
        noise = jax.random.normal(sample_key, (batch, settings.bfn_n, model.action_dim))
        samplers = {m.label: method_sampler(model, m) for m in methods}
        actions: dict[str, np.ndarray] = {}
        for method in methods:
            weights = jnp.full((batch,), method.weight, jnp.float32)
            actions[method.label] = np.asarray(
                samplers[method.label](observations, method_noise(method, noise), sample_key, weights)
            )
            bar(f"final actions: {method.label}")
        if observation_chunks is not None:
            actions[DATASET_LABEL] = np.asarray(observation_chunks, np.float32)
        q_fn = jax.jit(model.q_fn)
        q_values = {label: np.asarray(q_fn(observations, jnp.asarray(a))) for label, a in actions.items()}
        weights = {m.label: m.weight for m in methods if m.spec.estimator != "none"}
        bfn = bfn_label(settings.bfn_n)
        q_report = q_value_report(q_values, bfn, BC_LABEL, weights)

        # Fig. 17
        skip_nn = (DATASET_LABEL,) if observation_chunks_in_reference else ()
        distances = distance_report(actions, bfn, np.asarray(dataset_chunks, np.float32), skip_nn)
        bar("nearest neighbours")

        # Fig. 6
        compute_methods = [
            m
            for m in methods
            if m.label in (BC_LABEL, GRADSTEP_LABEL, bfn) or m.spec.estimator in settings.estimators
        ]
        compute = compute_report(
            model, compute_methods, samplers, observations, noise, sample_key, settings.timing_repeats, bar
        )
    finally:
        bar.close()

    title = title or "analysis"
    write_json(out / "noise_sensitivity.json", noise_report)
    plot_noise_sensitivity(noise_report, out / "noise_sensitivity.png", title)
    write_json(out / "q_values.json", q_report)
    plot_q_values(q_report, out / "q_values.png", title)
    write_json(out / "distances.json", distances)
    plot_distances(distances, out / "distances.png", title)
    write_json(out / "compute.json", compute)
    plot_compute(compute, out / "compute.png", title)

    flops = {label: m["analytic_flops"] for label, m in compute["methods"].items()}
    summary = {
        **dict(context or {}),
        "settings": dataclasses.asdict(settings),
        "num_observations": batch,
        "flow_steps": steps,
        "action_dim": model.action_dim,
        "orderings": paper_orderings(noise_report, q_report, distances, bfn),
        "noise_sensitivity_overall": {n: e["overall"] for n, e in noise_report["estimators"].items()},
        "mean_q": {label: m["mean"] for label, m in q_report["methods"].items()},
        "distance_to_bfn": {label: m["to_reference"]["mean"] for label, m in distances["methods"].items()},
        "nearest_dataset_distance": {
            label: m["nearest_dataset"]["mean"]
            for label, m in distances["methods"].items()
            if "nearest_dataset" in m
        },
        "flops_per_action": flops,
        "ms_per_action_batch_1": {
            label: m["ms_per_action_batch_1"] for label, m in compute["methods"].items()
        },
        "files": sorted(
            f"{stem}.{ext}"
            for stem in ("noise_sensitivity", "q_values", "distances", "compute")
            for ext in ("json", "png")
        ),
        "wall_clock_s": time.perf_counter() - started,
    }
    write_json(out / "analysis.json", summary)
    return summary


# --------------------------------------------------------------------------------------------------
# Runs


def analyze_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    settings: AnalysisSettings | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    add_trained_addons: bool = True,
) -> dict[str, Any]:
    """`analyze` a trained run (its latest checkpoint) on its own dataset; writes to `out_dir`
    (default RUN/analysis) and returns the analysis.json summary.

    With `add_trained_addons`, the samplers of every add-on trained on the run (`qgf addon train`)
    join `settings.estimators`; an estimator whose add-on is missing is a one-line error naming
    the command that trains it.

    Observations are a seeded sample of `settings.num_observations` rows of the validation split
    (the training split when there is none), taken where a full action chunk follows, so that the
    dataset's own chunk can be reported beside the methods. Nearest neighbours are searched among
    `settings.nn_chunks` chunks drawn uniformly from the training split. `data_dir` overrides the
    dataset folder recorded in the run.
    """
    from qgf.addons import SAMPLER_ADDONS
    from qgf.addons.base import list_addons
    from qgf.checkpoint import load_run
    from qgf.policy import RunPolicy

    settings = settings or AnalysisSettings()
    run = load_run(run_dir)
    config, agent = run.config, run.agent
    if add_trained_addons:  # every sampler of every add-on the run has trained, next to the rest
        trained = {
            entry["name"]
            for entry in list_addons(run.path)
            if entry["step"] is not None and entry["base"].get("step") == run.step
        }
        extra = [s for s, name in SAMPLER_ADDONS.items() if name in trained and s not in settings.estimators]
        settings = dataclasses.replace(settings, estimators=(*settings.estimators, *extra))
    policy = RunPolicy.for_run(run, settings.estimators)  # checked, with the add-ons they need
    model = PolicyAndCritic(
        agent.behavior_velocity_fn,
        agent.q_fn,
        agent.chunk_dim,
        SamplerSpec(estimator="none", steps=config.flow_steps),
        policy.extras(),
    )
    data = sample_run_data(
        run,
        num_observations=settings.num_observations,
        nn_chunks=settings.nn_chunks,
        seed=settings.seed,
        data_dir=data_dir,
    )
    out = Path(out_dir) if out_dir is not None else Path(run.path) / "analysis"
    env = run.meta.get("env") or data.facts["name"]
    context = {
        "run": str(Path(run.path).resolve()),
        "step": run.step,
        "env": env,
        "dataset": data.facts,
        "guidance_critic": config.guidance_critic,
        "discount": config.discount,
    }
    return analyze(
        model,
        data.observations,
        data.dataset_chunks,
        settings,
        out,
        observation_chunks=data.observation_chunks,
        observation_chunks_in_reference=data.observations_in_reference,
        context=context,
        title=f"{env}, step {run.step}",
        progress=progress,
    )


@dataclasses.dataclass(frozen=True)
class RunData:
    """Dataset rows a diagnostic acts on (`sample_run_data`)."""

    observations: Array  # (B, D) float32 observations followed by a complete action chunk
    observation_chunks: np.ndarray  # (B, d) the dataset's own chunks at those rows
    dataset_chunks: np.ndarray  # (M, d) training-split chunks for nearest neighbours
    observations_in_reference: bool  # observations come from the training split
    facts: dict[str, Any]  # what analysis.json records under "dataset"


def sample_run_data(
    run: Any,
    *,
    num_observations: int,
    nn_chunks: int,
    seed: int,
    data_dir: str | os.PathLike | None = None,
) -> RunData:
    """A seeded sample of a loaded run's dataset (`qgf.checkpoint.load_run`): `num_observations`
    rows of the validation split (the training split when there is none) where a full action chunk
    follows, and `nn_chunks` chunks drawn uniformly from the training split. `data_dir` overrides
    the dataset folder recorded in the run."""
    from qgf.data import load_dataset

    config = run.config
    recorded = run.meta.get("dataset") or {}
    name = recorded.get("name")
    if not name:
        raise QGFError(f"run {run.path} records no dataset name in meta.json; cannot find its data")
    if data_dir is None:
        if not recorded.get("path"):
            raise QGFError(f"run {run.path} records no dataset path; pass the data directory (--data)")
        data_dir = os.path.dirname(recorded["path"])
    options = {"sparse": config.sparse_reward, "action_clip_eps": config.action_clip_eps}
    train = load_dataset(name, data_dir, split="train", **options)
    try:
        source = load_dataset(name, data_dir, split="val", **options)
    except QGFError:
        source = train

    rng = np.random.default_rng(seed)
    train_starts = complete_chunk_starts(train.terminals, config.horizon)
    source_starts = (
        train_starts if source is train else complete_chunk_starts(source.terminals, config.horizon)
    )
    if source_starts.size < 2 or train_starts.size < 1:
        raise QGFError(f"dataset {name} has too few complete action chunks of length {config.horizon}")
    rows = np.sort(rng.choice(source_starts, min(num_observations, source_starts.size), replace=False))
    reference_rows = np.sort(rng.choice(train_starts, min(nn_chunks, train_starts.size), replace=False))
    facts = {
        "name": name,
        "data_dir": str(data_dir),
        "observations_from": source.split,
        "observation_rows": int(rows.size),
        "nearest_neighbour_chunks": int(reference_rows.size),
        "valid_train_chunks": int(train_starts.size),
        "train_fingerprint_matches_run": recorded.get("fingerprint") in (None, train.fingerprint),
    }
    return RunData(
        observations=jnp.asarray(source.observations[rows], jnp.float32),
        observation_chunks=action_chunks(source.actions, rows, config.horizon),
        dataset_chunks=action_chunks(train.actions, reference_rows, config.horizon),
        observations_in_reference=source is train,
        facts=facts,
    )
