"""Diagnostics on a trained run: the QGF paper's Figs. 3, 4, 6 and 17.

For a frozen policy (velocity field) and critic, and a sample of dataset observations:

- **noise sensitivity** (Fig. 3, App. E): cos(G(s, a_t), G(s, a_t + eps)) for every estimator G,
  with a_t on the unguided (BC) denoising path at each flow step t and eps ~ N(0, sigma^2 I) for a
  few scales sigma;
- **Q of the final action** (Fig. 4, App. D) per estimator at one guidance weight each, with BC,
  GradStep and best-of-N (BFN) as references;
- **distances** (Fig. 17): of each final action to the BFN action for the same observation, and
  to its nearest neighbour among the dataset's action chunks;
- **test-time compute** (Fig. 6): dense-layer FLOPs per action (analytic formula, cross-checked by
  counting the traced program and by XLA's cost analysis) and measured milliseconds per action.

The samplers that need an add-on (`qgf.addons`: robustq, cfgrl, qgf-distill, qgf-jacobian-distill)
take part through `PolicyAndCritic.extras`; `analyze_run` adds every add-on the run has trained.

Everything takes any JAX callables (`PolicyAndCritic`), like `qgf.guidance`; `analyze_run` loads
a run directory and its dataset and writes JSON + PNG files. docs/analysis.md describes the
outputs, docs/fidelity.md ("Diagnostics") the choices made where the paper is silent.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from qgf.data.chunks import trajectory_ends
from qgf.errors import QGFError
from qgf.fileio import atomic_path
from qgf.guidance.estimators import EXTRA_ESTIMATORS, GUIDED_ESTIMATORS, SamplerSpec
from qgf.guidance.gradients import estimate_gradient
from qgf.guidance.sampler import sample_with_info
from qgf.progress import progress_bar

Array = jax.Array

# The estimators the paper's Figs. 3, 4 and 17 compare.
PAPER_ESTIMATORS: tuple[str, ...] = ("qgf", "qgf-jacobian", "qgf-chain", "bptt", "ood")
# The middle of the paper's single-task weight grid {0.004, ..., 0.12} (App. J, Table 5).
DEFAULT_WEIGHT = 0.04
# GradStep's ascent step size alpha (App. J, Table 3: 0.01 on every domain).
DEFAULT_GRADSTEP_STEP_SIZE = 0.01
# Estimators whose weight is not a gradient weight: CFGRL's tau_cfg (Table 3: 2-5; 3 on cube).
DEFAULT_ESTIMATOR_WEIGHTS: dict[str, float] = {"cfgrl": 3.0}
DEFAULT_BFN_N = 16
DEFAULT_NUM_OBSERVATIONS = 256
# Perturbation scales sigma of Fig. 3 (the paper does not state its eps); actions live in [-1, 1].
DEFAULT_NOISE_SCALES: tuple[float, ...] = (0.01, 0.03, 0.1)
# Dataset action chunks searched for nearest neighbours (a uniform subsample of the valid chunks).
DEFAULT_NN_CHUNKS = 50_000
# A dense layer costs 2 * in * out FLOPs per row forward. Backward to the *inputs* only (test-time
# guidance differentiates w.r.t. actions; the weights are constants) costs the same again. Training
# also needs weight gradients, which is where the usual "backward = 2 x forward" comes from.
BACKWARD_TO_INPUT_FACTOR = 1

BC_LABEL = "bc"
GRADSTEP_LABEL = "gradstep"
DATASET_LABEL = "dataset"


def bfn_label(n: int) -> str:
    return f"bfn-{n}"


# --------------------------------------------------------------------------------------------------
# What is analysed and how


@dataclasses.dataclass(frozen=True)
class PolicyAndCritic:
    """A frozen flow policy and critic, as `qgf.guidance` callables.

    Attributes:
        velocity_fn: ``(obs (B, D), a_t (B, d), t (B,)) -> (B, d)``.
        q_fn: ``(obs (B, D), a (B, d)) -> (B,)``, aggregated over the ensemble.
        action_dim: d, the flattened chunk size h * A.
        base_spec: sampler settings shared by every method (steps T, clip_hat, GradStep's L, ...);
            the analysis only swaps the estimator and best-of-N.
        extras: named callables of the add-on samplers (`qgf.guidance.EXTRA_CALLABLES`).
    """

    velocity_fn: Callable[[Any, Array, Array], Array]
    q_fn: Callable[[Any, Array], Array]
    action_dim: int
    base_spec: SamplerSpec = SamplerSpec()
    extras: Mapping[str, Callable[..., Array]] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass(frozen=True)
class AnalysisSettings:
    """Knobs of `analyze`. Defaults keep a CPU-preset run to a few minutes on 2 cores."""

    estimators: tuple[str, ...] = PAPER_ESTIMATORS
    weight: float = DEFAULT_WEIGHT
    weight_overrides: tuple[tuple[str, float], ...] = ()
    gradstep_step_size: float = DEFAULT_GRADSTEP_STEP_SIZE
    bfn_n: int = DEFAULT_BFN_N
    num_observations: int = DEFAULT_NUM_OBSERVATIONS
    noise_scales: tuple[float, ...] = DEFAULT_NOISE_SCALES
    nn_chunks: int = DEFAULT_NN_CHUNKS
    timing_repeats: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        # GradStep is always included as a baseline; accept it in the list without duplicating it.
        estimators = tuple(dict.fromkeys(e for e in self.estimators if e != "gradstep"))
        unknown = [e for e in estimators if e not in GUIDED_ESTIMATORS]
        if unknown:
            raise QGFError(
                f"unknown or non-guiding estimator(s) {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(GUIDED_ESTIMATORS)} (BC, GradStep and BFN are always included)"
            )
        if not estimators:
            raise QGFError("give at least one guided estimator, e.g. --estimators qgf")
        object.__setattr__(self, "estimators", estimators)
        for name, _ in self.weight_overrides:
            if name not in (*GUIDED_ESTIMATORS, "gradstep"):
                raise QGFError(f"weight given for unknown estimator {name!r}")
        if self.bfn_n < 2:
            raise QGFError(f"best-of-N needs N >= 2, got {self.bfn_n}")
        if self.num_observations < 2:
            raise QGFError(f"need at least 2 observations, got {self.num_observations}")
        if not self.noise_scales or any(not s > 0 for s in self.noise_scales):
            raise QGFError(f"noise scales must be positive, got {self.noise_scales}")
        if self.nn_chunks < 1 or self.timing_repeats < 1:
            raise QGFError("nn_chunks and timing_repeats must be >= 1")

    def weight_for(self, estimator: str) -> float:
        overrides = dict(self.weight_overrides)
        if estimator in overrides:
            return float(overrides[estimator])
        if estimator in DEFAULT_ESTIMATOR_WEIGHTS:
            return DEFAULT_ESTIMATOR_WEIGHTS[estimator]
        return self.gradstep_step_size if estimator == "gradstep" else self.weight


@dataclasses.dataclass(frozen=True)
class Method:
    """One sampler of the comparison: its table label, sampler spec and weight (alpha for GradStep)."""

    label: str
    spec: SamplerSpec
    weight: float


def comparison_methods(model: PolicyAndCritic, settings: AnalysisSettings) -> list[Method]:
    """BC, every requested estimator, GradStep and BFN(N), in that order."""
    base = dataclasses.replace(model.base_spec, best_of_n=1)
    methods = [Method(BC_LABEL, dataclasses.replace(base, estimator="none"), 0.0)]
    for estimator in settings.estimators:
        spec = dataclasses.replace(base, estimator=estimator)
        methods.append(Method(estimator, spec, settings.weight_for(estimator)))
    gradstep = dataclasses.replace(base, estimator="gradstep")
    methods.append(Method(GRADSTEP_LABEL, gradstep, settings.weight_for("gradstep")))
    bfn = dataclasses.replace(base, estimator="none", best_of_n=settings.bfn_n)
    methods.append(Method(bfn_label(settings.bfn_n), bfn, 0.0))
    return methods


# --------------------------------------------------------------------------------------------------
# Fig. 3: noise sensitivity


def cosine_similarity(x: Array, y: Array) -> Array:
    """Row-wise cos(x_i, y_i): (B,). A zero row gives 0 (no direction to agree with)."""
    dot = jnp.sum(x * y, axis=-1)
    norms = jnp.linalg.norm(x, axis=-1) * jnp.linalg.norm(y, axis=-1)
    return jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1.0), 0.0)


GradientFn = Callable[[Any, Array, Array, Array], Array]


def estimator_gradient_fn(model: PolicyAndCritic, estimator: str) -> GradientFn:
    """``(obs, a_t, t, key) -> g`` for a named estimator of `qgf.guidance`."""
    spec = dataclasses.replace(model.base_spec, estimator=estimator, best_of_n=1)

    def gradient(obs, a_t, t, key):
        return estimate_gradient(model.velocity_fn, model.q_fn, obs, a_t, t, spec, key, model.extras)

    return gradient


def bc_denoising_path(model: PolicyAndCritic, observations: Any, noise: Array) -> Array:
    """(T + 1, B, d): a_0 = noise, ..., a_1 of the unguided sampler (before the final clip)."""
    spec = dataclasses.replace(model.base_spec, estimator="none", best_of_n=1)
    _, info = sample_with_info(
        model.velocity_fn,
        None,
        observations,
        jax.random.key(0),  # unused: the noise is given and BC draws nothing else
        0.0,
        spec,
        model.action_dim,
        noise=noise,
        trajectory=True,
    )
    return info["trajectory"]


def noise_sensitivity(
    gradient_fns: Mapping[str, GradientFn],
    path: Array,
    observations: Any,
    noise_scales: Sequence[float],
    key: Array,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Fig. 3: cos(G(s, a_t), G(s, a_t + eps)) along a denoising path.

    Args:
        gradient_fns: ``name -> (obs, a_t, t, key) -> g``.
        path: (T + 1, B, d) denoising path; a_t = path[k] at t = k / T for k < T.
        noise_scales: sigma values; eps ~ N(0, sigma^2 I), one draw per (t, sigma, row).
        key: randomness of eps and of stochastic estimators. The clean and the perturbed gradient
            of a row share the estimator's key, so eps is the only difference between them.

    Returns a JSON-ready dict: ``flow_times``, ``noise_scales`` and per estimator ``mean`` / ``std``
    (over observations; [scale][t]), ``mean_over_t`` [scale] and ``overall`` (mean over t and scales).
    """
    steps = path.shape[0] - 1
    batch = path.shape[1]
    scales = jnp.asarray(noise_scales, path.dtype)
    perturbation_key, estimator_key = jax.random.split(key)
    flow_times = [k / steps for k in range(steps)]
    results: dict[str, Any] = {}
    for name, gradient_fn in gradient_fns.items():

        @jax.jit
        def cosines_at(obs, a_t, t, eps, key, gradient_fn=gradient_fn):
            clean = gradient_fn(obs, a_t, t, key)
            perturbed = jax.vmap(lambda e: gradient_fn(obs, a_t + e, t, key))(eps)
            return jax.vmap(lambda p: cosine_similarity(clean, p))(perturbed)  # (S, B)

        per_step = []
        for k in range(steps):
            step_key = jax.random.fold_in(perturbation_key, k)
            eps = scales[:, None, None] * jax.random.normal(step_key, (len(noise_scales), *path.shape[1:]))
            t = jnp.full((batch,), flow_times[k], path.dtype)
            per_step.append(
                np.asarray(cosines_at(observations, path[k], t, eps, jax.random.fold_in(estimator_key, k)))
            )
            progress(f"noise sensitivity: {name}")
        cosines = np.stack(per_step, axis=1)  # (S, T, B)
        results[name] = {
            "mean": cosines.mean(axis=2).tolist(),
            "std": cosines.std(axis=2).tolist(),
            "mean_over_t": cosines.mean(axis=(1, 2)).tolist(),
            "overall": float(cosines.mean()),
            "overall_per_observation": cosines.mean(axis=(0, 1)).tolist(),
        }
    return {"flow_times": flow_times, "noise_scales": [float(s) for s in noise_scales], "estimators": results}


# --------------------------------------------------------------------------------------------------
# Fig. 4: final actions and their Q


def method_sampler(model: PolicyAndCritic, method: Method) -> Callable[[Any, Array, Array, Array], Array]:
    """A jitted ``(obs, noise, key, weight (B,)) -> actions`` for `method`.

    `noise` is a_0: (B, d), or (B, N, d) for best-of-N. BC is given no critic, so its cost is the
    actor's alone.
    """
    q_fn = model.q_fn if method.spec.uses_critic else None

    @jax.jit
    def run(obs, noise, key, weight):
        actions, _ = sample_with_info(
            model.velocity_fn,
            q_fn,
            obs,
            key,
            weight,
            method.spec,
            model.action_dim,
            noise=noise,
            extras=model.extras,
        )
        return actions

    return run


def method_noise(method: Method, noise: Array) -> Array:
    """Common random numbers: every single-sample method starts from noise[:, 0]; BFN(N) uses the
    first N draws, so its candidates include the BC sample and Q(BFN) >= Q(BC) row by row."""
    n = method.spec.best_of_n
    return noise[:, 0] if n == 1 else noise[:, :n]


def summarize(values: np.ndarray) -> dict[str, Any]:
    """Mean, standard deviation and standard error of the mean of a 1-D sample."""
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "stderr": std / math.sqrt(max(values.size, 1))}


def _summarize_rows(values: np.ndarray) -> dict[str, Any]:
    """`summarize` plus the values themselves (paired comparisons need them)."""
    return {**summarize(values), "per_observation": np.asarray(values, np.float64).tolist()}


def q_value_report(
    q_values: Mapping[str, np.ndarray], reference: str, baseline: str, weights: Mapping[str, float]
) -> dict[str, Any]:
    """Fig. 4 numbers: per method the mean Q of its final actions, and its paired differences to
    `reference` (BFN) and `baseline` (BC). Every method acts on the same observations from the same
    noise, so the paired standard error is the honest one for comparing two methods."""
    methods = {}
    for label, values in q_values.items():
        values = np.asarray(values, np.float64)
        entry = _summarize_rows(values)
        entry["minus_reference"] = summarize(values - np.asarray(q_values[reference], np.float64))
        entry["minus_baseline"] = summarize(values - np.asarray(q_values[baseline], np.float64))
        if label in weights:
            entry["weight"] = weights[label]
        methods[label] = entry
    return {"reference": reference, "baseline": baseline, "methods": methods}


# --------------------------------------------------------------------------------------------------
# Fig. 17: distances to the BFN action and to the dataset


def dataset_chunk_starts(terminals: np.ndarray, horizon: int) -> np.ndarray:
    """Rows i whose chunk a_i .. a_{i+h-1} is made of h transitions of one trajectory.

    `terminals[e]` marks a trajectory's last stored row e, whose action has no successor and
    starts no transition (`qgf.data.load`), so the chunk is valid iff no row in i .. i + h - 1 is
    terminal: the same chunks the training sampler marks fully valid (`qgf.data.chunks`).
    """
    end = trajectory_ends(terminals)
    return np.flatnonzero(np.arange(end.shape[0]) + horizon <= end)


def action_chunks(actions: np.ndarray, starts: np.ndarray, horizon: int) -> np.ndarray:
    """(len(starts), h * A): the chunks beginning at `starts`, flattened row-major in time."""
    actions = np.asarray(actions, np.float32)
    index = np.asarray(starts)[:, None] + np.arange(horizon)[None, :]
    return actions[index].reshape(len(starts), horizon * actions.shape[1])


@jax.jit
def _nearest_in_block(queries: Array, block: Array, is_real: Array) -> tuple[Array, Array]:
    """Squared distance to, and index of, each query's nearest real row of `block`."""
    squared = (
        jnp.sum(queries**2, axis=1)[:, None] + jnp.sum(block**2, axis=1)[None, :] - 2.0 * queries @ block.T
    )
    squared = jnp.where(is_real[None, :], squared, jnp.inf)
    return jnp.min(squared, axis=1), jnp.argmin(squared, axis=1)


def nearest_neighbour_distances(queries: Array, references: Array, block_size: int = 8192) -> np.ndarray:
    """(Q,) Euclidean distance of each query row to its nearest reference row.

    References are scanned in blocks (so memory is Q x block_size) with the expansion
    |x|^2 + |r|^2 - 2 x.r; the winner's distance is then recomputed exactly as |x - r|, which removes
    the expansion's cancellation error for near neighbours.
    """
    queries = jnp.asarray(queries, jnp.float32)
    references = jnp.asarray(references, jnp.float32)
    if references.shape[0] == 0:
        raise QGFError("no reference rows to search for nearest neighbours")
    best_squared = np.full(queries.shape[0], np.inf)
    best_index = np.zeros(queries.shape[0], np.int64)
    count = references.shape[0]
    width = min(block_size, count)  # every block padded to one shape: one compilation
    for start in range(0, count, width):
        block = references[start : start + width]
        is_real = jnp.arange(width) < block.shape[0]
        block = jnp.pad(block, ((0, width - block.shape[0]), (0, 0)))
        squared, index = (np.asarray(x) for x in _nearest_in_block(queries, block, is_real))
        better = squared < best_squared
        best_squared = np.where(better, squared, best_squared)
        best_index = np.where(better, index + start, best_index)
    nearest = np.asarray(references)[best_index]
    return np.linalg.norm(np.asarray(queries, np.float64) - nearest, axis=1)


def distance_report(
    actions: Mapping[str, np.ndarray],
    reference: str,
    dataset_chunks: np.ndarray,
    no_nearest_neighbour: Sequence[str] = (),
) -> dict[str, Any]:
    """Fig. 17 numbers: per method the distance of its final action to the `reference` (BFN)
    action of the same observation, and the nearest-neighbour distance to `dataset_chunks`.
    Methods in `no_nearest_neighbour` get no NN distance (e.g. dataset actions that are
    themselves in the reference set)."""
    ref = np.asarray(actions[reference], np.float64)
    methods = {}
    for label, values in actions.items():
        values = np.asarray(values, np.float64)
        entry = {"to_reference": _summarize_rows(np.linalg.norm(values - ref, axis=1))}
        if label not in no_nearest_neighbour:
            entry["nearest_dataset"] = _summarize_rows(nearest_neighbour_distances(values, dataset_chunks))
        methods[label] = entry
    return {"reference": reference, "dataset_chunks": int(dataset_chunks.shape[0]), "methods": methods}


# --------------------------------------------------------------------------------------------------
# Fig. 6: compute


def _dot_general_flops(eqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    rhs_free = [size for axis, size in enumerate(rhs) if axis not in (*rhs_contract, *rhs_batch)]
    return 2 * math.prod(lhs) * math.prod(rhs_free)


def _live_equations(jaxpr) -> list:
    """The equations whose results reach an output (a dead-code pass: jaxprs are not pruned)."""
    live = {v for v in jaxpr.outvars if isinstance(v, jax_core.Var)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars):
            kept.append(eqn)
            live.update(v for v in eqn.invars if isinstance(v, jax_core.Var))
    return kept[::-1]


def _jaxpr_dense_flops(jaxpr) -> int:
    total = 0
    for eqn in _live_equations(jaxpr):
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_general_flops(eqn)
        elif name == "cond":
            # Static count: the most expensive branch (an upper bound on what runs).
            total += max(_jaxpr_dense_flops(branch.jaxpr) for branch in eqn.params["branches"])
        elif name == "scan":
            total += eqn.params["length"] * _jaxpr_dense_flops(eqn.params["jaxpr"].jaxpr)
        else:  # jit, custom_jvp/vjp calls, while (trip count unknown: counted once), ...
            for sub in jax_core.jaxprs_in_params(eqn.params):
                total += _jaxpr_dense_flops(sub)
    return total


def dense_flops(fn: Callable[..., Any], *args: Any) -> int:
    """Matrix-product FLOPs (2 per multiply-add) of ``fn(*args)``, counted on its traced program.

    Loops with a static trip count (`lax.scan`, `fori_loop` with int bounds) are multiplied out;
    `lax.cond` counts its most expensive branch; dead code is skipped. For an MLP this is
    sum over layers of 2 * in * out per row.
    """
    return _jaxpr_dense_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def xla_flops(stage) -> float | None:
    """XLA's FLOP estimate (all ops) for a `jax.stages.Lowered` or `Compiled` program, or None if the
    backend offers none. XLA counts the body of a loop once, whatever its trip count."""
    try:
        cost = stage.cost_analysis()
    except Exception:  # backends without cost analysis raise various errors
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def analytic_flops(
    spec: SamplerSpec,
    actor_flops: float,
    critic_flops: float,
    action_dim: int,
    backward: float = 1.0,
    extra_flops: Mapping[str, float] | None = None,
) -> float | None:
    """Dense FLOPs per action of a sampler, from F_v (one actor forward per row) and F_Q (one
    critic-ensemble forward per row). A backward pass to the inputs costs ``backward`` x forward.
    Add-on samplers also need the forward cost of their network per row, ``extra_flops[name]``
    (F_R robust_q, F_o optimal_velocity, F_d denoiser); without it they have no formula (None).

    Per denoising step k = 0 .. T - 1 (the velocity at a_t is shared by g and the Euler step):
    BC F_v; qgf and ood F_v + (1 + b) F_Q; qgf-jacobian and qgf-regularized (1 + b)(F_v + F_Q);
    qgf-jacobian-smooth (1 + K(1 + b)) F_v + (1 + b) F_Q; qgf-jacobian-ortho (2 + d) F_v + (1 + b) F_Q
    (d forward-mode passes; the SVD is not a dense layer and is not counted); qgf-chain
    (T - k) F_v + (1 + b) F_Q; bptt (1 + b)(T - k) F_v + (1 + b) F_Q. GradStep: T F_v + L (1 + b) F_Q.
    Add-ons: robustq F_v + (1 + b) F_R; cfgrl F_v + F_o; qgf-distill F_v + F_d + (1 + b) F_Q;
    qgf-jacobian-distill F_v + (1 + b) F_d + (1 + b) F_Q.
    Best-of-N: N x (the sampler + one critic forward to rank).
    """
    steps, b = spec.steps, backward
    critic_gradient = (1 + b) * critic_flops
    chain_velocity = steps * (steps + 1) / 2 * actor_flops
    per_sampler = {
        "none": steps * actor_flops,
        "qgf": steps * (actor_flops + critic_gradient),
        "ood": steps * (actor_flops + critic_gradient),
        "qgf-jacobian": steps * ((1 + b) * actor_flops + critic_gradient),
        "qgf-regularized": steps * ((1 + b) * actor_flops + critic_gradient),
        "qgf-jacobian-smooth": steps * ((1 + spec.smooth_k * (1 + b)) * actor_flops + critic_gradient),
        "qgf-jacobian-ortho": steps * ((2 + action_dim) * actor_flops + critic_gradient),
        "qgf-chain": chain_velocity + steps * critic_gradient,
        "bptt": (1 + b) * chain_velocity + steps * critic_gradient,
        "gradstep": steps * actor_flops + spec.gradstep_steps * critic_gradient,
    }
    extra = dict(extra_flops or {})
    if "robust_q" in extra:
        per_sampler["robustq"] = steps * (actor_flops + (1 + b) * extra["robust_q"])
    if "optimal_velocity" in extra:
        per_sampler["cfgrl"] = steps * (actor_flops + extra["optimal_velocity"])
    if "denoiser" in extra:
        per_sampler["qgf-distill"] = steps * (actor_flops + extra["denoiser"] + critic_gradient)
        per_sampler["qgf-jacobian-distill"] = steps * (
            actor_flops + (1 + b) * extra["denoiser"] + critic_gradient
        )
    if spec.estimator not in per_sampler:
        return None
    if spec.best_of_n == 1:
        return per_sampler[spec.estimator]
    return spec.best_of_n * (per_sampler[spec.estimator] + critic_flops)


def median_ms(fn: Callable[..., Any], args: Sequence[Any], repeats: int) -> float:
    """Median wall-clock milliseconds of ``fn(*args)`` over `repeats` calls, after one warm-up."""
    jax.block_until_ready(fn(*args))  # compile / warm up outside the timing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def network_costs(model: PolicyAndCritic, observation_row: Any) -> dict[str, Any]:
    """F_v, F_Q and the XLA cross-check of the single passes, for one row (batch 1)."""
    a = jnp.zeros((1, model.action_dim), jnp.float32)
    t = jnp.full((1,), 0.5, jnp.float32)

    def velocity(obs, a, t):
        return model.velocity_fn(obs, a, t)

    def critic(obs, a):
        return model.q_fn(obs, a)

    def critic_gradient(obs, a):
        return jax.grad(lambda a: jnp.sum(model.q_fn(obs, a)))(a)

    def velocity_pullback(obs, a, t):
        out, pullback = jax.vjp(lambda a: model.velocity_fn(obs, a, t), a)
        return pullback(out)[0]

    passes = {
        "actor_forward": (velocity, (observation_row, a, t)),
        "critic_forward": (critic, (observation_row, a)),
        "critic_forward_backward": (critic_gradient, (observation_row, a)),
        "actor_forward_backward": (velocity_pullback, (observation_row, a, t)),
    }
    for name, extra in model.extras.items():  # add-on networks, all (obs, a_t, t) -> ...
        passes[f"{name}_forward"] = (extra, (observation_row, a, t))
    report: dict[str, Any] = {}
    for name, (fn, args) in passes.items():
        report[name] = {
            "dense_flops": dense_flops(fn, *args),
            "xla_flops": xla_flops(jax.jit(fn).lower(*args)),  # lowered: no compile needed
        }
    # backward / forward, the factor b of `analytic_flops`, as both counts see it
    report["backward_factor"] = {
        network: {
            count: _ratio(
                report[f"{network}_forward_backward"][count], report[f"{network}_forward"][count], 1.0
            )
            for count in ("dense_flops", "xla_flops")
        }
        for network in ("actor", "critic")
    }
    return report


def _ratio(numerator: float | None, denominator: float | None, minus: float = 0.0) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator - minus


def compute_report(
    model: PolicyAndCritic,
    methods: Sequence[Method],
    samplers: Mapping[str, Callable],
    observations: Any,
    noise: Array,
    key: Array,
    repeats: int,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Fig. 6 numbers per method: FLOPs per action (analytic; dense count of the traced sampler;
    XLA's estimate) and median milliseconds per action at batch 1 and at the full batch."""
    batch = noise.shape[0]
    first_row = jax.tree.map(lambda x: x[:1], observations)
    networks = network_costs(model, first_row)
    actor_flops = networks["actor_forward"]["dense_flops"]
    critic_flops = networks["critic_forward"]["dense_flops"]
    extra_flops = {name: networks[f"{name}_forward"]["dense_flops"] for name in model.extras}
    methods_report = {}
    for method in methods:
        noise_batch = method_noise(method, noise)
        weight_batch = jnp.full((batch,), method.weight, jnp.float32)
        noise_one, weight_one = noise_batch[:1], weight_batch[:1]
        sampler = samplers[method.label]
        compiled_one = sampler.lower(first_row, noise_one, key, weight_one).compile()
        traced_flops = dense_flops(sampler, first_row, noise_one, key, weight_one)
        ms_one = median_ms(compiled_one, (first_row, noise_one, key, weight_one), repeats)
        ms_batch = median_ms(sampler, (observations, noise_batch, key, weight_batch), max(2, repeats // 4))
        methods_report[method.label] = {
            "sampler": method.spec.label,
            "weight": method.weight,
            "analytic_flops": analytic_flops(
                method.spec,
                actor_flops,
                critic_flops,
                model.action_dim,
                BACKWARD_TO_INPUT_FACTOR,
                extra_flops,
            ),
            "traced_dense_flops": traced_flops,
            "xla_flops_loop_bodies_once": xla_flops(compiled_one),
            "ms_per_action_batch_1": ms_one,
            f"ms_per_action_batch_{batch}": ms_batch / batch,
        }
        progress(f"compute: {method.label}")
    return {
        "flow_steps": model.base_spec.steps,
        "gradstep_steps": model.base_spec.gradstep_steps,
        "backward_to_input_factor": BACKWARD_TO_INPUT_FACTOR,
        "batch": batch,
        "notes": (
            "analytic_flops: the formula of qgf.analysis.analytic_flops with F_v, F_Q = dense FLOPs of one "
            "actor / critic-ensemble forward pass per row (2 * in * out per layer). traced_dense_flops: the "
            "same dense count on the traced sampler, loops multiplied out, lax.cond counted at its most "
            "expensive branch (an upper bound for qgf-chain and bptt, which skip finished steps). "
            "xla_flops_loop_bodies_once: XLA's cost analysis of the compiled batch-1 sampler, all ops, but "
            "each loop body counted once whatever its trip count (XLA's convention). networks: single "
            "passes, where XLA's count is complete."
        ),
        "networks": networks,
        "methods": methods_report,
    }


# --------------------------------------------------------------------------------------------------
# The paper's orderings


def _ordering(rows: Mapping[str, Sequence[float]], best: str, others: Sequence[str]) -> dict[str, Any]:
    """Does `best` have the largest mean? Rows are paired (same observations, noise and eps), so
    each comparison also gets the paired difference and whether it exceeds 2 standard errors."""
    present = [o for o in others if o in rows]
    if best not in rows or not present:
        return {"holds": None, "reason": f"needs {best!r} and at least one of {', '.join(others)}"}
    top = np.asarray(rows[best], np.float64)
    against = {}
    for other in present:
        difference = summarize(top - np.asarray(rows[other], np.float64))
        against[other] = {"value": float(np.mean(rows[other])), "difference": difference}
    differences = [entry["difference"] for entry in against.values()]
    return {
        "holds": all(d["mean"] > 0 for d in differences),
        "holds_by_2_stderr": all(d["mean"] > 2 * d["stderr"] for d in differences),
        "value": float(top.mean()),
        "against": against,
    }


def paper_orderings(
    noise: Mapping[str, Any] | None, q_values: Mapping[str, Any], distances: Mapping[str, Any], bfn: str
) -> dict[str, Any]:
    """Whether the paper's qualitative claims hold on this run, from the reports' per-observation
    values: ``holds`` compares means, ``holds_by_2_stderr`` asks every paired difference to exceed
    twice its standard error."""
    rivals = ("qgf-jacobian", "qgf-chain", "bptt")
    result: dict[str, Any] = {}
    if noise is not None:
        cosines = {name: e["overall_per_observation"] for name, e in noise["estimators"].items()}
        result["fig3_qgf_least_noise_sensitive"] = _ordering(cosines, "qgf", rivals)
    q_rows = {label: m["per_observation"] for label, m in q_values["methods"].items()}
    # Figs. 4 and 17 compare the estimators of the run's own flow and critic (not the add-ons)
    guided = [
        label for label in q_rows if label in GUIDED_ESTIMATORS and label not in EXTRA_ESTIMATORS + ("ood",)
    ]
    result["fig4_qgf_beats_jacobian_chain_bptt"] = _ordering(q_rows, "qgf", rivals)
    result["fig4_ood_highest_q"] = _ordering(q_rows, "ood", guided)
    result["fig4_ood_above_bfn"] = _ordering(q_rows, "ood", [bfn])
    if "qgf" in q_rows:
        result["fig4_qgf_minus_bfn"] = q_values["methods"]["qgf"]["minus_reference"]
    methods = distances["methods"]
    to_bfn = {label: m["to_reference"]["per_observation"] for label, m in methods.items()}
    nearest = {
        label: m["nearest_dataset"]["per_observation"]
        for label, m in methods.items()
        if "nearest_dataset" in m
    }
    result["fig17_ood_farthest_from_bfn"] = _ordering(to_bfn, "ood", guided)
    result["fig17_ood_farthest_from_dataset"] = _ordering(nearest, "ood", guided)
    # Fig. 15 compares success rates; its Q-side counterpart: distilled denoisers below QGF, and
    # QGF-Distill close to QGF-chain (whose ODE(a_t) it learns). Only when the run has the add-on.
    distilled = [label for label in ("qgf-distill", "qgf-jacobian-distill") if label in q_rows]
    if distilled:
        result["fig15_qgf_beats_distill"] = _ordering(q_rows, "qgf", distilled)
        if "qgf-chain" in q_rows and "qgf-distill" in q_rows:
            result["fig15_distill_minus_chain"] = summarize(
                np.asarray(q_rows["qgf-distill"], np.float64) - np.asarray(q_rows["qgf-chain"], np.float64)
            )
    return result


# --------------------------------------------------------------------------------------------------
# Writing


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
    with atomic_path(path) as temporary:
        Path(temporary).write_text(json.dumps(_json_ready(data), indent=2, allow_nan=False) + "\n")


def _save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)


_COLORS = {
    BC_LABEL: "#7f7f7f",
    "qgf": "#1f77b4",
    "qgf-jacobian": "#ff7f0e",
    "qgf-chain": "#2ca02c",
    "bptt": "#d62728",
    "ood": "#9467bd",
    "qgf-jacobian-smooth": "#8c564b",
    "qgf-regularized": "#e377c2",
    "qgf-jacobian-ortho": "#bcbd22",
    GRADSTEP_LABEL: "#17becf",
    DATASET_LABEL: "#555555",
    "robustq": "#aec7e8",
    "cfgrl": "#ffbb78",
    "qgf-distill": "#98df8a",
    "qgf-jacobian-distill": "#ff9896",
}


def _color(label: str) -> str:
    return _COLORS.get(label, "#000000")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_noise_sensitivity(report: Mapping[str, Any], path: Path, title: str) -> None:
    plt = _pyplot()
    scales = report["noise_scales"]
    figure, axes = plt.subplots(1, len(scales), figsize=(4.2 * len(scales), 3.6), sharey=True, squeeze=False)
    for column, scale in enumerate(scales):
        ax = axes[0, column]
        for name, entry in report["estimators"].items():
            mean = np.asarray(entry["mean"][column])
            ax.plot(
                report["flow_times"],
                mean,
                marker="o",
                ms=3,
                color=_color(name),
                label=name,
                lw=2.4 if name == "qgf" else 1.4,
            )
        ax.set_title(f"ε ~ N(0, {scale:g}² I)")
        ax.set_xlabel("flow time t of a_t (BC path)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("cos(G(s, a_t), G(s, a_t + ε))")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.suptitle(f"Noise sensitivity of gradient estimators (QGF Fig. 3) — {title}", fontsize=10)
    _save_figure(figure, path)


def _dot_plot(ax, labels, means, errors, reference=None, reference_label=None):
    positions = np.arange(len(labels))
    for x, label, mean, error in zip(positions, labels, means, errors, strict=True):
        ax.errorbar(x, mean, yerr=error, fmt="o", ms=7, capsize=4, color=_color(label))
    if reference is not None:
        ax.axhline(reference, ls="--", color="black", lw=1, label=reference_label)
        ax.legend(fontsize=8)
    ax.set_xticks(positions, labels, rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)


def plot_q_values(report: Mapping[str, Any], path: Path, title: str) -> None:
    plt = _pyplot()
    methods = report["methods"]
    labels = list(methods)
    reference, baseline = report["reference"], report["baseline"]
    figure, axes = plt.subplots(1, 2, figsize=(2 * (0.8 * len(labels) + 2.5), 3.8))
    _dot_plot(
        axes[0],
        labels,
        [methods[m]["mean"] for m in labels],
        [methods[m]["stderr"] for m in labels],
        methods[reference]["mean"],
        f"{reference} (reference)",
    )
    axes[0].set_ylabel("mean Q(s, a) of the final action (± s.e.)")
    axes[0].set_title("Q of the denoised action")
    others = [m for m in labels if m != baseline]
    _dot_plot(
        axes[1],
        others,
        [methods[m]["minus_baseline"]["mean"] for m in others],
        [methods[m]["minus_baseline"]["stderr"] for m in others],
        0.0,
        f"{baseline}",
    )
    axes[1].set_ylabel(f"Q − Q({baseline}), paired (± s.e.)")
    axes[1].set_title(f"gain over {baseline} on the same observations and noise")
    figure.suptitle(f"Q of denoised actions (QGF Fig. 4) — {title}", fontsize=10)
    _save_figure(figure, path)


def plot_distances(report: Mapping[str, Any], path: Path, title: str) -> None:
    plt = _pyplot()
    methods = report["methods"]
    figure, axes = plt.subplots(1, 2, figsize=(2 * (0.8 * len(methods) + 2.5), 3.8))
    labels = [m for m in methods if m != report["reference"]]
    _dot_plot(
        axes[0],
        labels,
        [methods[m]["to_reference"]["mean"] for m in labels],
        [methods[m]["to_reference"]["stderr"] for m in labels],
    )
    axes[0].set_ylabel(f"‖a − a_{report['reference']}‖ (± s.e.)")
    axes[0].set_title(f"distance to the {report['reference']} action")
    nn_labels = [m for m in methods if "nearest_dataset" in methods[m]]
    _dot_plot(
        axes[1],
        nn_labels,
        [methods[m]["nearest_dataset"]["mean"] for m in nn_labels],
        [methods[m]["nearest_dataset"]["stderr"] for m in nn_labels],
    )
    axes[1].set_ylabel("nearest-neighbour distance (± s.e.)")
    axes[1].set_title(f"to {report['dataset_chunks']} dataset action chunks")
    figure.suptitle(f"Are the actions in distribution? (QGF Fig. 17) — {title}", fontsize=10)
    _save_figure(figure, path)


def plot_compute(report: Mapping[str, Any], path: Path, title: str) -> None:
    plt = _pyplot()
    methods = report["methods"]
    labels = list(methods)
    positions = np.arange(len(labels))
    batch = report["batch"]
    figure, axes = plt.subplots(1, 2, figsize=(2 * (0.8 * len(labels) + 2.5), 3.8))
    analytic = [
        np.nan if methods[m]["analytic_flops"] is None else methods[m]["analytic_flops"] for m in labels
    ]
    traced = [methods[m]["traced_dense_flops"] for m in labels]
    axes[0].bar(
        positions, analytic, color=[_color(m) for m in labels], alpha=0.85, label="analytic (formula)"
    )
    axes[0].plot(positions, traced, "k_", ms=18, mew=2, label="dense count of traced sampler")
    if any(value > 0 for value in analytic):  # nan compares False
        axes[0].set_yscale("log")
    axes[0].set_ylabel("dense-layer FLOPs per action")
    axes[0].legend(fontsize=8)
    width = 0.4
    axes[1].bar(
        positions - width / 2,
        [methods[m]["ms_per_action_batch_1"] for m in labels],
        width,
        color=[_color(m) for m in labels],
        label="batch 1",
    )
    axes[1].bar(
        positions + width / 2,
        [methods[m][f"ms_per_action_batch_{batch}"] for m in labels],
        width,
        color=[_color(m) for m in labels],
        alpha=0.45,
        hatch="//",
        label=f"batch {batch} (per action)",
    )
    axes[1].set_yscale("log")
    axes[1].set_ylabel("ms per action (median)")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(positions, labels, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3, which="both")
    figure.suptitle(f"Test-time compute (QGF Fig. 6) — {title}", fontsize=10)
    _save_figure(figure, path)


# --------------------------------------------------------------------------------------------------
# The whole analysis


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
    from qgf.addons import SAMPLER_ADDONS, load_addons
    from qgf.addons.base import list_addons
    from qgf.checkpoint import load_run

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
    extras: dict[str, Callable] = {}
    for loaded in load_addons(run, settings.estimators).values():
        extras.update(loaded.extras(agent))
    model = PolicyAndCritic(
        agent.behavior_velocity_fn,
        agent.q_fn,
        agent.chunk_dim,
        SamplerSpec(estimator="none", steps=config.flow_steps),
        extras,
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
    train_starts = dataset_chunk_starts(train.terminals, config.horizon)
    source_starts = (
        train_starts if source is train else dataset_chunk_starts(source.terminals, config.horizon)
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
