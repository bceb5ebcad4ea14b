"""Fig. 3 of the QGF paper: noise sensitivity of the gradient estimators.

cos(G(s, a_t), G(s, a_t + eps)) for every estimator G, with a_t on the unguided (BC) denoising path
at each flow step t and eps ~ N(0, sigma^2 I) for a few scales sigma.

Imports JAX, `qgf.guidance` and `qgf.analysis.methods`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qgf.analysis.methods import PolicyAndCritic
from qgf.guidance.gradients import estimate_gradient
from qgf.guidance.sampler import sample_with_info

Array = jax.Array


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
