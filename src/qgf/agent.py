"""`QGFAgent`: the BC flow policy, the chunked IQL critic and value, their optimisers and RNG, as
one pytree with `create / update / update_many / sample_actions`.

The three networks train on disjoint losses in one compiled step:

- actor (velocity field): flow matching on dataset chunks (Eq. 2);
- critic (K heads): regression onto r + gamma^h m V(s') with V held fixed (stop-gradient) (Eq. 11);
- value: expectile regression onto the EMA target critic's aggregated Q, held fixed (Eq. 12);

then the target critic moves toward the online one by EMA. Because every cross-network input is a
`stop_gradient`, one gradient of the summed losses equals three separate gradients.

The RNG lives in the agent and is split once per step, so a run's result depends only on its
seed and step count, not on how steps are grouped into compiled calls (exact resume).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from qgf.config import TrainConfig
from qgf.critics import (
    QEnsemble,
    ValueNetwork,
    aggregate_q,
    chunk_td_target,
    critic_loss,
    ema_update,
    value_loss,
)
from qgf.flow import VelocityField, chunk_step_weights, flow_matching_loss, sample_flow_times

Batch = dict[str, jnp.ndarray]
SampleFn = Callable[..., Batch]


def build_networks(config: TrainConfig, action_dim: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(velocity field, Q ensemble, value network) for per-step action dim `action_dim`."""
    actor = VelocityField(
        hidden_dims=config.actor_hidden_dims,
        chunk_dim=config.horizon * action_dim,
        time_embedding=config.time_embedding,
        time_embedding_dim=config.time_embedding_dim,
        layer_norm=config.layer_norm,
    )
    critic = QEnsemble(config.critic_hidden_dims, config.num_critics, config.layer_norm)
    value = ValueNetwork(config.critic_hidden_dims, config.layer_norm)
    return actor, critic, value


class QGFAgent(flax.struct.PyTreeNode):
    """Training state of a QGF run. Build with `QGFAgent.create`; every method is pure.

    `config` is static (part of the pytree structure, not traced) and holds the run's
    `learner_config()`: everything that shapes the networks and the update.
    """

    actor_params: Any
    critic_params: Any
    target_critic_params: Any
    value_params: Any
    actor_opt_state: Any
    critic_opt_state: Any
    value_opt_state: Any
    rng: jax.Array
    step: jax.Array
    config: TrainConfig = flax.struct.field(pytree_node=False)
    obs_dim: int = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, seed: int, obs_dim: int, action_dim: int, config: TrainConfig) -> QGFAgent:
        """Fresh agent. `action_dim` is the environment's per-step action size A; the policy
        and critic act on flattened chunks of size h*A. The agent keeps
        `config.learner_config()`: the schedule, seed and data-reading fields are reset, so
        runs that differ only in those share compiled code."""
        return _create(seed, obs_dim, action_dim, config.learner_config())

    # ------------------------------------------------------------------ networks

    @property
    def chunk_dim(self) -> int:
        return self.config.horizon * self.action_dim

    @property
    def networks(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return build_networks(self.config, self.action_dim)

    @property
    def optimizer(self) -> optax.GradientTransformation:
        return optax.adam(self.config.learning_rate)

    @property
    def velocity_fn(self) -> Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]:
        """v(obs (B,D), a_t (B,d), t (B,)) -> (B,d) with the current actor parameters."""
        actor = self.networks[0]
        return functools.partial(actor.apply, self.actor_params)

    @property
    def q_fn(self) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
        """Q(obs (B,D), a (B,d)) -> (B,), aggregated over heads, with the critic named by
        `config.guidance_critic` ('target' by default)."""
        critic = self.networks[1]
        params = self.target_critic_params if self.config.guidance_critic == "target" else self.critic_params
        how = self.config.critic_aggregation
        return lambda observations, actions: aggregate_q(critic.apply(params, observations, actions), how)

    @functools.partial(jax.jit, static_argnames=("target",))
    def q_values(self, observations: jnp.ndarray, actions: jnp.ndarray, target: bool = False) -> jnp.ndarray:
        """All heads (K, B) of the online (or target) critic."""
        params = self.target_critic_params if target else self.critic_params
        return self.networks[1].apply(params, observations, actions)

    @jax.jit
    def value(self, observations: jnp.ndarray) -> jnp.ndarray:
        """V(obs) (B,)."""
        return self.networks[2].apply(self.value_params, observations)

    # ------------------------------------------------------------------ training

    def losses(self, params: tuple[Any, Any, Any], batch: Batch, key: jax.Array) -> tuple[jnp.ndarray, dict]:
        """Sum of the three losses at `params` = (actor, critic, value) and metrics.

        Every quantity that crosses from one network into another's loss is a stop_gradient,
        so d(total)/d(actor, critic, value) are exactly the three separate loss gradients.
        """
        config = self.config
        actor, critic, value = self.networks
        actor_params, critic_params, value_params = params
        observations = batch["observations"]
        actions = batch["actions"]
        row_weights = batch["valid"][:, -1].astype(jnp.float32)

        noise_key, time_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, actions.shape, actions.dtype)
        times = sample_flow_times(time_key, actions.shape[0], config.time_sampling, config.flow_steps)
        bc_weights = chunk_step_weights(batch["valid"], self.action_dim) if config.bc_mask_invalid else None
        bc_loss = flow_matching_loss(
            functools.partial(actor.apply, actor_params), observations, actions, noise, times, bc_weights
        )

        next_values = jax.lax.stop_gradient(value.apply(value_params, batch["next_observations"]))
        targets = chunk_td_target(
            batch["rewards"], batch["masks"], next_values, config.discount, config.horizon
        )
        q_values = critic.apply(critic_params, observations, actions)
        q_loss = critic_loss(q_values, targets, row_weights)

        target_q = jax.lax.stop_gradient(
            aggregate_q(
                critic.apply(self.target_critic_params, observations, actions), config.critic_aggregation
            )
        )
        values = value.apply(value_params, observations)
        v_loss = value_loss(target_q, values, config.expectile, row_weights)

        q_aggregated = aggregate_q(q_values, config.critic_aggregation)
        metrics = {
            "bc_loss": bc_loss,
            "critic_loss": q_loss,
            "value_loss": v_loss,
            "q_mean": jnp.mean(q_aggregated),
            "q_min": jnp.min(q_aggregated),
            "q_max": jnp.max(q_aggregated),
            "q_head_gap": jnp.mean(jnp.max(q_values, axis=0) - jnp.min(q_values, axis=0)),
            "v_mean": jnp.mean(values),
            "v_min": jnp.min(values),
            "v_max": jnp.max(values),
            "td_target_mean": jnp.mean(targets),
            "valid_fraction": jnp.mean(row_weights),
        }
        return bc_loss + q_loss + v_loss, metrics

    def _update(self, batch: Batch) -> tuple[QGFAgent, dict]:
        rng, loss_key = jax.random.split(self.rng)
        params = (self.actor_params, self.critic_params, self.value_params)
        grads, metrics = jax.grad(self.losses, has_aux=True)(params, batch, loss_key)
        actor_grads, critic_grads, value_grads = grads

        optimizer = self.optimizer
        actor_updates, actor_opt_state = optimizer.update(
            actor_grads, self.actor_opt_state, self.actor_params
        )
        critic_updates, critic_opt_state = optimizer.update(
            critic_grads, self.critic_opt_state, self.critic_params
        )
        value_updates, value_opt_state = optimizer.update(
            value_grads, self.value_opt_state, self.value_params
        )
        critic_params = optax.apply_updates(self.critic_params, critic_updates)

        metrics["actor_grad_norm"] = optax.tree.norm(actor_grads)
        metrics["critic_grad_norm"] = optax.tree.norm(critic_grads)
        metrics["value_grad_norm"] = optax.tree.norm(value_grads)
        new_agent = self.replace(
            actor_params=optax.apply_updates(self.actor_params, actor_updates),
            critic_params=critic_params,
            target_critic_params=ema_update(
                self.target_critic_params, critic_params, self.config.target_update_rate
            ),
            value_params=optax.apply_updates(self.value_params, value_updates),
            actor_opt_state=actor_opt_state,
            critic_opt_state=critic_opt_state,
            value_opt_state=value_opt_state,
            rng=rng,
            step=self.step + 1,
        )
        return new_agent, metrics

    @jax.jit
    def update(self, batch: Batch) -> tuple[QGFAgent, dict]:
        """One gradient step of actor, critic and value on `batch` (docs/architecture.md format)."""
        return self._update(batch)

    def update_many(
        self, device_data: Any, num_steps: int, sample_fn: SampleFn | None = None, donate: bool = False
    ) -> tuple[QGFAgent, dict]:
        """`num_steps` updates in one compiled loop, each on a batch sampled on the device.

        `sample_fn(device_data, key, batch_size, horizon, discount) -> batch` defaults to
        `qgf.data.chunks.sample_chunks`. Returns the new agent and the metrics summarised over
        the steps (means; extremes for *_min / *_max). With `donate=True` the input agent's
        buffers are reused for the output (saves a copy of every parameter and optimiser
        state); the input agent must not be used afterwards.
        """
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if sample_fn is None:
            from qgf.data.chunks import sample_chunks as sample_fn
        run = _update_many_donated if donate else _update_many
        return run(self, device_data, jnp.asarray(num_steps, jnp.int32), sample_fn)

    # ------------------------------------------------------------------ inference

    def sample_actions(self, observations: jnp.ndarray, key: jax.Array, weight, spec) -> jnp.ndarray:
        """Guided action chunks (B, h*A) from `qgf.guidance.sample` with this agent's velocity
        field and critic, compiled once per (spec, batch size). `spec` (a hashable SamplerSpec) is
        static; `weight` (scalar or (B,)) is traced, so sweeping weights never recompiles. A
        single observation (D,) gives one chunk (h*A,)."""
        observations = jnp.asarray(observations, jnp.float32)
        if observations.ndim == 1:
            return _sample_actions(self, observations[None], key, weight, spec)[0]
        return _sample_actions(self, observations, key, weight, spec)


@functools.partial(jax.jit, static_argnames=("spec",))
def _sample_actions(agent: QGFAgent, observations: jnp.ndarray, key: jax.Array, weight, spec) -> jnp.ndarray:
    from qgf.guidance import sample

    return sample(agent.velocity_fn, agent.q_fn, observations, key, weight, spec, action_dim=agent.chunk_dim)


# Compiled once per (sizes, config): initialising op by op would compile dozens of tiny kernels.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _create(seed, obs_dim: int, action_dim: int, config: TrainConfig) -> QGFAgent:
    actor, critic, value = build_networks(config, action_dim)
    chunk_dim = config.horizon * action_dim
    rng, actor_key, critic_key, value_key = jax.random.split(jax.random.PRNGKey(seed), 4)
    observations = jnp.zeros((1, obs_dim), jnp.float32)
    actions = jnp.zeros((1, chunk_dim), jnp.float32)
    actor_params = actor.init(actor_key, observations, actions, jnp.zeros((1,), jnp.float32))
    critic_params = critic.init(critic_key, observations, actions)
    value_params = value.init(value_key, observations)
    optimizer = optax.adam(config.learning_rate)
    return QGFAgent(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=critic_params,  # jit outputs get separate buffers: safe to donate later
        value_params=value_params,
        actor_opt_state=optimizer.init(actor_params),
        critic_opt_state=optimizer.init(critic_params),
        value_opt_state=optimizer.init(value_params),
        rng=rng,
        step=jnp.zeros((), jnp.int32),
        config=config,
        obs_dim=obs_dim,
        action_dim=action_dim,
    )


def metric_kind(name: str) -> str:
    """How a metric summarises over steps: 'min' / 'max' (names ending so) or 'mean'."""
    return "min" if name.endswith("_min") else "max" if name.endswith("_max") else "mean"


_METRIC_START = {"min": jnp.inf, "max": -jnp.inf, "mean": 0.0}
_METRIC_ACCUMULATE = {"min": jnp.minimum, "max": jnp.maximum, "mean": jnp.add}


def _run_updates(
    agent: QGFAgent, device_data: Any, num_steps: jax.Array, sample_fn: SampleFn
) -> tuple[QGFAgent, dict]:
    """`num_steps` (traced) updates in one `fori_loop`; metrics are accumulated in the carry.

    The step count is a traced value rather than a `lax.scan` length, so one compilation serves
    every call length (the last, shorter chunk of a run, resumption at any step); XLA lowers
    both to the same while loop.
    """
    config = agent.config

    def one_step(state: QGFAgent) -> tuple[QGFAgent, dict]:
        rng, batch_key = jax.random.split(state.rng)
        batch = sample_fn(device_data, batch_key, config.batch_size, config.horizon, config.discount)
        return state.replace(rng=rng)._update(batch)

    metric_names = jax.eval_shape(one_step, agent)[1].keys()
    start = {name: jnp.asarray(_METRIC_START[metric_kind(name)], jnp.float32) for name in metric_names}

    def body(_, carry):
        state, totals = carry
        state, metrics = one_step(state)
        return state, {
            name: _METRIC_ACCUMULATE[metric_kind(name)](totals[name], metrics[name]) for name in totals
        }

    agent, totals = jax.lax.fori_loop(0, num_steps, body, (agent, start))
    return agent, {
        name: total / num_steps if metric_kind(name) == "mean" else total for name, total in totals.items()
    }


_update_many = jax.jit(_run_updates, static_argnums=(3,))
_update_many_donated = jax.jit(_run_updates, static_argnums=(3,), donate_argnums=(0,))
