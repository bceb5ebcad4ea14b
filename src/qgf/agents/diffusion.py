"""`dac` and `qsm-bc`: DDPM (noise-prediction) policies trained with the critic's action gradient
at noisy actions (QGF App. I, Eqs. 21-22; QAM App. C, Eqs. 46-56).

Both share the variance-preserving schedule of QAM Eqs. 46-47 (b_min = 0.1, b_max = 10, T =
`config.flow_steps` diffusion steps), the training draw i ~ U{0, ..., T-1}, eps ~ N(0, I),
a^i = sqrt(abar_i) a + sqrt(1 - abar_i) eps, and a noise predictor f(s, a^i, i): the flow
policy's network (`build_velocity_field`) with the step index fed as the time input i / T. Index
i = 0 is the least noisy level, i = T - 1 the noisiest (abar_{T-1} = exp(-5.05) for any T).

The Q gradient g = grad_{a^i} Q(s, a^i) is taken at the noisy action, with the guidance (EMA
target) critic held fixed (`Agent.target_q`; QAM App. C: the target critic's gradient helps
stability):

- DAC (QGF Eq. 22): || eps - g / (2 alpha) - f ||^2 (with `dac_gradient_scale=noise-std`,
  g scaled by sqrt(1 - abar_i) as in the authors' code). QAM Eqs. 53-54 implement DAC as
  alpha ||eps - f||^2 + f . g, which is alpha || eps - g / (2 alpha) - f ||^2 + C; we minimise
  the normalised form (divided by alpha), so alpha (`dac_alpha`) is the behaviour weight of QGF
  Table 3 and 1/beta = 1 / (2 alpha).
- QSM+BC (QGF Eq. 21 + eta L_DDPM, QAM Eq. 50): || -tau_inv g - f ||^2 + eta || eps - f ||^2.

Sampling starts from a^{T-1} ~ N(0, I) and runs i = T-1, ..., 0, one network call per level;
the last step (i = 0) adds no noise. QSM uses QAM Eq. 51 (clip every step); DAC uses Eqs. 55-56
read as the clipped x0 estimate followed by the posterior mean of Ho et al. (2020) Eq. 7 with std
sqrt(beta_i). Every choice left open by the papers is in docs/fidelity.md, "DAC and QSM-BC".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qgf.agents.base import Agent, Batch, Params
from qgf.config import TrainConfig
from qgf.flow import build_velocity_field, chunk_step_weights, init_velocity_field

B_MIN, B_MAX = 0.1, 10.0  # QAM Eq. 46, following IDQL (Hansen-Estruch et al., 2023)


class DiffusionSchedule(NamedTuple):
    """Per-level constants (T,) of the variance-preserving schedule, float32."""

    betas: jnp.ndarray  # beta_i, QAM Eq. 46
    alpha_bars: jnp.ndarray  # abar_i = prod_{j <= i} (1 - beta_j), QAM Eq. 47
    alpha_bars_prev: jnp.ndarray  # abar_{i-1}, with abar_{-1} = 1 (the clean action)


def variance_preserving_schedule(num_steps: int) -> DiffusionSchedule:
    """QAM Eqs. 46-47 for T = `num_steps`, computed in float64 then stored as float32."""
    i = np.arange(num_steps, dtype=np.float64)
    betas = 1.0 - np.exp(-B_MIN / num_steps - (B_MAX - B_MIN) * (2.0 * i + 1.0) / (2.0 * num_steps**2))
    alpha_bars = np.cumprod(1.0 - betas)
    alpha_bars_prev = np.concatenate([[1.0], alpha_bars[:-1]])
    return DiffusionSchedule(*(jnp.asarray(x, jnp.float32) for x in (betas, alpha_bars, alpha_bars_prev)))


def step_input(indices: jnp.ndarray, num_steps: int) -> jnp.ndarray:
    """The network's time input for diffusion level i: i / T in [0, 1) (not a flow time)."""
    return jnp.asarray(indices, jnp.float32) / num_steps


def draw_training_noise(key: jax.Array, batch_size: int, chunk_dim: int, num_steps: int):
    """The random draws of one DDPM training batch: levels i ~ U{0..T-1} (B,), eps (B, d)."""
    index_key, noise_key = jax.random.split(key)
    indices = jax.random.randint(index_key, (batch_size,), 0, num_steps)
    noise = jax.random.normal(noise_key, (batch_size, chunk_dim), jnp.float32)
    return indices, noise


def q_action_gradient(q_fn: Callable, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
    """grad_a Q(s, a) per row (B, d), held fixed: a regression target, never differentiated."""
    gradient = jax.grad(lambda a: jnp.sum(q_fn(observations, a)))(actions)
    return jax.lax.stop_gradient(gradient)


def weighted_mean_square(residual: jnp.ndarray, weights: jnp.ndarray | None) -> jnp.ndarray:
    """||residual||^2 / d averaged over rows; with weights (B, d), over the weighted coordinates."""
    if weights is None:
        return jnp.mean(jnp.square(residual))
    return jnp.sum(weights * jnp.square(residual)) / jnp.maximum(jnp.sum(weights), 1.0)


# ------------------------------------------------------------------ reverse (denoising) steps
# Each maps (a^i, f(s, a^i, i), noise z, level i) to a^{i-1}; the caller zeroes z at i = 0.


def step_std(schedule: DiffusionSchedule, index, posterior: bool = False):
    """The std of a reverse step's noise: sqrt(beta_i), as both papers' samplers (QAM Eqs. 51, 56;
    Ho et al.'s first choice), or with `posterior` Ho et al.'s other choice, the true posterior's
    sqrt(beta~_i) = sqrt(beta_i (1 - abar_{i-1}) / (1 - abar_i)) (smaller; equal as T grows)."""
    beta = schedule.betas[index]
    if not posterior:
        return jnp.sqrt(beta)
    alpha_bar, alpha_bar_prev = schedule.alpha_bars[index], schedule.alpha_bars_prev[index]
    return jnp.sqrt(beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar))


def qsm_reverse_step(schedule: DiffusionSchedule, noisy, prediction, noise, index, posterior: bool = False):
    """QAM Eq. 51: Clip[(a^i - beta_i / sqrt(1 - abar_i) f) / sqrt(1 - beta_i) + sqrt(beta_i) z]
    (`posterior`: sqrt(beta~_i) z, `step_std`)."""
    beta, alpha_bar = schedule.betas[index], schedule.alpha_bars[index]
    mean = (noisy - beta / jnp.sqrt(1.0 - alpha_bar) * prediction) / jnp.sqrt(1.0 - beta)
    return jnp.clip(mean + step_std(schedule, index, posterior) * noise, -1.0, 1.0)


def dac_reverse_step(schedule: DiffusionSchedule, noisy, prediction, noise, index, posterior: bool = False):
    """QAM Eqs. 55-56 as DAC samples: the x0 estimate (a^i - sqrt(1 - abar_i) f) / sqrt(abar_i),
    clipped to [-1, 1], then the posterior mean of q(a^{i-1} | a^i, x0) (Ho et al. Eq. 7) plus
    sqrt(beta_i) z (DAC's std in place of the posterior's; `posterior`: the posterior's)."""
    beta = schedule.betas[index]
    alpha_bar, alpha_bar_prev = schedule.alpha_bars[index], schedule.alpha_bars_prev[index]
    denoised = jnp.clip((noisy - jnp.sqrt(1.0 - alpha_bar) * prediction) / jnp.sqrt(alpha_bar), -1.0, 1.0)
    mean = (
        jnp.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar) * denoised
        + jnp.sqrt(1.0 - beta) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * noisy
    )
    return mean + step_std(schedule, index, posterior) * noise


def reverse_chain(
    noise_predictor: Callable,
    reverse_step: Callable,
    schedule: DiffusionSchedule,
    observations: jnp.ndarray,
    noises: jnp.ndarray,
) -> jnp.ndarray:
    """Denoise from a^{T-1} = noises[0] through levels T-1, ..., 0 with noises[1:] (T, B, d) as the
    per-step z (the one of level 0 is ignored: the last step adds no noise); clip to [-1, 1]."""
    num_steps = schedule.betas.shape[0]

    def one_level(noisy, inputs):
        index, noise = inputs
        times = jnp.full((noisy.shape[0],), step_input(index, num_steps))
        prediction = noise_predictor(observations, noisy, times)
        return reverse_step(schedule, noisy, prediction, jnp.where(index > 0, noise, 0.0), index), None

    levels = jnp.arange(num_steps - 1, -1, -1)
    actions, _ = jax.lax.scan(one_level, noises[0], (levels, noises[1:]))
    return jnp.clip(actions, -1.0, 1.0)


class NoisedBatch(NamedTuple):
    """One DDPM training batch: what both losses regress on."""

    noise: jnp.ndarray  # eps (B, d)
    prediction: jnp.ndarray  # f(s, a^i, i) (B, d), differentiable in the actor's parameters
    q_gradient: jnp.ndarray  # grad_{a^i} Q(s, a^i) (B, d), held fixed
    weights: jnp.ndarray | None  # per-coordinate weights (B, d) or None
    noise_std: jnp.ndarray  # sqrt(1 - abar_i) (B, 1): the std of the noise in a^i


class DiffusionAgent(Agent):
    """Shared part of the DDPM agents: the noise predictor ('actor'), its training batch and the
    sampler. Subclasses set `reverse_step` and `policy_losses`."""

    clipped_networks = ("actor",)
    reverse_step: ClassVar[Callable] = staticmethod(qsm_reverse_step)

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        return {"actor": init_velocity_field(config, key, observations, actions)}

    @property
    def schedule(self) -> DiffusionSchedule:
        return variance_preserving_schedule(self.config.flow_steps)

    def noise_predictor(self, params: Params) -> Callable:
        """f(obs (B,D), a^i (B,d), i/T (B,)) -> (B,d) at `params`."""
        return functools.partial(build_velocity_field(self.config, self.chunk_dim).apply, params["actor"])

    def noised_batch(self, params: Params, batch: Batch, key: jax.Array) -> NoisedBatch:
        config, actions, observations = self.config, batch["actions"], batch["observations"]
        indices, noise = draw_training_noise(key, actions.shape[0], self.chunk_dim, config.flow_steps)
        alpha_bar = self.schedule.alpha_bars[indices][:, None]
        noisy = jnp.sqrt(alpha_bar) * actions + jnp.sqrt(1.0 - alpha_bar) * noise
        prediction = self.noise_predictor(params)(observations, noisy, step_input(indices, config.flow_steps))
        weights = chunk_step_weights(batch["valid"], self.action_dim) if config.bc_mask_invalid else None
        q_gradient = q_action_gradient(self.target_q, observations, noisy)
        return NoisedBatch(noise, prediction, q_gradient, weights, jnp.sqrt(1.0 - alpha_bar))

    @staticmethod
    def gradient_metrics(noised: NoisedBatch) -> dict:
        return {
            "ddpm_loss": weighted_mean_square(noised.noise - noised.prediction, noised.weights),
            "q_grad_norm": jnp.mean(jnp.linalg.norm(noised.q_gradient, axis=-1)),
        }

    def policy_actions_from(self, params: Params, observations, key):
        num_steps = self.config.flow_steps
        noises = jax.random.normal(key, (num_steps + 1, observations.shape[0], self.chunk_dim), jnp.float32)
        step = functools.partial(type(self).reverse_step, posterior=self.config.ddpm_step_std == "posterior")
        return reverse_chain(self.noise_predictor(params), step, self.schedule, observations, noises)


class DACAgent(DiffusionAgent):
    """Diffusion Actor-Critic: DDPM regression onto eps - grad Q / (2 alpha) (QGF Eq. 22)."""

    name = "dac"
    summary = "DDPM policy regressed onto eps - grad_a Q / (2 alpha) at noisy actions (DAC, QGF Eq. 22)"
    reverse_step = staticmethod(dac_reverse_step)
    contract_losses = ("dac_loss",)

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        noised = self.noised_batch(params, batch, key)
        inverse_temperature = 1.0 / (2.0 * self.config.dac_alpha)  # 1/beta of Eq. 22 (QAM Eq. 53)
        push = inverse_temperature * noised.q_gradient
        if self.config.dac_gradient_scale == "noise-std":  # the authors' code: sqrt(1 - abar_i) g
            push = noised.noise_std * push
        target = noised.noise - push
        dac_loss = weighted_mean_square(target - noised.prediction, noised.weights)
        return dac_loss, {"dac_loss": dac_loss, **self.gradient_metrics(noised)}


class QSMBCAgent(DiffusionAgent):
    """Q-score matching with a DDPM behaviour term: L_QSM + eta L_DDPM (QGF Eq. 21, QAM Eq. 50)."""

    name = "qsm-bc"
    summary = "DDPM policy regressed onto -tau_inv grad_a Q at noisy actions plus eta x DDPM (QSM+BC, Eq. 21)"
    reverse_step = staticmethod(qsm_reverse_step)
    contract_losses = ("qsm_bc_loss",)

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        noised = self.noised_batch(params, batch, key)
        target = -self.config.qsm_inv_temperature * noised.q_gradient
        qsm_loss = weighted_mean_square(target - noised.prediction, noised.weights)
        metrics = {"qsm_loss": qsm_loss, **self.gradient_metrics(noised)}
        total = qsm_loss + self.config.qsm_bc_weight * metrics["ddpm_loss"]
        return total, {**metrics, "qsm_bc_loss": total}


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {
    "dac": {"class": "DACAgent", "order": 40, "sections": ["dac", "ddpm-sampler", "policy-optimiser"]},
    "qsm-bc": {
        "class": "QSMBCAgent",
        "order": 50,
        "sections": ["qsm-bc", "ddpm-sampler", "policy-optimiser"],
    },
}
CONFIG_SECTIONS = {
    "ddpm-sampler": {
        "title": "The DDPM policies' reverse steps (dac, qsm-bc)",
        "settings": {
            "ddpm_step_std": {
                "default": "beta",
                "choices": ["beta", "posterior"],
                "help": "std of each reverse step's noise: 'beta' sqrt(beta_i), as QAM Eqs. 51/56 and "
                "both authors' codes; 'posterior' the true posterior's sqrt(beta~_i), smaller at few "
                "steps (docs/fidelity.md, 'DAC and QSM-BC')",
            },
        },
    },
    "dac": {
        "title": "DAC's DDPM policy (QGF Eq. 22; QAM Eqs. 53-56)",
        "settings": {
            "dac_alpha": {
                "default": 100.0,
                "help": "dac: behaviour weight; Eq. 22's 1/beta = 1/(2 alpha) (QAM Eq. 53/54's eta)",
                "above": 0.0,
            },
            "dac_gradient_scale": {
                "default": "none",
                "choices": ["none", "noise-std"],
                "help": "dac: 'none' regresses onto eps - g/(2 alpha) (QGF Eq. 22, QAM Eq. 53 as printed); "
                "'noise-std' onto eps - sqrt(1 - abar_i) g/(2 alpha) (the authors' code)",
            },
        },
    },
    "qsm-bc": {
        "title": "QSM+BC's DDPM policy (QGF Eq. 21; QAM Eqs. 48-51)",
        "settings": {
            "qsm_inv_temperature": {"default": 0.1, "help": "qsm-bc: tau_inv = 1/beta of Eq. 21", "min": 0.0},
            "qsm_bc_weight": {
                "default": 10.0,
                "help": "qsm-bc: weight eta (the paper's alpha) of the DDPM term; 0 is QSM",
                "min": 0.0,
            },
        },
    },
}
