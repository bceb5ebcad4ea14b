"""What the analysis compares, and how: the frozen model (`PolicyAndCritic`), the settings of
`qgf.analysis.run.analyze` (`AnalysisSettings`), the methods of the comparison (BC, the requested
estimators, GradStep, BFN) and the paired summaries every figure reports.

Imports numpy, `qgf.errors` and the estimator table (`qgf.guidance.estimators`): no JAX, no other
analysis module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from qgf.errors import QGFError
from qgf.guidance.estimators import (
    ESTIMATOR_TABLE,
    GUIDED_ESTIMATORS,
    PAPER_ESTIMATORS,
    SamplerSpec,
    estimator,
)

Array = Any  # jax.Array (not imported here: this module stays light)

# The estimators the paper's Figs. 3, 4 and 17 compare (PAPER_ESTIMATORS, from the estimator table)
# are the default of `AnalysisSettings.estimators`.
# The middle of the paper's single-task weight grid {0.004, ..., 0.12} (App. J, Table 5).
DEFAULT_WEIGHT = 0.04
# GradStep's ascent step size alpha: the estimator table's default (App. J, Table 3: 0.01). Other
# estimators whose weight is not a gradient weight have theirs there too (CFGRL's tau_cfg = 3).
DEFAULT_GRADSTEP_STEP_SIZE = estimator("gradstep").default_weight
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

BC_LABEL = estimator("none").figure_label
GRADSTEP_LABEL = estimator("gradstep").figure_label
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

    def weight_for(self, name: str) -> float:
        """The weight of estimator `name`: an override, else GradStep's step size for gradstep,
        else the estimator's own default (the table's `default_weight`), else `weight`."""
        overrides = dict(self.weight_overrides)
        if name in overrides:
            return float(overrides[name])
        if name == "gradstep":
            return self.gradstep_step_size
        default = ESTIMATOR_TABLE.get(name).default_weight if name in ESTIMATOR_TABLE else None
        return self.weight if default is None else default


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
    for name in settings.estimators:
        spec = dataclasses.replace(base, estimator=name)
        methods.append(Method(name, spec, settings.weight_for(name)))
    gradstep = dataclasses.replace(base, estimator="gradstep")
    methods.append(Method(GRADSTEP_LABEL, gradstep, settings.weight_for("gradstep")))
    bfn = dataclasses.replace(base, estimator="none", best_of_n=settings.bfn_n)
    methods.append(Method(bfn_label(settings.bfn_n), bfn, 0.0))
    return methods


def summarize(values: np.ndarray) -> dict[str, Any]:
    """Mean, standard deviation and standard error of the mean of a 1-D sample."""
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "stderr": std / math.sqrt(max(values.size, 1))}


def summarize_rows(values: np.ndarray) -> dict[str, Any]:
    """`summarize` plus the values themselves (paired comparisons need them)."""
    return {**summarize(values), "per_observation": np.asarray(values, np.float64).tolist()}
