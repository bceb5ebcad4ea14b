"""The estimator table: ONE record per test-time estimator, and `SamplerSpec`.

Every place that needs to know something about an estimator reads its `Estimator` record here:
the sampler loop (`function`, `guided`), `SamplerSpec` (`uses_critic`, `needs`), the add-ons
(`addon`: which add-on trains the network it needs), the analysis (`flops`: its analytic FLOP
formula, `color`, `figure_label`, `default_weight`) and the CLI help texts (`summary`,
`weight_name`, `PAPER_ESTIMATORS`).

This module is light on purpose: it imports only the standard library, `qgf.errors` and
`qgf.registry`, so `qgf --help` can read the table without loading JAX. A record names its JAX
function lazily ('module:attribute', loaded by `Estimator.load`); the functions live in
`qgf.guidance.gradients`, the loop that calls them in `qgf.guidance.sampler`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from qgf.errors import QGFError
from qgf.registry import Registry, unknown_name_error

# Named extra callables that some estimators need (`Estimator.needs`), with their contracts.
# `qgf.addons` trains them against a frozen run; any model with the same signature works.
EXTRA_CALLABLES: dict[str, str] = {
    "robust_q": "Q(s, a_t, t) -> (B,): a critic trained on noisy actions a_t (RobustQ, QGF Eq. 20)",
    "optimal_velocity": "f_{o=1}(s, a_t, t) -> (B, d): the optimality-conditioned flow (CFGRL, QGF App. I)",
    "denoiser": "v_d(s, a_t, t) -> (B, d): the distilled estimate of ODE(a_t) (QGF App. C)",
}


@dataclasses.dataclass(frozen=True)
class Costs:
    """What an analytic FLOP formula reads (`Estimator.flops`).

    `actor` F_v and `critic` F_Q: dense FLOPs of one actor / critic-ensemble forward pass per row;
    `backward` b: a backward pass to the inputs costs b x its forward; `extra`: forward FLOPs per
    row of the add-on networks by `EXTRA_CALLABLES` name (F_R robust_q, F_o optimal_velocity,
    F_d denoiser); the rest are the sampler's sizes (T, d, K of qgf-jacobian-smooth, GradStep's L).
    """

    steps: int
    actor: float
    critic: float
    backward: float
    action_dim: int
    smooth_k: int
    gradstep_steps: int
    extra: Mapping[str, float]

    @property
    def critic_gradient(self) -> float:
        """(1 + b) F_Q: one critic forward and backward pass."""
        return (1 + self.backward) * self.critic

    @property
    def chain_velocity(self) -> float:
        """sum_k (T - k) F_v: the actor passes of the remaining-ODE estimators over a whole sampler."""
        return self.steps * (self.steps + 1) / 2 * self.actor


@dataclasses.dataclass(frozen=True)
class Estimator:
    """One record of the table.

    `function`: 'module:attribute' of ``(velocity_fn, q_fn, obs, a_t, t, spec, key, extras) -> (g, v)``;
    `flops`: dense FLOPs per action of the whole (N = 1) sampler from `Costs`;
    `color`: its colour in the analysis figures; `figure_label`: its name in the analysis tables and
    figures ('bc' for none); `summary`: one line for tables and help texts;
    `guided`: adds w * g at every denoising step (not BC, not GradStep's after-the-fact ascent);
    `clean_action`: g is taken at an estimate of the clean action, where `clip_hat` applies;
    `uses_critic`: evaluates `q_fn` (with N = 1; best-of-N always ranks with it);
    `needs`: names of `EXTRA_CALLABLES` it takes from ``extras``; `addon`: the `qgf.addons` name that
    trains them on a run; `weight_name`: what the weight means when it is not the guidance weight
    w = 1/beta; `default_weight`: the analysis' default for that weight, where it has its own."""

    name: str
    summary: str
    function: str
    flops: Callable[[Costs], float]
    color: str
    figure_label: str = ""
    guided: bool = True
    clean_action: bool = True
    uses_critic: bool = True
    needs: tuple[str, ...] = ()
    addon: str | None = None
    weight_name: str = "guidance weight"
    default_weight: float | None = None

    def __post_init__(self) -> None:
        if not self.figure_label:
            object.__setattr__(self, "figure_label", self.name)
        if bool(self.needs) != (self.addon is not None):
            raise ValueError(f"estimator {self.name!r}: an extra callable comes with its add-on")

    def load(self) -> Callable[..., Any]:
        """The estimator function (imports its module on first use)."""
        module, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(module), attribute)


_GRADIENTS = "qgf.guidance.gradients"

# The one table of test-time estimators, in the order of tables and help texts.
ESTIMATOR_TABLE: Registry = Registry(
    "estimator",
    {
        record.name: record
        for record in (
            Estimator(
                "none",
                "BC: the unguided flow (g = 0)",
                f"{_GRADIENTS}:estimate_none",
                lambda c: c.steps * c.actor,
                "#7f7f7f",
                figure_label="bc",
                guided=False,
                clean_action=False,
                uses_critic=False,
            ),
            Estimator(
                "qgf",
                "QGF: grad Q at the one-Euler-step estimate of a_1, Jacobian ~ I (Eq. 9)",
                f"{_GRADIENTS}:estimate_qgf",
                lambda c: c.steps * (c.actor + c.critic_gradient),
                "#1f77b4",
            ),
            Estimator(
                "qgf-jacobian",
                "QGF-Jacobian: J^T grad Q at the one-step estimate (one VJP)",
                f"{_GRADIENTS}:estimate_qgf_jacobian",
                lambda c: c.steps * ((1 + c.backward) * c.actor + c.critic_gradient),
                "#ff7f0e",
            ),
            Estimator(
                "qgf-chain",
                "grad Q at the full unguided Euler solution from a_t, Jacobian ~ I",
                f"{_GRADIENTS}:estimate_qgf_chain",
                lambda c: c.chain_velocity + c.steps * c.critic_gradient,
                "#2ca02c",
            ),
            Estimator(
                "qgf-jacobian-smooth",
                "Jacobian averaged over K Gaussian perturbations of a_t",
                f"{_GRADIENTS}:estimate_qgf_jacobian_smooth",
                lambda c: c.steps * ((1 + c.smooth_k * (1 + c.backward)) * c.actor + c.critic_gradient),
                "#8c564b",
            ),
            Estimator(
                "qgf-regularized",
                "(I + eps J)^T grad Q at the one-step estimate (Eq. 10)",
                f"{_GRADIENTS}:estimate_qgf_regularized",
                lambda c: c.steps * ((1 + c.backward) * c.actor + c.critic_gradient),
                "#e377c2",
            ),
            Estimator(
                "qgf-jacobian-ortho",
                "J replaced by the orthogonal factor U V^T of its SVD",
                f"{_GRADIENTS}:estimate_qgf_jacobian_ortho",
                # d forward-mode passes; the SVD is not a dense layer and is not counted
                lambda c: c.steps * ((2 + c.action_dim) * c.actor + c.critic_gradient),
                "#bcbd22",
            ),
            Estimator(
                "ood",
                "QFQL: grad Q at the noisy a_t itself",
                f"{_GRADIENTS}:estimate_at_noisy_action",
                lambda c: c.steps * (c.actor + c.critic_gradient),
                "#9467bd",
                clean_action=False,
            ),
            Estimator(
                "bptt",
                "grad through the remaining Euler steps (adjoint)",
                f"{_GRADIENTS}:estimate_bptt",
                lambda c: (1 + c.backward) * c.chain_velocity + c.steps * c.critic_gradient,
                "#d62728",
            ),
            Estimator(
                "gradstep",
                "GradStep: BC sample, then L steps a += alpha grad Q(a)",
                # GradStep's direction grad_a Q(s, a) at the given a; the sampler ascends it after BC
                f"{_GRADIENTS}:estimate_at_noisy_action",
                lambda c: c.steps * c.actor + c.gradstep_steps * c.critic_gradient,
                "#17becf",
                guided=False,
                clean_action=False,
                weight_name="step size alpha",
                default_weight=0.01,  # App. J, Table 3: alpha = 0.01 on every domain
            ),
            Estimator(
                "robustq",
                "RobustQ: grad of a critic Q(s, a_t, t) trained on noisy actions (Eq. 20; add-on)",
                f"{_GRADIENTS}:estimate_robustq",
                lambda c: c.steps * (c.actor + (1 + c.backward) * c.extra["robust_q"]),
                "#aec7e8",
                clean_action=False,
                uses_critic=False,
                needs=("robust_q",),
                addon="robustq",
            ),
            Estimator(
                "cfgrl",
                "CFGRL: g = f_{o=1} - f, classifier-free guidance, no critic gradient (add-on)",
                f"{_GRADIENTS}:estimate_cfgrl",
                lambda c: c.steps * (c.actor + c.extra["optimal_velocity"]),
                "#ffbb78",
                clean_action=False,
                uses_critic=False,
                needs=("optimal_velocity",),
                addon="cfgrl",
                weight_name="CFG weight tau_cfg",
                default_weight=3.0,  # Table 3: tau_cfg 2-5; 3 on cube
            ),
            Estimator(
                "qgf-distill",
                "grad Q at a distilled denoiser's estimate of ODE(a_t), Jacobian ~ I (App. C; add-on)",
                f"{_GRADIENTS}:estimate_qgf_distill",
                lambda c: c.steps * (c.actor + c.extra["denoiser"] + c.critic_gradient),
                "#98df8a",
                needs=("denoiser",),
                addon="distill",
            ),
            Estimator(
                "qgf-jacobian-distill",
                "J^T grad Q through the distilled denoiser, one VJP (App. C; add-on)",
                f"{_GRADIENTS}:estimate_qgf_jacobian_distill",
                lambda c: c.steps * (c.actor + (1 + c.backward) * c.extra["denoiser"] + c.critic_gradient),
                "#ff9896",
                needs=("denoiser",),
                addon="distill",
            ),
        )
    },
)


def estimator(name: str) -> Estimator:
    """The record of estimator `name` (a one-line error with close matches otherwise)."""
    return ESTIMATOR_TABLE.get(name)


ESTIMATORS: tuple[str, ...] = ESTIMATOR_TABLE.names
GUIDED_ESTIMATORS: tuple[str, ...] = tuple(n for n, e in ESTIMATOR_TABLE.items() if e.guided)
# Estimators that need only velocity_fn and q_fn, and those that also need `extras` (add-ons).
STANDALONE_ESTIMATORS: tuple[str, ...] = tuple(n for n, e in ESTIMATOR_TABLE.items() if not e.needs)
EXTRA_ESTIMATORS: tuple[str, ...] = tuple(n for n, e in ESTIMATOR_TABLE.items() if e.needs)
# estimator -> the add-on (`qgf.addons`) that trains the network it needs
ESTIMATOR_ADDONS: dict[str, str] = {n: e.addon for n, e in ESTIMATOR_TABLE.items() if e.addon}
# The estimators the paper's Figs. 3, 4 and 17 compare (`qgf analyze`'s default), in its order.
PAPER_ESTIMATORS: tuple[str, ...] = ("qgf", "qgf-jacobian", "qgf-chain", "bptt", "ood")
# Not an estimator: the trained method's own policy (an FQL one-step policy, a DAC diffusion
# policy, ...). Only an agent can sample it (`Agent.sample_actions`); every run has it.
POLICY_SAMPLER = "policy"
SAMPLERS: tuple[str, ...] = (POLICY_SAMPLER, *ESTIMATORS)


def estimators_of_addon(addon: str) -> tuple[str, ...]:
    """The estimators whose extra network add-on `addon` trains, in table order."""
    return tuple(n for n, a in ESTIMATOR_ADDONS.items() if a == addon)


def estimator_figure_color(label: str, default: str = "#000000") -> str:
    """The colour of an analysis row named `label` (an estimator's name or `figure_label`)."""
    for name, record in ESTIMATOR_TABLE.items():
        if label in (name, record.figure_label):
            return record.color
    return default


# --------------------------------------------------------------------------------------------------
# SamplerSpec


# SamplerSpec fields added after evaluation directories were named by repr(spec); append new ones.
LATER_SPEC_DEFAULTS = ("clip_jacobian", "gate")


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """Everything about a sampler except the guidance weight (which is traced, see `qgf.guidance`).

    Attributes:
        estimator: one of `ESTIMATORS`, or 'policy': the trained method's own policy (only
            `qgf.agents.Agent.sample_actions` can sample it; the weight is ignored).
        steps: T, the number of Euler steps (delta = 1 / T).
        best_of_n: N > 1 draws N samples per row (distinct noises) with this estimator and keeps the
            one the critic ranks highest. ``SamplerSpec("none", best_of_n=N)`` is BFN.
        clip_hat: clip the clean-action estimate (â₁, or ODE(a_t) for qgf-chain / bptt) to
            [-1, 1] before the critic gradient, so the critic is only queried where it was trained.
            The clip is straight-through: Jacobian estimators chain through the unclipped map, so a
            clipped coordinate is still guided. The authors' code clips; the paper's Eq. 7 does not.
            Default True (see docs/fidelity.md, "Test-time guidance").
        clip_jacobian: with `clip_hat`, the estimators that chain a Jacobian (qgf-jacobian,
            -regularized, -smooth, -ortho, bptt, qgf-jacobian-distill) differentiate the clip
            instead: g = Jᵀ D ∇Q with D = diag(|â₁| < 1), so saturated coordinates get no
            guidance, as the authors' QGF-Jacobian (jacrev of clip(â₁)). Default False.
        smooth_k, smooth_sigma: qgf-jacobian-smooth averages the Jacobian over K perturbations
            a_t + eps, eps ~ N(0, sigma^2 I). The paper gives no values; these are ours.
        reg_eps: qgf-regularized uses g = (I + eps J)^T grad Q (paper Eq. 10, eps = 0.1).
        gradstep_steps: L, the number of ascent steps of GradStep (the weight is the step size).
        gate: kappa > 0 turns on gated guidance for the guided estimators: at every denoising step
            the weight becomes w * gate(delta) with delta the critic ensemble's disagreement (the
            standard deviation of its K heads) at the clipped one-step estimate a_t + (1 - t) v,
            and gate(delta) = min(1, (kappa / delta)^2): untouched while the heads agree to within
            kappa (Q units), quadratically weaker beyond. Needs ``extras["q_heads"]``. 0 = off
            (docs/guidance.md, "Gated guidance"; `qgf check RUN` suggests a kappa).
    """

    estimator: str = "qgf"
    steps: int = 10
    best_of_n: int = 1
    clip_hat: bool = True
    clip_jacobian: bool = False
    smooth_k: int = 4
    smooth_sigma: float = 0.1
    reg_eps: float = 0.1
    gradstep_steps: int = 3
    gate: float = 0.0

    def __post_init__(self) -> None:
        if self.estimator not in SAMPLERS:
            raise _unknown_estimator_error(self.estimator)
        for name in ("steps", "best_of_n", "smooth_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise QGFError(f"SamplerSpec.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.gradstep_steps, int) or self.gradstep_steps < 0:
            raise QGFError(f"SamplerSpec.gradstep_steps must be an integer >= 0, got {self.gradstep_steps!r}")
        if not self.smooth_sigma >= 0:
            raise QGFError(f"SamplerSpec.smooth_sigma must be >= 0, got {self.smooth_sigma!r}")
        if (
            isinstance(self.gate, bool)
            or not isinstance(self.gate, int | float)
            or not 0 <= self.gate < float("inf")
        ):
            raise QGFError(f"SamplerSpec.gate must be a finite number >= 0 (0 = no gate), got {self.gate!r}")
        if self.gate and not (self.estimator in ESTIMATOR_TABLE and estimator(self.estimator).guided):
            raise QGFError(
                f"SamplerSpec.gate scales a guidance weight per step; sampler {self.estimator!r} has none "
                f"(gated samplers: {', '.join(GUIDED_ESTIMATORS)})"
            )

    @property
    def uses_weight(self) -> bool:
        """Whether the weight changes the samples (BC and the method's own policy ignore it)."""
        return self.estimator not in ("none", POLICY_SAMPLER)

    @property
    def uses_critic(self) -> bool:
        """Whether sampling evaluates q_fn at all (plain BC and CFGRL with N = 1 never do)."""
        if self.best_of_n > 1:
            return True
        return self.estimator != POLICY_SAMPLER and estimator(self.estimator).uses_critic

    @property
    def needs(self) -> tuple[str, ...]:
        """The `EXTRA_CALLABLES` this sampler takes from ``extras`` (empty for most)."""
        return () if self.estimator == POLICY_SAMPLER else estimator(self.estimator).needs

    def __repr__(self) -> str:
        # Sweeps hash repr(spec) into evaluation directory names (qgf.experiments.jobs): a field
        # added later is left out while it holds its default, so those names stay.
        shown = (
            f"{field.name}={getattr(self, field.name)!r}"
            for field in dataclasses.fields(self)
            if not (field.name in LATER_SPEC_DEFAULTS and getattr(self, field.name) == field.default)
        )
        return f"SamplerSpec({', '.join(shown)})"

    @property
    def label(self) -> str:
        """Short name for tables: ``qgf``, ``bfn-4`` (best-of-4 on BC), ``qgf+bfn-4``, ``qgf+gate-0.5``."""
        gate = f"+gate-{self.gate:g}" if self.gate else ""
        if self.best_of_n == 1:
            return self.estimator + gate
        if self.estimator == "none":
            return f"bfn-{self.best_of_n}"
        return f"{self.estimator}{gate}+bfn-{self.best_of_n}"


def _unknown_estimator_error(name: object) -> QGFError:
    if isinstance(name, str) and name.lower().startswith("bfn"):
        return QGFError(
            f"unknown estimator {name!r}: best-of-N is SamplerSpec.best_of_n, "
            f"e.g. SamplerSpec('none', best_of_n=4) for BFN. Estimators: {', '.join(SAMPLERS)}"
        )
    return unknown_name_error("estimator", name, SAMPLERS)


def check_extras(spec: SamplerSpec, extras: Mapping[str, Callable[..., Any]] | None) -> None:
    """A one-line QGFError when `spec` needs an extra callable that `extras` lacks."""
    for name in spec.needs:
        if extras is None or not callable(extras.get(name)):
            raise QGFError(
                f"sampler {spec.estimator!r} needs extras[{name!r}], {EXTRA_CALLABLES[name]}; for a run, "
                f"train it with `qgf addon train RUN {estimator(spec.estimator).addon}` (qgf.addons)"
            )
