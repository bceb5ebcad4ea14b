"""RobustQ (QGF paper, App. I): a critic Q_r(s, a_t, t) of *noisy* actions, regressed onto the run's
critic at the clean chunk (Eq. 20), l = (Q_r(s, a_t, t) - Q(s, a))^2, with a_t = (1 - t) z + t a the
BC interpolant. Sampler ``robustq`` guides with grad_{a_t} Q_r(s, a_t, t).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from qgf.addons.base import Addon
from qgf.flow import interpolate
from qgf.guidance.estimators import estimators_of_addon


def robust_q_loss(robust_q: Callable, q_fn: Callable, observations, actions, noise, times):
    """Eq. 20 averaged over the batch: mean_i (Q_r(s_i, a_t,i, t_i) - Q(s_i, a_i))^2, where
    a_t = (1 - t) z + t a. The target Q(s, a) is the frozen run's critic (stop_gradient)."""
    target = jax.lax.stop_gradient(q_fn(observations, actions))
    prediction = robust_q(observations, interpolate(noise, actions, times), times)
    return jnp.mean(jnp.square(prediction - target)), target


@dataclasses.dataclass(frozen=True)
class RobustQ(Addon):
    """Q_r(s, a_t, t) = shift + scale * MLP([s, a_t, features(t)]), with shift and scale the mean
    and standard deviation of the run's Q on dataset chunks, fixed at initialisation (so the MLP
    regresses onto unit-scale targets whatever the reward scale and discount)."""

    name = "robustq"
    summary = "critic Q(s, a_t, t) of noisy actions regressed onto the run's Q(s, a) (QGF Eq. 20)"
    samplers = estimators_of_addon(name)
    provides = ("robust_q",)
    widths_from = "critic_hidden_dims"  # a critic: the run's critic widths unless set

    def robust_q(self, params, constants) -> Callable:
        network = self.velocity_network(output_dim=1)

        def q(observations, noisy_actions, times):
            raw = network.apply(params, observations, noisy_actions, times)[:, 0]
            return constants["shift"] + constants["scale"] * raw

        return q

    def init(self, base, key, batch):
        q = jax.lax.stop_gradient(base.q_fn(batch["observations"], batch["actions"]))
        constants = {"shift": jnp.mean(q), "scale": jnp.maximum(jnp.std(q), 1e-3)}
        network = self.velocity_network(output_dim=1)
        times = jnp.zeros((batch["actions"].shape[0],), jnp.float32)
        return network.init(key, batch["observations"], batch["actions"], times), constants

    def loss(self, params, constants, base, batch, key):
        noise_key, time_key = jax.random.split(key)
        actions = batch["actions"]
        noise = jax.random.normal(noise_key, actions.shape, actions.dtype)
        times = self.flow_times(time_key, actions.shape[0])
        loss, target = robust_q_loss(
            self.robust_q(params, constants), base.q_fn, batch["observations"], actions, noise, times
        )
        # In units of the target's spread: 1 is as good as predicting the mean.
        return loss, {"robustq_loss": loss, "robustq_relative_loss": loss / jnp.square(constants["scale"])}

    def extras(self, params, constants, base):
        return {"robust_q": self.robust_q(params, constants)}
