"""Test-time samplers for flow policies: Q-gradient guidance (QGF and its variants) and baselines.

Everything here is a pure function of two JAX callables, so any model can be guided, not only
`qgf.nets`:

- ``velocity_fn(obs (B, D), a_t (B, d), t (B,)) -> (B, d)``: the reference (BC) flow's velocity;
- ``q_fn(obs (B, D), a (B, d)) -> (B,)``: the critic, already aggregated over its ensemble. Rows must
  be independent (no batch statistics), so ``grad(sum(q_fn))`` gives every row its own gradient.

Samplers of methods that train an extra network on top of a frozen run (RobustQ, CFGRL, the
distilled denoiser: `qgf.addons`) take it as a named callable in ``extras`` (`EXTRA_CALLABLES`).

The sampler (QGF paper, Algorithm 1) is written once::

    a_0 ~ N(0, I);  for k < T: t = k / T;  a <- a + (v(s, a, t) + w * g) / T;  return a_1

and we return clip(a_1, -1, 1): the clip is ours, not Algorithm 1's (which returns a_1 as is); it
keeps the action in the env's box, and ``info["unclipped"]`` keeps a_1. Estimators differ only in how
they compute g. Each estimator is a small function
``(velocity_fn, q_fn, obs, a_t, t, spec, key, extras) -> (g, v)`` that also returns the velocity at
a_t, so the loop never evaluates the actor twice per step. Best-of-N wraps any estimator; GradStep
runs the unguided sampler and then ascends the critic.

Estimator, N and step counts live in the hashable `SamplerSpec` (a static argument under `jit`);
the guidance weight is a traced value, scalar or one per row, so a whole weight sweep is one batch
and changing it never recompiles. See docs/guidance.md for the math, costs and defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from qgf.errors import QGFError

Array = jax.Array
VelocityFn = Callable[[Any, Array, Array], Array]
QFn = Callable[[Any, Array], Array]
Extras = Mapping[str, Callable[..., Array]]

# Named extra callables that some estimators need (`EstimatorInfo.needs`), with their contracts.
# `qgf.addons` trains them against a frozen run; any model with the same signature works.
EXTRA_CALLABLES: dict[str, str] = {
    "robust_q": "Q(s, a_t, t) -> (B,): a critic trained on noisy actions a_t (RobustQ, QGF Eq. 20)",
    "optimal_velocity": "f_{o=1}(s, a_t, t) -> (B, d): the optimality-conditioned flow (CFGRL, QGF App. I)",
    "denoiser": "v_d(s, a_t, t) -> (B, d): the distilled estimate of ODE(a_t) (QGF App. C)",
}


@dataclasses.dataclass(frozen=True)
class EstimatorInfo:
    """One entry of the estimator registry: what the CLI, analysis and docs read.

    `guided`: adds w * g at every denoising step (not BC, not GradStep's after-the-fact ascent);
    `clean_action`: g is taken at an estimate of the clean action, where `clip_hat` applies;
    `uses_critic`: evaluates `q_fn` (with N = 1; best-of-N always ranks with it);
    `needs`: names of `EXTRA_CALLABLES` it takes from ``extras``;
    `weight_name`: what the weight means when it is not the guidance weight w = 1/beta."""

    name: str
    summary: str
    guided: bool = True
    clean_action: bool = True
    uses_critic: bool = True
    needs: tuple[str, ...] = ()
    weight_name: str = "guidance weight"


# The one registry of test-time estimators, in the order of tables and help texts. The functions
# live in `_ESTIMATOR_FNS` below, keyed the same way.
ESTIMATOR_INFO: dict[str, EstimatorInfo] = {
    info.name: info
    for info in (
        EstimatorInfo(
            "none", "BC: the unguided flow (g = 0)", guided=False, clean_action=False, uses_critic=False
        ),
        EstimatorInfo("qgf", "QGF: grad Q at the one-Euler-step estimate of a_1, Jacobian ~ I (Eq. 9)"),
        EstimatorInfo("qgf-jacobian", "QGF-Jacobian: J^T grad Q at the one-step estimate (one VJP)"),
        EstimatorInfo("qgf-chain", "grad Q at the full unguided Euler solution from a_t, Jacobian ~ I"),
        EstimatorInfo("qgf-jacobian-smooth", "Jacobian averaged over K Gaussian perturbations of a_t"),
        EstimatorInfo("qgf-regularized", "(I + eps J)^T grad Q at the one-step estimate (Eq. 10)"),
        EstimatorInfo("qgf-jacobian-ortho", "J replaced by the orthogonal factor U V^T of its SVD"),
        EstimatorInfo("ood", "QFQL: grad Q at the noisy a_t itself", clean_action=False),
        EstimatorInfo("bptt", "grad through the remaining Euler steps (adjoint)"),
        EstimatorInfo(
            "gradstep",
            "GradStep: BC sample, then L steps a += alpha grad Q(a)",
            guided=False,
            clean_action=False,
            weight_name="step size alpha",
        ),
        EstimatorInfo(
            "robustq",
            "RobustQ: grad of a critic Q(s, a_t, t) trained on noisy actions (Eq. 20; add-on)",
            clean_action=False,
            uses_critic=False,
            needs=("robust_q",),
        ),
        EstimatorInfo(
            "cfgrl",
            "CFGRL: g = f_{o=1} - f, classifier-free guidance, no critic gradient (add-on)",
            clean_action=False,
            uses_critic=False,
            needs=("optimal_velocity",),
            weight_name="CFG weight tau_cfg",
        ),
        EstimatorInfo(
            "qgf-distill",
            "grad Q at a distilled denoiser's estimate of ODE(a_t), Jacobian ~ I (App. C; add-on)",
            needs=("denoiser",),
        ),
        EstimatorInfo(
            "qgf-jacobian-distill",
            "J^T grad Q through the distilled denoiser, one VJP (App. C; add-on)",
            needs=("denoiser",),
        ),
    )
}
ESTIMATORS: tuple[str, ...] = tuple(ESTIMATOR_INFO)
GUIDED_ESTIMATORS: tuple[str, ...] = tuple(name for name, info in ESTIMATOR_INFO.items() if info.guided)
# Estimators that need only velocity_fn and q_fn, and those that also need `extras` (add-ons).
STANDALONE_ESTIMATORS: tuple[str, ...] = tuple(n for n, info in ESTIMATOR_INFO.items() if not info.needs)
EXTRA_ESTIMATORS: tuple[str, ...] = tuple(n for n, info in ESTIMATOR_INFO.items() if info.needs)
# Not an estimator: the trained method's own policy (an FQL one-step policy, a DAC diffusion
# policy, ...). Only an agent can sample it (`Agent.sample_actions`); every run has it.
POLICY_SAMPLER = "policy"
SAMPLERS: tuple[str, ...] = (POLICY_SAMPLER, *ESTIMATORS)


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """Everything about a sampler except the guidance weight (which is traced, see module doc).

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
        smooth_k, smooth_sigma: qgf-jacobian-smooth averages the Jacobian over K perturbations
            a_t + eps, eps ~ N(0, sigma^2 I). The paper gives no values; these are ours.
        reg_eps: qgf-regularized uses g = (I + eps J)^T grad Q (paper Eq. 10, eps = 0.1).
        gradstep_steps: L, the number of ascent steps of GradStep (the weight is the step size).
    """

    estimator: str = "qgf"
    steps: int = 10
    best_of_n: int = 1
    clip_hat: bool = True
    smooth_k: int = 4
    smooth_sigma: float = 0.1
    reg_eps: float = 0.1
    gradstep_steps: int = 3

    def __post_init__(self) -> None:
        if self.estimator not in SAMPLERS:
            raise QGFError(_unknown_estimator_message(self.estimator))
        for name in ("steps", "best_of_n", "smooth_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise QGFError(f"SamplerSpec.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.gradstep_steps, int) or self.gradstep_steps < 0:
            raise QGFError(f"SamplerSpec.gradstep_steps must be an integer >= 0, got {self.gradstep_steps!r}")
        if not self.smooth_sigma >= 0:
            raise QGFError(f"SamplerSpec.smooth_sigma must be >= 0, got {self.smooth_sigma!r}")

    @property
    def uses_weight(self) -> bool:
        """Whether the weight changes the samples (BC and the method's own policy ignore it)."""
        return self.estimator not in ("none", POLICY_SAMPLER)

    @property
    def uses_critic(self) -> bool:
        """Whether sampling evaluates q_fn at all (plain BC and CFGRL with N = 1 never do)."""
        if self.best_of_n > 1:
            return True
        return self.estimator != POLICY_SAMPLER and ESTIMATOR_INFO[self.estimator].uses_critic

    @property
    def needs(self) -> tuple[str, ...]:
        """The `EXTRA_CALLABLES` this sampler takes from ``extras`` (empty for most)."""
        return () if self.estimator == POLICY_SAMPLER else ESTIMATOR_INFO[self.estimator].needs

    @property
    def label(self) -> str:
        """Short name for tables: ``qgf``, ``bfn-4`` (best-of-4 on BC), ``qgf+bfn-4``."""
        if self.best_of_n == 1:
            return self.estimator
        if self.estimator == "none":
            return f"bfn-{self.best_of_n}"
        return f"{self.estimator}+bfn-{self.best_of_n}"


def _unknown_estimator_message(name: object) -> str:
    known = ", ".join(SAMPLERS)
    if isinstance(name, str) and name.lower().startswith("bfn"):
        return (
            f"unknown estimator {name!r}: best-of-N is SamplerSpec.best_of_n, "
            f"e.g. SamplerSpec('none', best_of_n=4) for BFN. Estimators: {known}"
        )
    close = difflib.get_close_matches(str(name), SAMPLERS, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown estimator {name!r}.{hint} Estimators: {known}"


# --------------------------------------------------------------------------------------------------
# Small helpers


def _per_row(x: Array) -> Array:
    """(B,) -> (B, 1), to scale (B, d) rows."""
    return x[:, None]


def _repeat_rows(tree: Any, n: int) -> Any:
    """Each row repeated n times in place: rows [x0, x0, ..., x1, x1, ...] (jnp.repeat on axis 0)."""
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), tree)


def _tile_rows(tree: Any, n: int) -> Any:
    """The whole batch stacked n times: rows [x0, x1, ..., x0, x1, ...]."""
    return jax.tree.map(lambda x: jnp.tile(x, (n,) + (1,) * (x.ndim - 1)), tree)


def critic_gradient(q_fn: QFn, obs: Any, actions: Array) -> Array:
    """grad_a Q(s, a) for every row: (B, d). One critic forward and backward pass."""
    return jax.grad(lambda a: jnp.sum(q_fn(obs, a)))(actions)


def check_extras(spec: SamplerSpec, extras: Extras | None) -> None:
    """A one-line QGFError when `spec` needs an extra callable that `extras` lacks."""
    for name in spec.needs:
        if extras is None or not callable(extras.get(name)):
            raise QGFError(
                f"sampler {spec.estimator!r} needs extras[{name!r}], {EXTRA_CALLABLES[name]}; for a run, "
                f"train it with `qgf addon train RUN ...` (qgf.addons)"
            )


def _maybe_clip_hat(a1_hat: Array, spec: SamplerSpec) -> Array:
    return jnp.clip(a1_hat, -1.0, 1.0) if spec.clip_hat else a1_hat


def nearest_orthogonal(matrices: Array) -> Array:
    """U Vᵀ from the SVD U Σ Vᵀ of each (…, d, d) matrix: its polar factor, the nearest orthogonal
    matrix in Frobenius norm (qgf-jacobian-ortho)."""
    u, _, vh = jnp.linalg.svd(matrices)
    return u @ vh


def _one_step_denoiser(velocity_fn: VelocityFn, obs: Any, t: Array) -> Callable[[Array], tuple]:
    """a_t -> (â₁, v) with â₁ = a_t + (1 - t) v(s, a_t, t) (QGF Eq. 7); v rides along as aux."""

    def denoise(a_t: Array) -> tuple[Array, Array]:
        velocity = velocity_fn(obs, a_t, t)
        return a_t + _per_row(1.0 - t) * velocity, velocity

    return denoise


class _RemainingOde:
    """The unguided Euler ODE from t to 1, used by qgf-chain (forward only) and bptt (with adjoint).

    Each row takes n = ceil((1 - t) T) equal steps of (1 - t) / n, which is exactly the sampler's
    own grid (steps of 1 / T) when t is on it. Rows may have different t (diagnostics). Step 0 is
    taken outside the loop (its velocity is the sampler's v at a_t); steps 1 .. T - 1 run in a
    `lax.scan` whose iterations no row needs are skipped by a `lax.cond`, so inside the sampler
    step k costs the T - k remaining velocity passes, not T.
    """

    def __init__(self, velocity_fn: VelocityFn, obs: Any, t: Array, steps: int):
        self.velocity_fn, self.obs, self.t, self.steps = velocity_fn, obs, t, steps
        self.remaining = jnp.clip(jnp.ceil((1.0 - t) * steps - 1e-4), 0, steps)
        self.step_size = (1.0 - t) / jnp.maximum(self.remaining, 1.0)
        self.most_remaining = jnp.max(self.remaining)

    def step_scale(self, j: Array) -> Array:
        """(B,) factor of step j's velocity: the step size, or 0 for rows whose ODE has ended."""
        return self.step_size * (j < self.remaining).astype(self.step_size.dtype)

    def velocity(self, a: Array, j: Array) -> Array:
        return self.velocity_fn(self.obs, a, self.t + j * self.step_size)

    def integrate_rest(self, a: Array) -> tuple[Array, Array]:
        """From the state after step 0, run steps 1 .. n - 1: (end state, the input of each step)."""

        def body(a: Array, j: Array) -> tuple[Array, Array]:
            def advance(a: Array) -> Array:
                return a + _per_row(self.step_scale(j)) * self.velocity(a, j)

            return jax.lax.cond(j < self.most_remaining, advance, lambda a: a, a), a

        return jax.lax.scan(body, a, jnp.arange(1, self.steps))

    def pull_back_rest(self, cotangent: Array, states: Array) -> Array:
        """Transpose of steps n - 1 .. 1 applied to a cotangent on the end state: the adjoint
        recursion u <- u + h J_v(a_j)ᵀ u, each VJP recomputing its step's forward pass.

        Written by hand because JAX's reverse mode through `lax.cond` inside `lax.scan` ran 10-20x
        slower than the passes it does; here every skipped iteration stays skipped."""

        def body(u: Array, j_and_state: tuple[Array, Array]) -> tuple[Array, None]:
            j, state = j_and_state

            def pull(u: Array) -> Array:
                _, pullback = jax.vjp(lambda a: self.velocity(a, j), state)
                return u + pullback(_per_row(self.step_scale(j)) * u)[0]

            return jax.lax.cond(j < self.most_remaining, pull, lambda u: u, u), None

        u, _ = jax.lax.scan(body, cotangent, (jnp.arange(1, self.steps), states), reverse=True)
        return u


def ode_solution(velocity_fn: VelocityFn, obs: Any, a_t: Array, t: Array, steps: int) -> Array:
    """ODE(a_t): the unguided Euler solution from a_t at time t (B,) to 1, on the sampler's grid of
    T = `steps` (`_RemainingOde`), unclipped. qgf-chain's clean-action estimate and the target the
    distilled denoiser (`qgf.addons.distill`) is trained on."""
    ode = _RemainingOde(velocity_fn, obs, t, steps)
    a1, _ = ode.integrate_rest(a_t + _per_row(ode.step_scale(0)) * velocity_fn(obs, a_t, t))
    return a1


# --------------------------------------------------------------------------------------------------
# Estimators: (velocity_fn, q_fn, obs, a_t, t, spec, key, extras) -> (g, v(s, a_t, t))


def _estimate_none(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    return jnp.zeros_like(a_t), velocity_fn(obs, a_t, t)


def _estimate_qgf(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    velocity = velocity_fn(obs, a_t, t)
    # J ≈ I (QGF Eq. 9): the one-step estimate is treated as a constant shift of a_t.
    a1_hat = a_t + _per_row(1.0 - t) * jax.lax.stop_gradient(velocity)
    return critic_gradient(q_fn, obs, _maybe_clip_hat(a1_hat, spec)), velocity


def _jacobian_pullback(velocity_fn, q_fn, obs, a_t, t, spec):
    """One forward pass of â₁(a_t) with its VJP: returns (grad Q at â₁, pullback = u -> Jᵀu, v)."""
    a1_hat, pullback, velocity = jax.vjp(_one_step_denoiser(velocity_fn, obs, t), a_t, has_aux=True)
    return critic_gradient(q_fn, obs, _maybe_clip_hat(a1_hat, spec)), pullback, velocity


def _estimate_qgf_jacobian(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    q_grad, pullback, velocity = _jacobian_pullback(velocity_fn, q_fn, obs, a_t, t, spec)
    (g,) = pullback(q_grad)  # Jᵀ grad Q: one vector-Jacobian product, never the d x d Jacobian
    return g, velocity


def _estimate_qgf_regularized(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    q_grad, pullback, velocity = _jacobian_pullback(velocity_fn, q_fn, obs, a_t, t, spec)
    (jacobian_term,) = pullback(q_grad)
    return q_grad + spec.reg_eps * jacobian_term, velocity


def _estimate_qgf_jacobian_smooth(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    velocity = velocity_fn(obs, a_t, t)
    a1_hat = a_t + _per_row(1.0 - t) * velocity
    q_grad = critic_gradient(q_fn, obs, _maybe_clip_hat(a1_hat, spec))
    # (1/K Σ_k J_k)ᵀ u = 1/K Σ_k J_kᵀ u: K VJPs, done as one VJP over K stacked copies of the batch.
    k, (batch, dim) = spec.smooth_k, a_t.shape
    perturbed = a_t[None] + spec.smooth_sigma * jax.random.normal(key, (k, batch, dim), a_t.dtype)
    denoise = _one_step_denoiser(velocity_fn, _tile_rows(obs, k), jnp.tile(t, k))
    _, pullback, _ = jax.vjp(denoise, perturbed.reshape(k * batch, dim), has_aux=True)
    (stacked,) = pullback(jnp.tile(q_grad, (k, 1)))
    return stacked.reshape(k, batch, dim).mean(axis=0), velocity


def _estimate_qgf_jacobian_ortho(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # SVD needs the explicit per-sample d x d Jacobian: d forward-mode passes of the actor per row.
    def denoise_row(obs_row, a_row, t_row):
        one = jax.tree.map(lambda x: x[None], (obs_row, a_row, t_row))
        return _one_step_denoiser(velocity_fn, one[0], one[2])(one[1])[0][0]

    jacobians = jax.vmap(jax.jacfwd(denoise_row, argnums=1))(obs, a_t, t)  # (B, d, d)
    velocity = velocity_fn(obs, a_t, t)
    a1_hat = a_t + _per_row(1.0 - t) * velocity
    q_grad = critic_gradient(q_fn, obs, _maybe_clip_hat(a1_hat, spec))
    return jnp.einsum("bij,bi->bj", nearest_orthogonal(jacobians), q_grad), velocity


def _estimate_qgf_chain(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    ode = _RemainingOde(velocity_fn, obs, t, spec.steps)
    velocity = velocity_fn(obs, a_t, t)
    a1, _ = ode.integrate_rest(a_t + _per_row(ode.step_scale(0)) * velocity)
    a1 = jax.lax.stop_gradient(a1)  # J ≈ I: no differentiation through the remaining chain
    return critic_gradient(q_fn, obs, _maybe_clip_hat(a1, spec)), velocity


def _estimate_bptt(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # g = (d ODE(a_t) / d a_t)ᵀ grad Q(ODE(a_t)), by the adjoint recursion through the Euler steps.
    ode = _RemainingOde(velocity_fn, obs, t, spec.steps)
    velocity, first_pullback = jax.vjp(lambda a: velocity_fn(obs, a, t), a_t)
    first_scale = _per_row(ode.step_scale(0))
    a1, states = ode.integrate_rest(a_t + first_scale * velocity)
    u = ode.pull_back_rest(critic_gradient(q_fn, obs, _maybe_clip_hat(a1, spec)), states)
    return u + first_pullback(first_scale * u)[0], velocity


def _estimate_at_noisy_action(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # QFQL's "OOD gradient": the critic is queried at the noisy a_t it never saw in training.
    return critic_gradient(q_fn, obs, a_t), velocity_fn(obs, a_t, t)


def _estimate_robustq(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # RobustQ (QGF App. I): the gradient at the noisy a_t, of a critic that was trained there (Eq. 20).
    robust_q = extras["robust_q"]
    g = jax.grad(lambda a: jnp.sum(robust_q(obs, a, t)))(a_t)
    return g, velocity_fn(obs, a_t, t)


def _estimate_cfgrl(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # CFGRL (QGF App. I): v_cfg = f + w (f_{o=1} - f), i.e. the sampler's v + w g with g = f_{o=1} - f.
    # Weight 0 is the base flow exactly; weight 1 is f_{o=1} up to float rounding.
    velocity = velocity_fn(obs, a_t, t)
    return extras["optimal_velocity"](obs, a_t, t) - velocity, velocity


def _estimate_qgf_distill(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # QGF-Distill (App. C): â₁ = v_d(s, a_t, t), a learned ODE(a_t); J ≈ I, so v_d gets no derivative.
    a1_hat = jax.lax.stop_gradient(extras["denoiser"](obs, a_t, t))
    return critic_gradient(q_fn, obs, _maybe_clip_hat(a1_hat, spec)), velocity_fn(obs, a_t, t)


def _estimate_qgf_jacobian_distill(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # QGF-Jacobian-Distill (App. C): Jᵀ grad Q with J = d v_d / d a_t, one VJP through the denoiser;
    # the clip is straight-through, as for qgf-jacobian.
    a1_hat, pullback = jax.vjp(lambda a: extras["denoiser"](obs, a, t), a_t)
    (g,) = pullback(critic_gradient(q_fn, obs, _maybe_clip_hat(a1_hat, spec)))
    return g, velocity_fn(obs, a_t, t)


_ESTIMATOR_FNS = {
    "none": _estimate_none,
    "qgf": _estimate_qgf,
    "qgf-jacobian": _estimate_qgf_jacobian,
    "qgf-chain": _estimate_qgf_chain,
    "qgf-jacobian-smooth": _estimate_qgf_jacobian_smooth,
    "qgf-regularized": _estimate_qgf_regularized,
    "qgf-jacobian-ortho": _estimate_qgf_jacobian_ortho,
    "ood": _estimate_at_noisy_action,
    "bptt": _estimate_bptt,
    "gradstep": _estimate_at_noisy_action,  # GradStep's direction grad_a Q(s, a) at the given a
    "robustq": _estimate_robustq,
    "cfgrl": _estimate_cfgrl,
    "qgf-distill": _estimate_qgf_distill,
    "qgf-jacobian-distill": _estimate_qgf_jacobian_distill,
}
assert tuple(_ESTIMATOR_FNS) == ESTIMATORS, "the estimator registry and its functions must agree"


def estimate_gradient(
    velocity_fn: VelocityFn,
    q_fn: QFn,
    obs: Any,
    a_t: Array,
    t: Array | float,
    spec: SamplerSpec,
    key: Array | None = None,
    extras: Extras | None = None,
) -> Array:
    """The estimator's guidance direction g at one denoising step: (B, d).

    ``t`` is a scalar or (B,). ``key`` is only used by qgf-jacobian-smooth. For ``none`` g is 0; for
    ``gradstep`` it is grad_a Q(s, a) at ``a_t`` (the direction GradStep ascends). ``extras`` holds
    the callables the estimator needs (`SamplerSpec.needs`, `EXTRA_CALLABLES`).
    """
    check_extras(spec, extras)
    a_t = jnp.asarray(a_t)
    t = jnp.broadcast_to(jnp.asarray(t, a_t.dtype), a_t.shape[:1])
    key = jax.random.key(0) if key is None else key
    g, _ = _ESTIMATOR_FNS[spec.estimator](velocity_fn, q_fn, obs, a_t, t, spec, key, extras)
    return g


# --------------------------------------------------------------------------------------------------
# The sampler


def _denoise(velocity_fn, q_fn, obs, noise, weight, spec, key, keep_trajectory, extras):
    """Algorithm 1 from `noise` (B, d); returns (a_1, unclipped as Algorithm 1 returns it, and the
    trajectory or None)."""
    batch = noise.shape[0]
    step_size = 1.0 / spec.steps
    guided = ESTIMATOR_INFO[spec.estimator].guided
    estimator = _ESTIMATOR_FNS[spec.estimator]

    def step(a: Array, k: Array) -> tuple[Array, Array | None]:
        t = jnp.full((batch,), k * step_size, a.dtype)
        if guided:
            g, velocity = estimator(velocity_fn, q_fn, obs, a, t, spec, jax.random.fold_in(key, k), extras)
            a = a + step_size * (velocity + _per_row(weight) * g)
        else:  # BC: never touches the critic
            a = a + step_size * velocity_fn(obs, a, t)
        return a, (a if keep_trajectory else None)

    a1, path = jax.lax.scan(step, noise, jnp.arange(spec.steps))
    trajectory = jnp.concatenate([noise[None], path]) if keep_trajectory else None
    return a1, trajectory


def _gradient_ascent(q_fn, obs, actions, step_sizes, num_steps):
    """GradStep (paper Algorithm 2): L steps of a <- a + alpha * grad_a Q(s, a)."""

    def ascend(_, a):
        return a + _per_row(step_sizes) * critic_gradient(q_fn, obs, a)

    return jax.lax.fori_loop(0, num_steps, ascend, actions)


def _single_sampler(velocity_fn, q_fn, obs, noise, weight, spec, key, keep_trajectory, extras):
    """One sample per row: returns (actions clipped to [-1, 1], info)."""
    a1, trajectory = _denoise(velocity_fn, q_fn, obs, noise, weight, spec, key, keep_trajectory, extras)
    if spec.estimator == "gradstep":
        a1 = _gradient_ascent(q_fn, obs, jnp.clip(a1, -1.0, 1.0), weight, spec.gradstep_steps)
    info = {"unclipped": a1}
    if keep_trajectory:
        info["trajectory"] = trajectory
    # Our clip, not Algorithm 1's (it returns a_1 as is): the env's action box is [-1, 1].
    return jnp.clip(a1, -1.0, 1.0), info


def sample_with_info(
    velocity_fn: VelocityFn,
    q_fn: QFn | None,
    obs: Any,
    key: Array,
    weight: Array | float,
    spec: SamplerSpec,
    action_dim: int,
    *,
    noise: Array | None = None,
    trajectory: bool = False,
    extras: Extras | None = None,
) -> tuple[Array, dict[str, Array]]:
    """`sample`, plus an info dict.

    Args:
        noise: optional a_0 to start from, (B, d), or (B, N, d) when best_of_n = N > 1. By default it
            is drawn from ``key``. Passing it gives common random numbers across estimators.
        trajectory: also return the denoising path.
        extras: the named callables the estimator needs (`SamplerSpec.needs`), e.g.
            ``{"robust_q": ...}`` for robustq; ignored by the others.

    Info keys: ``q`` (B,) the critic at the returned actions (when q_fn is given); ``unclipped``
    (B, d) a_1 before the final clip; ``trajectory`` (T + 1, B, d) a_0 … a_1 before the clip (the
    BC path for gradstep), if asked; with N > 1, ``candidate_q`` (B, N) and ``chosen`` (B,) index.
    """
    return _sample(
        velocity_fn, q_fn, obs, key, weight, spec, action_dim, noise, trajectory, q_fn is not None, extras
    )


def _sample(velocity_fn, q_fn, obs, key, weight, spec, action_dim, noise, trajectory, score_actions, extras):
    if spec.estimator == POLICY_SAMPLER:
        raise QGFError(
            "sampler 'policy' is a trained method's own policy: sample it with agent.sample_actions, "
            "not with a velocity field"
        )
    if spec.uses_critic and q_fn is None:
        raise QGFError(f"sampler {spec.label!r} needs a critic: pass q_fn")
    check_extras(spec, extras)
    first_obs = jax.tree.leaves(obs)[0]
    batch, n = first_obs.shape[0], spec.best_of_n
    dtype = first_obs.dtype if jnp.issubdtype(first_obs.dtype, jnp.floating) else jnp.result_type(float)
    weight = jnp.broadcast_to(jnp.asarray(weight, dtype), (batch,))
    noise_key, estimator_key = jax.random.split(key)
    if noise is None:
        # Row i * N + j is copy j of row i; N = 1 is the plain sampler on the same stream.
        noise = jax.random.normal(noise_key, (batch * n, action_dim), dtype)
    else:
        expected = (batch, action_dim) if n == 1 else (batch, n, action_dim)
        if noise.shape != expected:
            raise QGFError(f"noise has shape {noise.shape}, expected {expected}")
        noise = jnp.asarray(noise, dtype).reshape(batch * n, action_dim)

    if n == 1:
        actions, info = _single_sampler(
            velocity_fn, q_fn, obs, noise, weight, spec, estimator_key, trajectory, extras
        )
        if score_actions:
            info["q"] = q_fn(obs, actions)
        return actions, info

    copies = _repeat_rows(obs, n)
    candidates, info = _single_sampler(
        velocity_fn, q_fn, copies, noise, jnp.repeat(weight, n), spec, estimator_key, trajectory, extras
    )
    candidate_q = q_fn(copies, candidates).reshape(batch, n)
    chosen = jnp.argmax(candidate_q, axis=1)
    rows = jnp.arange(batch)

    def pick(x: Array, axis: int = 0) -> Array:
        x = jnp.moveaxis(x, axis, 0).reshape((batch, n) + x.shape[:axis] + x.shape[axis + 1 :])
        return jnp.moveaxis(x[rows, chosen], 0, axis)

    picked = {"unclipped": pick(info["unclipped"])}
    if trajectory:
        picked["trajectory"] = pick(info["trajectory"], axis=1)
    picked.update(q=candidate_q[rows, chosen], candidate_q=candidate_q, chosen=chosen)
    return pick(candidates), picked


def sample(
    velocity_fn: VelocityFn,
    q_fn: QFn | None,
    obs: Any,
    key: Array,
    weight: Array | float,
    spec: SamplerSpec,
    action_dim: int,
    *,
    extras: Extras | None = None,
) -> Array:
    """Guided actions (B, action_dim), clipped to [-1, 1].

    Pure and traceable: call it inside your own `jax.jit` with the callables closed over and
    ``spec`` static (or use `make_sampler`). ``weight`` is a scalar or (B,) array (the step size α
    for gradstep, τ_cfg for cfgrl); it is traced, so changing it never recompiles. ``q_fn`` may be
    None for samplers that never query it (plain BC, cfgrl). ``extras``: the named callables the
    estimator needs (`SamplerSpec.needs`, `EXTRA_CALLABLES`).
    """
    actions, _ = _sample(velocity_fn, q_fn, obs, key, weight, spec, action_dim, None, False, False, extras)
    return actions


def make_sampler(
    velocity_fn: VelocityFn,
    q_fn: QFn | None,
    action_dim: int,
    spec: SamplerSpec,
    *,
    with_info: bool = False,
    trajectory: bool = False,
    extras: Extras | None = None,
) -> Callable[..., Any]:
    """A compiled ``(obs, key, weight=0.0) -> actions`` (or ``(actions, info)`` with_info=True).

    The weight is broadcast to (B,) before the compiled call, so scalars, per-row arrays and any
    weight values share one compilation per batch shape. ``extras`` as in `sample`.
    """
    check_extras(spec, extras)

    @jax.jit
    def compiled(obs, key, weight):
        actions, info = sample_with_info(
            velocity_fn, q_fn, obs, key, weight, spec, action_dim, trajectory=trajectory, extras=extras
        )
        return (actions, info) if with_info else actions

    def sampler(obs, key, weight=0.0):
        batch = jax.tree.leaves(obs)[0].shape[0]
        return compiled(obs, key, jnp.broadcast_to(jnp.asarray(weight, jnp.result_type(float)), (batch,)))

    return sampler
