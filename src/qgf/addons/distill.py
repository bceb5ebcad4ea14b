"""QGF-Distill / QGF-Jacobian-Distill (QGF paper, App. C): a denoiser v_d(s, a_t, t) regressed onto
ODE(a_t), the full unguided Euler solution of the run's BC flow from a_t:
l = ||v_d(s, a_t, t) - ODE(a_t)||^2, with a_t the BC interpolant. Samplers ``qgf-distill`` (grad Q at
v_d's output, J ~ I) and ``qgf-jacobian-distill`` (J^T grad Q, one VJP through v_d).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from qgf.addons.base import Addon
from qgf.flow import interpolate
from qgf.guidance.estimators import estimators_of_addon
from qgf.guidance.gradients import ode_solution


def distill_loss(denoiser: Callable, velocity_fn: Callable, observations, actions, noise, times, steps: int):
    """mean_i ||v_d(s_i, a_t,i, t_i) - ODE(a_t,i)||^2 / d, with ODE the run's unguided Euler solution
    on T = `steps` (`qgf.guidance.gradients.ode_solution`), held fixed."""
    noisy_actions = interpolate(noise, actions, times)
    target = jax.lax.stop_gradient(ode_solution(velocity_fn, observations, noisy_actions, times, steps))
    return jnp.mean(jnp.square(denoiser(observations, noisy_actions, times) - target))


@dataclasses.dataclass(frozen=True)
class Distill(Addon):
    """v_d(s, a_t, t) = a_t + (1 - t) u(s, a_t, t), u shaped like the run's actor and started from its
    BC flow parameters: at initialisation v_d is QGF's one-step estimate (Eq. 7), and training moves it
    to ODE(a_t). Any function of (s, a_t, t) can be written so for t < 1."""

    name = "distill"
    summary = "denoiser v_d(s, a_t, t) regressed onto ODE(a_t) of the run's BC flow (QGF App. C)"
    samplers = estimators_of_addon(name)
    provides = ("denoiser",)

    def denoiser(self, params) -> Callable:
        network = self.velocity_network()

        def denoise(observations, noisy_actions, times):
            residual = network.apply(params, observations, noisy_actions, times)
            return noisy_actions + (1.0 - times)[:, None] * residual

        return denoise

    def init(self, base, key, batch):
        params, copied = self.init_from_actor(base, key, batch["observations"], batch["actions"])
        return params, {"initialised_from_actor": jnp.asarray(copied)}

    def loss(self, params, constants, base, batch, key):
        noise_key, time_key = jax.random.split(key)
        actions = batch["actions"]
        noise = jax.random.normal(noise_key, actions.shape, actions.dtype)
        times = self.flow_times(time_key, actions.shape[0])
        loss = distill_loss(
            self.denoiser(params),
            base.behavior_velocity_fn,
            batch["observations"],
            actions,
            noise,
            times,
            self.run_config.flow_steps,
        )
        return loss, {"distill_loss": loss}

    def extras(self, params, constants, base):
        return {"denoiser": self.denoiser(params)}
