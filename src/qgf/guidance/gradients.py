"""The estimator functions of `qgf.guidance` and the numerical pieces they share.

Each estimator is ``(velocity_fn, q_fn, obs, a_t, t, spec, key, extras) -> (g, v(s, a_t, t))``: the
guidance direction g at one denoising step, and the velocity at a_t that it had to compute anyway
(so the sampler never evaluates the actor twice per step). The table in `qgf.guidance.estimators`
names each function (`Estimator.function`); `estimate_gradient` calls one step of any of them.
Also here: `critic_gradient`, `nearest_orthogonal` and the unguided remaining ODE (`ode_solution`,
the target of the distilled denoiser in `qgf.addons.distill`).

Imports JAX and `qgf.guidance.estimators` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from qgf.guidance.estimators import SamplerSpec, check_extras, estimator

Array = jax.Array
VelocityFn = Callable[[Any, Array, Array], Array]
QFn = Callable[[Any, Array], Array]
Extras = Mapping[str, Callable[..., Array]]


# --------------------------------------------------------------------------------------------------
# Small helpers


def per_row(x: Array) -> Array:
    """(B,) -> (B, 1), to scale (B, d) rows."""
    return x[:, None]


def _tile_rows(tree: Any, n: int) -> Any:
    """The whole batch stacked n times: rows [x0, x1, ..., x0, x1, ...]."""
    return jax.tree.map(lambda x: jnp.tile(x, (n,) + (1,) * (x.ndim - 1)), tree)


def critic_gradient(q_fn: QFn, obs: Any, actions: Array) -> Array:
    """grad_a Q(s, a) for every row: (B, d). One critic forward and backward pass."""
    return jax.grad(lambda a: jnp.sum(q_fn(obs, a)))(actions)


def _maybe_clip_hat(a1_hat: Array, spec: SamplerSpec) -> Array:
    return jnp.clip(a1_hat, -1.0, 1.0) if spec.clip_hat else a1_hat


def _chained_critic_gradient(q_fn: QFn, obs: Any, a1_hat: Array, spec: SamplerSpec) -> Array:
    """The cotangent a Jacobian estimator pulls back to a_t: ∇Q at the (clipped) â₁, and with
    `spec.clip_jacobian` times the clip's derivative D = 1[|â₁| < 1] (without it the clip is
    straight-through)."""
    q_grad = critic_gradient(q_fn, obs, _maybe_clip_hat(a1_hat, spec))
    if spec.clip_hat and spec.clip_jacobian:
        q_grad = jnp.where(jnp.abs(a1_hat) < 1.0, q_grad, 0.0)
    return q_grad


def nearest_orthogonal(matrices: Array) -> Array:
    """U Vᵀ from the SVD U Σ Vᵀ of each (…, d, d) matrix: its polar factor, the nearest orthogonal
    matrix in Frobenius norm (qgf-jacobian-ortho)."""
    u, _, vh = jnp.linalg.svd(matrices)
    return u @ vh


def _one_step_denoiser(velocity_fn: VelocityFn, obs: Any, t: Array) -> Callable[[Array], tuple]:
    """a_t -> (â₁, v) with â₁ = a_t + (1 - t) v(s, a_t, t) (QGF Eq. 7); v rides along as aux."""

    def denoise(a_t: Array) -> tuple[Array, Array]:
        velocity = velocity_fn(obs, a_t, t)
        return a_t + per_row(1.0 - t) * velocity, velocity

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
                return a + per_row(self.step_scale(j)) * self.velocity(a, j)

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
                return u + pullback(per_row(self.step_scale(j)) * u)[0]

            return jax.lax.cond(j < self.most_remaining, pull, lambda u: u, u), None

        u, _ = jax.lax.scan(body, cotangent, (jnp.arange(1, self.steps), states), reverse=True)
        return u


def ode_solution(velocity_fn: VelocityFn, obs: Any, a_t: Array, t: Array, steps: int) -> Array:
    """ODE(a_t): the unguided Euler solution from a_t at time t (B,) to 1, on the sampler's grid of
    T = `steps` (`_RemainingOde`), unclipped. qgf-chain's clean-action estimate and the target the
    distilled denoiser (`qgf.addons.distill`) is trained on."""
    ode = _RemainingOde(velocity_fn, obs, t, steps)
    a1, _ = ode.integrate_rest(a_t + per_row(ode.step_scale(0)) * velocity_fn(obs, a_t, t))
    return a1


# --------------------------------------------------------------------------------------------------
# Estimators: (velocity_fn, q_fn, obs, a_t, t, spec, key, extras) -> (g, v(s, a_t, t))


def estimate_none(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    return jnp.zeros_like(a_t), velocity_fn(obs, a_t, t)


def estimate_qgf(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    velocity = velocity_fn(obs, a_t, t)
    # J ≈ I (QGF Eq. 9): the one-step estimate is treated as a constant shift of a_t.
    a1_hat = a_t + per_row(1.0 - t) * jax.lax.stop_gradient(velocity)
    return critic_gradient(q_fn, obs, _maybe_clip_hat(a1_hat, spec)), velocity


def _jacobian_pullback(velocity_fn, q_fn, obs, a_t, t, spec):
    """One forward pass of â₁(a_t) with its VJP: returns (grad Q at â₁, pullback = u -> Jᵀu, v)."""
    a1_hat, pullback, velocity = jax.vjp(_one_step_denoiser(velocity_fn, obs, t), a_t, has_aux=True)
    return _chained_critic_gradient(q_fn, obs, a1_hat, spec), pullback, velocity


def estimate_qgf_jacobian(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    q_grad, pullback, velocity = _jacobian_pullback(velocity_fn, q_fn, obs, a_t, t, spec)
    (g,) = pullback(q_grad)  # Jᵀ grad Q: one vector-Jacobian product, never the d x d Jacobian
    return g, velocity


def estimate_qgf_regularized(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    q_grad, pullback, velocity = _jacobian_pullback(velocity_fn, q_fn, obs, a_t, t, spec)
    (jacobian_term,) = pullback(q_grad)
    return q_grad + spec.reg_eps * jacobian_term, velocity


def estimate_qgf_jacobian_smooth(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    velocity = velocity_fn(obs, a_t, t)
    a1_hat = a_t + per_row(1.0 - t) * velocity
    q_grad = _chained_critic_gradient(q_fn, obs, a1_hat, spec)
    # (1/K Σ_k J_k)ᵀ u = 1/K Σ_k J_kᵀ u: K VJPs, done as one VJP over K stacked copies of the batch.
    k, (batch, dim) = spec.smooth_k, a_t.shape
    perturbed = a_t[None] + spec.smooth_sigma * jax.random.normal(key, (k, batch, dim), a_t.dtype)
    denoise = _one_step_denoiser(velocity_fn, _tile_rows(obs, k), jnp.tile(t, k))
    _, pullback, _ = jax.vjp(denoise, perturbed.reshape(k * batch, dim), has_aux=True)
    (stacked,) = pullback(jnp.tile(q_grad, (k, 1)))
    return stacked.reshape(k, batch, dim).mean(axis=0), velocity


def estimate_qgf_jacobian_ortho(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # SVD needs the explicit per-sample d x d Jacobian: d forward-mode passes of the actor per row.
    def denoise_row(obs_row, a_row, t_row):
        one = jax.tree.map(lambda x: x[None], (obs_row, a_row, t_row))
        return _one_step_denoiser(velocity_fn, one[0], one[2])(one[1])[0][0]

    jacobians = jax.vmap(jax.jacfwd(denoise_row, argnums=1))(obs, a_t, t)  # (B, d, d)
    velocity = velocity_fn(obs, a_t, t)
    a1_hat = a_t + per_row(1.0 - t) * velocity
    q_grad = _chained_critic_gradient(q_fn, obs, a1_hat, spec)
    return jnp.einsum("bij,bi->bj", nearest_orthogonal(jacobians), q_grad), velocity


def estimate_qgf_chain(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    ode = _RemainingOde(velocity_fn, obs, t, spec.steps)
    velocity = velocity_fn(obs, a_t, t)
    a1, _ = ode.integrate_rest(a_t + per_row(ode.step_scale(0)) * velocity)
    a1 = jax.lax.stop_gradient(a1)  # J ≈ I: no differentiation through the remaining chain
    return critic_gradient(q_fn, obs, _maybe_clip_hat(a1, spec)), velocity


def estimate_bptt(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # g = (d ODE(a_t) / d a_t)ᵀ grad Q(ODE(a_t)), by the adjoint recursion through the Euler steps.
    ode = _RemainingOde(velocity_fn, obs, t, spec.steps)
    velocity, first_pullback = jax.vjp(lambda a: velocity_fn(obs, a, t), a_t)
    first_scale = per_row(ode.step_scale(0))
    a1, states = ode.integrate_rest(a_t + first_scale * velocity)
    u = ode.pull_back_rest(_chained_critic_gradient(q_fn, obs, a1, spec), states)
    return u + first_pullback(first_scale * u)[0], velocity


def estimate_at_noisy_action(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # QFQL's "OOD gradient": the critic is queried at the noisy a_t it never saw in training.
    return critic_gradient(q_fn, obs, a_t), velocity_fn(obs, a_t, t)


def estimate_robustq(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # RobustQ (QGF App. I): the gradient at the noisy a_t, of a critic that was trained there (Eq. 20).
    robust_q = extras["robust_q"]
    g = jax.grad(lambda a: jnp.sum(robust_q(obs, a, t)))(a_t)
    return g, velocity_fn(obs, a_t, t)


def estimate_cfgrl(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # CFGRL (QGF App. I): v_cfg = f + w (f_{o=1} - f), i.e. the sampler's v + w g with g = f_{o=1} - f.
    # Weight 0 is the base flow exactly; weight 1 is f_{o=1} up to float rounding.
    velocity = velocity_fn(obs, a_t, t)
    return extras["optimal_velocity"](obs, a_t, t) - velocity, velocity


def estimate_qgf_distill(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # QGF-Distill (App. C): â₁ = v_d(s, a_t, t), a learned ODE(a_t); J ≈ I, so v_d gets no derivative.
    a1_hat = jax.lax.stop_gradient(extras["denoiser"](obs, a_t, t))
    return critic_gradient(q_fn, obs, _maybe_clip_hat(a1_hat, spec)), velocity_fn(obs, a_t, t)


def estimate_qgf_jacobian_distill(velocity_fn, q_fn, obs, a_t, t, spec, key, extras):
    # QGF-Jacobian-Distill (App. C): Jᵀ grad Q with J = d v_d / d a_t, one VJP through the denoiser;
    # the clip is straight-through (or differentiated with clip_jacobian), as for qgf-jacobian.
    a1_hat, pullback = jax.vjp(lambda a: extras["denoiser"](obs, a, t), a_t)
    (g,) = pullback(_chained_critic_gradient(q_fn, obs, a1_hat, spec))
    return g, velocity_fn(obs, a_t, t)


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
    g, _ = estimator(spec.estimator).load()(velocity_fn, q_fn, obs, a_t, t, spec, key, extras)
    return g
