"""The QAM family: Q-learning with adjoint matching (Li & Levine; QAM paper §4, Alg. 1, App. C).

Networks (all policy networks see the chunk flattened to d = h*A):

- 'actor': the behaviour flow f_beta(s, a^u, u), trained by flow matching only (QAM Eq. 17, at the
  same time as everything else, §4 "Practical considerations"). It is `behavior_velocity_fn`, so
  every test-time sampler of `qgf.guidance` guides a QAM run's f_beta with the run's critic (the
  QGF paper's Fig. 10 setting);
- 'residual': the residual velocity field f_theta(s, a^u, u); the policy's flow is f_beta + f_theta
  (Eqs. 18-20). Its output layer starts at zero, so a fresh run's policy is the behaviour flow.

One QAM update of f_theta (Alg. 1), with h = 1/T, grid u_k = k h and coefficient times
ubar_k = u_k + c h (c = `qam_time_offset`, because Eq. 24's 1/u diverges at u = 0):

    a^{k+1} = a^k + h (2 f(s, a^k, u_k) - a^k / ubar_k) + sqrt(h) sigma_k z^k,  k < T-1   (Eq. 24)
    a^T     = a^{T-1} + h f(s, a^{T-1}, u_{T-1})        (the last step is the deterministic ODE step)
    sigma_k = sqrt(2 (1 - ubar_k) / ubar_k),   f = f_beta + f_theta,   a^0, z^k ~ N(0, I)

    g^T = -tau grad_a Q(s, a^T)                                                    (Alg. 1, §4)
    g^k = g^{k+1} + h VJP(grad_a [2 f_beta(s, a, u_k) - a / ubar_k] at a^k, g^{k+1})       (Eq. 25)

    L_AM(theta) = mean_batch sum_k || 2 f_theta(s, a^k, u_k) / sigma_k + sigma_k g^k ||^2   (Alg. 1)

The lean adjoint (Eqs. 13/22/25) takes vector-Jacobian products through f_beta only, never f_theta;
on the last step it is the adjoint of the ODE step (g + h J_beta^T g). It is exactly the gradient
of -tau Q(s, a^T) with respect to a^k through the discretised dynamics above with f_theta's output
held fixed (tests/test_agents_qam.py checks this against autodiff and finite differences). The
states and adjoints are regression targets: stop_gradient, so L_AM moves f_theta only.

Q is the guidance critic aggregated over its heads (`Agent.target_q`, held fixed). Acting (and, with
`critic=td`, the critic's backups, Eq. 23/26) uses the Euler ODE of f_beta + f_theta, clipped.

Variants, otherwise identical:

- `bam` (§5): the basic adjoint of Eqs. 11-12: the gradient of the cost-to-go
  sum_{j>=k} h ||u_j||^2 / 2 - tau Q(s, a^T), u_j = 2 f_theta(s, a^j, u_j) / sigma_j, through the full
  dynamics (f_beta + f_theta), one VJP per step; its loss is Eq. 12 (the same regression);
- `qam-fql` (Eq. 29): a one-step policy mu_omega(s, z) ('onestep') trained by
  alpha * mean ||mu(s, z) - ODE(f, z)||^2 - Q(s, clip mu(s, z)) (ODE from the same z, clipped,
  held fixed); it acts and gives the td backups;
- `qam-edit` (Eq. 30; App. C Eq. 78): a tanh-Gaussian edit policy pi_omega(Delta | s, a~) ('edit')
  on the QAM flow's output a~ = ODE(f, z); the action is clip(a~ + sigma_a Delta), Delta in the
  L-infinity unit ball; loss E[alpha_ent log pi(Delta) - Q(s, clip(a~ + sigma_a Delta))] with the
  SAC temperature alpha_ent ('edit_temperature') tuned to a target entropy.

Open choices (time grid, clipping, co-training of f_beta, ...): docs/fidelity.md, "QAM family".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qgf.agents.base import Agent, Batch, Params
from qgf.agents.fql import OneStepPolicy, build_onestep_policy
from qgf.agents.gaussian_policy import GaussianEdit, tanh_gaussian_sample  # noqa: F401 (re-exported)
from qgf.config import TrainConfig
from qgf.flow import bc_flow_loss, build_velocity_field, flow_policy_actions, init_velocity_field

VelocityFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]

# ------------------------------------------------------------------------------ the memoryless SDE


class MemorylessSchedule(NamedTuple):
    """Per-step coefficients (T,) of the discretised memoryless SDE (Eq. 24) on the grid u_k = k h.

    Step k maps a -> a + h (velocity_scale_k * f(s, a, u_k) - decay_k * a) + noise_scale_k * z;
    `sigmas` are Eq. 24's sigma_k, used by the adjoint-matching loss at every step.
    """

    times: jnp.ndarray
    sigmas: jnp.ndarray
    velocity_scale: jnp.ndarray
    decay: jnp.ndarray
    noise_scale: jnp.ndarray
    step_size: float


def memoryless_schedule(num_steps: int, time_offset: float, dtype=jnp.float32) -> MemorylessSchedule:
    """Eq. 24 on T = `num_steps` steps: u_k = k/T; 1/u and sigma_u at ubar_k = u_k + offset/T,
    sigma_k = sqrt(2 (1 - ubar_k) / ubar_k). Steps k < T-1 are the SDE step (drift 2f - a/ubar,
    noise sqrt(h) sigma_k); the last is the ODE step a + h f, where Eq. 24's noise would leave an
    O(h) residual in a^1 (docs/fidelity.md)."""
    h = 1.0 / num_steps
    times = np.arange(num_steps) * h
    coefficient_times = times + time_offset * h
    sigmas = np.sqrt(2.0 * (1.0 - coefficient_times) / coefficient_times)
    last = np.arange(num_steps) == num_steps - 1
    return MemorylessSchedule(
        times=jnp.asarray(times, dtype),
        sigmas=jnp.asarray(sigmas, dtype),
        velocity_scale=jnp.asarray(np.where(last, 1.0, 2.0), dtype),
        decay=jnp.asarray(np.where(last, 0.0, 1.0 / coefficient_times), dtype),
        noise_scale=jnp.asarray(np.where(last, 0.0, np.sqrt(h) * sigmas), dtype),
        step_size=h,
    )


def _step_coefficients(schedule: MemorylessSchedule):
    return (schedule.times, schedule.velocity_scale, schedule.decay)


def _row_times(time: jnp.ndarray, batch: int, dtype) -> jnp.ndarray:
    return jnp.full((batch,), time, dtype)


def sde_rollout(
    velocity_fn: VelocityFn,
    observations: jnp.ndarray,
    initial: jnp.ndarray,
    step_noise: jnp.ndarray,
    schedule: MemorylessSchedule,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The memoryless SDE of `velocity_fn` (f_beta + f_theta) from a^0 = `initial` (B, d) with
    step noise z^k = `step_noise` (T, B, d). Returns the states a^0..a^{T-1} (T, B, d) and a^T."""
    h = schedule.step_size
    batch = initial.shape[0]

    def step(a, coefficients):
        time, velocity_scale, decay, noise_scale, noise = coefficients
        velocity = velocity_fn(observations, a, _row_times(time, batch, a.dtype))
        return a + h * (velocity_scale * velocity - decay * a) + noise_scale * noise, a

    final, states = jax.lax.scan(
        step, initial, (*_step_coefficients(schedule), schedule.noise_scale, step_noise)
    )
    return states, final


def lean_adjoint(
    base_velocity_fn: VelocityFn,
    observations: jnp.ndarray,
    states: jnp.ndarray,
    terminal_adjoint: jnp.ndarray,
    schedule: MemorylessSchedule,
) -> jnp.ndarray:
    """Eq. 25 backwards from g^T = `terminal_adjoint` (B, d) along `states` (T, B, d): one VJP of
    f_beta per step, never touching f_theta. Returns g^0..g^{T-1} (T, B, d)."""
    h = schedule.step_size
    batch = terminal_adjoint.shape[0]

    def step(adjoint, inputs):
        state, time, velocity_scale, decay = inputs
        times = _row_times(time, batch, state.dtype)
        _, pull_back = jax.vjp(lambda a: base_velocity_fn(observations, a, times), state)
        (velocity_pullback,) = pull_back(adjoint)
        adjoint = adjoint + h * (velocity_scale * velocity_pullback - decay * adjoint)
        return adjoint, adjoint

    _, adjoints = jax.lax.scan(step, terminal_adjoint, (states, *_step_coefficients(schedule)), reverse=True)
    return adjoints


def control_cost(residual_velocity: jnp.ndarray, sigma) -> jnp.ndarray:
    """||u||^2 / 2 per row, u = 2 f_theta / sigma: the running cost whose SOC the loss of Eq. 12
    solves (its optimum is u = -sigma g)."""
    return 0.5 * jnp.sum(jnp.square(2.0 * residual_velocity / sigma), axis=-1)


def basic_adjoint(
    base_velocity_fn: VelocityFn,
    residual_velocity_fn: VelocityFn,
    observations: jnp.ndarray,
    states: jnp.ndarray,
    terminal_adjoint: jnp.ndarray,
    schedule: MemorylessSchedule,
) -> jnp.ndarray:
    """The basic adjoint (Eq. 11, BAM): g^k = d/da^k [sum_{j>=k} h control_cost_j - tau Q(s, a^T)]
    through the full discretised dynamics of f_beta + f_theta, one VJP (of both fields and the
    running cost) per step. Returns g^0..g^{T-1} (T, B, d)."""
    h = schedule.step_size
    batch = terminal_adjoint.shape[0]

    def step(adjoint, inputs):
        state, time, velocity_scale, decay, sigma = inputs
        times = _row_times(time, batch, state.dtype)

        def transition_and_cost(a):
            residual = residual_velocity_fn(observations, a, times)
            velocity = base_velocity_fn(observations, a, times) + residual
            return a + h * (velocity_scale * velocity - decay * a), h * control_cost(residual, sigma)

        _, pull_back = jax.vjp(transition_and_cost, state)
        (adjoint,) = pull_back((adjoint, jnp.ones((batch,), state.dtype)))
        return adjoint, adjoint

    _, adjoints = jax.lax.scan(
        step,
        terminal_adjoint,
        (states, *_step_coefficients(schedule), schedule.sigmas),
        reverse=True,
    )
    return adjoints


def adjoint_matching_loss(
    residual_velocities: jnp.ndarray, adjoints: jnp.ndarray, sigmas: jnp.ndarray
) -> jnp.ndarray:
    """Alg. 1's L(theta) = sum_k ||2 f_theta^k / sigma_k + sigma_k g^k||^2, summed over the chunk's
    coordinates and averaged over rows; inputs (T, B, d), sigmas (T,). With the lean adjoint this is
    Eq. 14/21, with the basic one Eq. 12 (both residual form: f_theta = f - f_beta)."""
    sigmas = sigmas[:, None, None]
    residuals = 2.0 * residual_velocities / sigmas + sigmas * adjoints
    return jnp.mean(jnp.sum(jnp.square(residuals), axis=(0, 2)))


# ------------------------------------------------------------------------------ extra policy networks


def _zero_output_layer(params):
    """`params` of a VelocityField with its output Dense set to zero (f_theta starts at 0)."""
    mlp = dict(params["params"]["MLP_0"])
    last = max((name for name in mlp if name.startswith("Dense_")), key=lambda name: int(name.split("_")[1]))
    mlp[last] = jax.tree.map(jnp.zeros_like, mlp[last])
    return {**params, "params": {**params["params"], "MLP_0": mlp}}


# ------------------------------------------------------------------------------ the agents


class QAMAgent(Agent):
    """Behaviour flow f_beta ('actor') + residual f_theta ('residual') trained by adjoint matching
    with the lean adjoint (QAM Alg. 1); acts with the ODE of f_beta + f_theta."""

    name = "qam"
    summary = "Q-learning with adjoint matching: residual flow on a BC flow, lean adjoint (QAM paper)"
    # The paper clips the policy's parameter gradient element-wise at 1 (§4, Table 3);
    # f_beta is pure behaviour cloning and stays unclipped like every other BC flow.
    clipped_networks = ("residual",)
    # f_theta's regression targets (the adjoints) come from the critic's gradient
    contract_losses: ClassVar[tuple[str, ...]] = ("bc_loss",)
    contract_fixed_critic_losses: ClassVar[tuple[str, ...]] = ("adjoint_matching_loss",)
    # 'lean' (Eq. 14, qam) or 'basic' (Eq. 12, bam)
    adjoint_kind: ClassVar[str] = "lean"

    # ------------------------------------------------------------------ networks

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        actor_key, residual_key, extra_key = jax.random.split(key, 3)
        return {
            "actor": init_velocity_field(config, actor_key, observations, actions),
            "residual": _zero_output_layer(init_velocity_field(config, residual_key, observations, actions)),
            **cls.init_extra_params(config, extra_key, observations, actions),
        }

    @classmethod
    def init_extra_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        """The variant's own networks beyond f_beta and f_theta."""
        return {}

    def velocity(self, params: Params, network: str) -> VelocityFn:
        return functools.partial(build_velocity_field(self.config, self.chunk_dim).apply, params[network])

    def policy_velocity(self, params: Params) -> VelocityFn:
        """f = f_beta + f_theta: the QAM policy's flow."""
        base, residual = self.velocity(params, "actor"), self.velocity(params, "residual")
        return lambda observations, actions, times: (
            base(observations, actions, times) + residual(observations, actions, times)
        )

    @property
    def behavior_velocity_fn(self) -> VelocityFn:
        """f_beta with the current parameters: what every test-time sampler guides."""
        return self.velocity(self.params, "actor")

    @property
    def schedule(self) -> MemorylessSchedule:
        return memoryless_schedule(self.config.flow_steps, self.config.qam_time_offset)

    def flow_actions(self, params: Params, observations, key) -> jnp.ndarray:
        """clip(ODE(f_beta + f_theta)) from fresh noise: the QAM flow policy's actions."""
        return flow_policy_actions(
            self.policy_velocity(params), observations, key, self.config, self.chunk_dim
        )

    def policy_actions_from(self, params: Params, observations, key) -> jnp.ndarray:
        return self.flow_actions(params, observations, key)

    # ------------------------------------------------------------------ adjoint matching

    def adjoint_targets(
        self, params: Params, observations, key
    ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """(states a^0..a^{T-1}, adjoints g^0..g^{T-1}, a^T) of one SDE rollout per row, all held
        fixed (regression targets): no gradient reaches any network through them."""
        params = jax.lax.stop_gradient(params)
        schedule = self.schedule
        batch, chunk_dim = observations.shape[0], self.chunk_dim
        initial_key, noise_key = jax.random.split(key)
        initial = jax.random.normal(initial_key, (batch, chunk_dim), observations.dtype)
        step_noise = jax.random.normal(
            noise_key, (self.config.flow_steps, batch, chunk_dim), observations.dtype
        )
        states, final = sde_rollout(self.policy_velocity(params), observations, initial, step_noise, schedule)
        q_gradient = jax.grad(lambda a: jnp.sum(self.target_q(observations, a)))(final)
        terminal = -self.config.qam_inv_temperature * q_gradient
        if self.adjoint_kind == "lean":
            adjoints = lean_adjoint(self.velocity(params, "actor"), observations, states, terminal, schedule)
        else:
            adjoints = basic_adjoint(
                self.velocity(params, "actor"),
                self.velocity(params, "residual"),
                observations,
                states,
                terminal,
                schedule,
            )
        return jax.lax.stop_gradient((states, adjoints, final))

    def adjoint_matching_terms(self, params: Params, observations, key) -> tuple[jnp.ndarray, dict]:
        """L_AM at `params` (gradient to f_theta only) and its metrics."""
        states, adjoints, _ = self.adjoint_targets(params, observations, key)
        steps, batch = states.shape[:2]
        schedule = self.schedule
        # f_theta on all T*B (state, time) pairs in one pass
        rows = jnp.broadcast_to(observations[None], (steps, *observations.shape)).reshape(steps * batch, -1)
        times = jnp.repeat(schedule.times, batch)
        residuals = self.velocity(params, "residual")(rows, states.reshape(steps * batch, -1), times)
        residuals = residuals.reshape(states.shape)
        loss = adjoint_matching_loss(residuals, adjoints, schedule.sigmas)
        return loss, {
            "adjoint_matching_loss": loss,
            "terminal_adjoint_norm": jnp.mean(jnp.linalg.norm(adjoints[-1], axis=-1)),
            "residual_velocity_norm": jnp.mean(jnp.linalg.norm(residuals, axis=-1)),
        }

    def extra_losses(self, params: Params, batch: Batch, key) -> tuple[jnp.ndarray, dict]:
        """The variant's own policy losses (0 for qam and bam)."""
        return jnp.zeros(()), {}

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        bc_key, adjoint_key, extra_key = jax.random.split(key, 3)
        bc_loss, _, _ = bc_flow_loss(self, params, batch, bc_key)
        am_loss, metrics = self.adjoint_matching_terms(params, batch["observations"], adjoint_key)
        extra_loss, extra_metrics = self.extra_losses(params, batch, extra_key)
        return bc_loss + am_loss + extra_loss, {"bc_loss": bc_loss, **metrics, **extra_metrics}


class BAMAgent(QAMAgent):
    """QAM with the basic adjoint (Eq. 12): the adjoint of the full dynamics and running cost,
    whose gradient equals backpropagation through the memoryless SDE (QAM §5)."""

    name = "bam"
    summary = "Basic adjoint matching: QAM with the full adjoint of Eq. 12 (QAM paper's ablation)"
    adjoint_kind = "basic"


class QAMFQLAgent(QAMAgent):
    """QAM + a one-step policy distilled from the QAM flow while ascending Q (Eq. 29)."""

    name = "qam-fql"
    summary = "QAM + FQL-style one-step policy distilled from the QAM flow (QAM paper Eq. 29)"
    clipped_networks = ("residual", "onestep")
    contract_losses = ("bc_loss", "onestep_distill_loss")

    def onestep(self) -> OneStepPolicy:
        return build_onestep_policy(self.config, self.chunk_dim)

    @classmethod
    def init_extra_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        network = build_onestep_policy(config, actions.shape[-1])
        return {"onestep": network.init(key, observations, actions)}

    def extra_losses(self, params: Params, batch: Batch, key):
        from qgf.guidance import SamplerSpec, sample_with_info

        observations = batch["observations"]
        noise_key, ode_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, (observations.shape[0], self.chunk_dim), observations.dtype)
        # ODE(f, z) from the same z, clipped (QAM Eq. 39), held fixed
        spec = SamplerSpec("none", steps=self.config.flow_steps)
        frozen = jax.lax.stop_gradient(params)
        target, _ = sample_with_info(
            self.policy_velocity(frozen), None, observations, ode_key, 0.0, spec, self.chunk_dim, noise=noise
        )
        actions = self.onestep().apply(params["onestep"], observations, noise)
        distill_loss = jnp.mean(jnp.square(actions - jax.lax.stop_gradient(target)))
        q = self.target_q(observations, jnp.clip(actions, -1.0, 1.0))
        loss = self.config.qam_fql_alpha * distill_loss - jnp.mean(q)
        return loss, {"onestep_distill_loss": distill_loss, "onestep_q": jnp.mean(q)}

    def policy_actions_from(self, params: Params, observations, key):
        noise = jax.random.normal(key, (observations.shape[0], self.chunk_dim), observations.dtype)
        return jnp.clip(self.onestep().apply(params["onestep"], observations, noise), -1.0, 1.0)


class QAMEditAgent(GaussianEdit, QAMAgent):
    """QAM + a tanh-Gaussian edit policy within an L-infinity ball of radius sigma_a around the
    QAM flow's action (Eq. 30, App. C Eq. 78), with SAC's entropy temperature; the edit policy is
    `qgf.agents.gaussian_policy.GaussianEdit`, shared with FEdit."""

    name = "qam-edit"
    summary = "QAM + Gaussian edit policy in an L-inf ball around the QAM flow's action (QAM paper Eq. 30)"
    clipped_networks = ("residual", "edit")
    contract_fixed_critic_losses = ("adjoint_matching_loss", "edit_loss")
    edit_sigma_field = "qam_edit_sigma"
    edit_entropy_field = "qam_edit_target_entropy"

    @classmethod
    def init_extra_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        return cls.init_edit_params(config, key, observations, actions)

    def extra_losses(self, params: Params, batch: Batch, key):
        observations = batch["observations"]
        flow_key, edit_key = jax.random.split(key)
        base_actions = jax.lax.stop_gradient(
            self.flow_actions(jax.lax.stop_gradient(params), observations, flow_key)
        )
        return self.edit_terms(params, observations, base_actions, edit_key, self.target_q)

    def policy_actions_from(self, params: Params, observations, key):
        flow_key, edit_key = jax.random.split(key)
        base_actions = self.flow_actions(params, observations, flow_key)
        actions, _ = self.edited_actions(params, observations, base_actions, edit_key)
        return actions


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {
    "qam": {"class": "QAMAgent", "order": 60, "sections": ["qam", "policy-optimiser"]},
    "bam": {"class": "BAMAgent", "order": 70, "sections": ["qam", "policy-optimiser"]},
    "qam-fql": {"class": "QAMFQLAgent", "order": 80, "sections": ["qam", "qam-fql", "policy-optimiser"]},
    "qam-edit": {"class": "QAMEditAgent", "order": 90, "sections": ["qam", "qam-edit", "policy-optimiser"]},
}
CONFIG_SECTIONS = {
    "qam": {
        "title": "the QAM family's adjoint matching (QAM paper Alg. 1)",
        "settings": {
            "qam_inv_temperature": {
                "default": 0.1,
                "help": "qam family: inverse temperature tau of the adjoint boundary -tau grad Q (Alg. 1; "
                "QGF's tau_inv)",
                "min": 0.0,
            },
            "qam_time_offset": {
                "default": 0.5,
                "help": "qam family: Eq. 24's 1/u and sigma_u are evaluated at u + offset * h (offset in "
                "(0, 1), a fraction of one flow step), since 1/u diverges at u = 0; the last step is the "
                "deterministic Euler step",
                "above": 0.0,
                "below": 1.0,
            },
        },
    },
    "qam-fql": {
        "title": "QAM-FQL's one-step policy (QAM paper Eq. 29)",
        "settings": {
            "qam_fql_alpha": {
                "default": 30.0,
                "help": "qam-fql: weight alpha of the distillation term of Eq. 29",
                "min": 0.0,
            },
        },
    },
    "qam-edit": {
        "title": "QAM-EDIT's edit policy (QAM paper Eq. 30)",
        "settings": {
            "qam_edit_sigma": {
                "default": 0.1,
                "help": "qam-edit: sigma_a, the L-infinity radius of the edit (Eq. 30)",
                "min": 0.0,
            },
            "qam_edit_target_entropy": {
                "default": -0.5,
                "help": "qam-edit: the edit policy's target entropy per chunk coordinate (SAC temperature "
                "tuning)",
            },
        },
    },
}
