"""The sampler loop of `qgf.guidance` (QGF paper, Algorithm 1), best-of-N and GradStep.

    a_0 ~ N(0, I);  for k < T: t = k / T;  a <- a + (v(s, a, t) + w * g) / T;  return a_1

One `lax.scan` over the T steps; the estimator's function (`qgf.guidance.estimators` names it,
`qgf.guidance.gradients` holds it) computes g and the velocity at a_t. We return clip(a_1, -1, 1):
the clip is ours, not Algorithm 1's; ``info["unclipped"]`` keeps a_1. Best-of-N wraps any
estimator; GradStep runs the unguided sampler and then ascends the critic.

Imports JAX, `qgf.errors` and the two other `qgf.guidance` modules only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from qgf.errors import QGFError
from qgf.guidance.estimators import POLICY_SAMPLER, SamplerSpec, check_extras, estimator
from qgf.guidance.gradients import Extras, QFn, VelocityFn, critic_gradient, per_row

Array = jax.Array


def row_weights(weight: Array | float, batch: int, dtype: Any) -> Array:
    """`weight` as one guidance weight per row, (B,): a scalar is repeated; an array must hold one
    weight per observation row (a one-line error otherwise, not a broadcasting error)."""
    weight = jnp.asarray(weight, dtype)
    if weight.ndim > 1 or (weight.ndim == 1 and weight.shape[0] not in (1, batch)):
        raise QGFError(
            f"weight has shape {tuple(weight.shape)} for {batch} observation rows; give a scalar or one "
            f"weight per row (shape ({batch},))"
        )
    return jnp.broadcast_to(weight, (batch,))


def _repeat_rows(tree: Any, n: int) -> Any:
    """Each row repeated n times in place: rows [x0, x0, ..., x1, x1, ...] (jnp.repeat on axis 0)."""
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), tree)


def _denoise(velocity_fn, q_fn, obs, noise, weight, spec, key, keep_trajectory, extras):
    """Algorithm 1 from `noise` (B, d); returns (a_1, unclipped as Algorithm 1 returns it, and the
    trajectory or None)."""
    batch = noise.shape[0]
    step_size = 1.0 / spec.steps
    record = estimator(spec.estimator)
    guided, estimate = record.guided, record.load()

    def step(a: Array, k: Array) -> tuple[Array, Array | None]:
        t = jnp.full((batch,), k * step_size, a.dtype)
        if guided:
            g, velocity = estimate(velocity_fn, q_fn, obs, a, t, spec, jax.random.fold_in(key, k), extras)
            a = a + step_size * (velocity + per_row(weight) * g)
        else:  # BC: never touches the critic
            a = a + step_size * velocity_fn(obs, a, t)
        return a, (a if keep_trajectory else None)

    a1, path = jax.lax.scan(step, noise, jnp.arange(spec.steps))
    trajectory = jnp.concatenate([noise[None], path]) if keep_trajectory else None
    return a1, trajectory


def _gradient_ascent(q_fn, obs, actions, step_sizes, num_steps):
    """GradStep (paper Algorithm 2): L steps of a <- a + alpha * grad_a Q(s, a)."""

    def ascend(_, a):
        return a + per_row(step_sizes) * critic_gradient(q_fn, obs, a)

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
    weight = row_weights(weight, batch, dtype)
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
        return compiled(obs, key, row_weights(weight, batch, jnp.result_type(float)))

    return sampler
