"""The agent protocol, the generic update step and the many-updates loop that every method shares.

An agent is a pure pytree (`flax.struct.PyTreeNode`) holding every trained network's parameters
by name (`params`), their EMA copies (`target_params`, the critic's), one optimiser state per
network (`opt_state`), its RNG and step counter; its config and sizes are static. A method is a
subclass that says only what is particular to it:

- `init_policy_params(config, key, obs, actions)`: its policy networks (the critic's networks
  come from the critic component, `qgf.critics`, shared by every method);
- `policy_losses(params, batch, key)`: its policy losses, with every critic quantity held fixed;
- `policy_actions_from(params, obs, key)`: actions of its own policy (acting, td backups);
- optionally `behavior_velocity_fn`: a behaviour-cloning velocity field trained alongside, which
  makes every test-time sampler of `qgf.guidance` apply to the run; `policy_target_networks`, its
  own networks with an EMA target; `backup_actions`, what a td critic backs up on (the policy's
  actions by default).

The rest — the critic (`agent.critic`, the component `config.critic` names: its networks, EMA
targets, losses, and whether its backup needs the policy's next actions), optimisers, EMA,
`update_many` as one compiled loop with batches sampled on the device, `sample_actions` with any
`SamplerSpec` — lives here once. The RNG is split once per step, so a run's result depends only on
its seed and step count (exact resume). The training loop, checkpoints and evaluation know this
protocol, never a concrete agent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import flax
import jax
import jax.numpy as jnp
import optax

from qgf.config import TrainConfig
from qgf.critics import critic_for
from qgf.critics.losses import ema_update
from qgf.errors import QGFError
from qgf.precision import with_agent_precision
from qgf.training.steps import run_steps

Batch = dict[str, jnp.ndarray]
SampleFn = Callable[..., Batch]
Params = dict[str, Any]


class Agent(flax.struct.PyTreeNode):
    """Training state of one run of one method. Build with `create`; every method is pure.

    `config` is static (part of the pytree structure, not traced) and holds the run's
    `learner_config()`: everything that shapes the networks and the update.
    """

    params: Params
    target_params: Params
    opt_state: Params
    rng: jax.Array
    step: jax.Array
    config: TrainConfig = flax.struct.field(pytree_node=False)
    obs_dim: int = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)
    # Networks an update leaves untouched (parameters and optimiser state): the frozen BC flow of
    # online QGF (`qgf.online`). Static, so freezing compiles its own update.
    frozen_networks: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())

    # Set by each method.
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # Networks whose gradient `config.actor_grad_clip` clips (the method's policy networks).
    clipped_networks: ClassVar[tuple[str, ...]] = ()
    # The method's own networks with an EMA target copy in `target_params` (next to the critic's),
    # updated by `target_update_rate` with the critic's (ReBRAC's target actor).
    policy_target_networks: ClassVar[tuple[str, ...]] = ()
    # The agent contract (tests/agent_contract.py) checks the metrics of the method's own policy
    # objective: `contract_losses` fall over a few hundred updates on tiny data while the shared
    # critic learns; `contract_fixed_critic_losses`, regressions onto critic quantities (grad Q,
    # adjoints) whose targets move while the critic learns, fall while the policy trains against a
    # fixed critic. Every method declares at least one.
    contract_losses: ClassVar[tuple[str, ...]] = ()
    contract_fixed_critic_losses: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ what a method provides

    @classmethod
    def init_policy_params(
        cls, config: TrainConfig, key: jax.Array, observations: jnp.ndarray, actions: jnp.ndarray
    ) -> Params:
        """Initial parameters of the method's own networks, by name (not the critic's: 'critic',
        'value', 'long_critic')."""
        raise NotImplementedError

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array) -> tuple[jnp.ndarray, dict]:
        """Sum of the method's policy losses at `params` and metrics. Critic quantities must be
        held fixed (use `self.target_q` or stop_gradient), so that this term never moves the critic."""
        raise NotImplementedError

    def policy_actions_from(self, params: Params, observations: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
        """Action chunks (B, h*A) in [-1, 1] from the method's own policy at `params`."""
        raise NotImplementedError

    @property
    def behavior_velocity_fn(self) -> Callable | None:
        """The behaviour-cloning velocity field v(obs, a_t, t) trained alongside, or None."""
        return None

    def backup_actions(self, params: Params, observations: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
        """The actions at s_{t+h} a critic that `needs_next_actions` backs up on (held fixed by the
        caller): the method's own policy at `params` by default; ReBRAC's smoothed target actor."""
        return self.policy_actions_from(params, observations, key)

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, seed: int, obs_dim: int, action_dim: int, config: TrainConfig) -> Agent:
        """Fresh agent. `action_dim` is the environment's per-step action size A; policies and
        critics act on flattened chunks of size h*A. The agent keeps `config.learner_config()`."""
        return _create(cls, seed, obs_dim, action_dim, config.learner_config())

    # ------------------------------------------------------------------ networks and callables

    @property
    def chunk_dim(self) -> int:
        return self.config.horizon * self.action_dim

    def optimizer(self, network: str) -> optax.GradientTransformation:
        adam = optax.adam(self.config.learning_rate)
        if network in self.clipped_networks and self.config.actor_grad_clip > 0:
            return optax.chain(optax.clip(self.config.actor_grad_clip), adam)
        return adam

    @property
    def critic(self):
        """The run's critic component (`qgf.critics.base.Critic`), built from the static config."""
        return critic_for(self.config)

    @property
    def guidance_critic_params(self):
        """The critic parameters named by `config.guidance_critic` ('target' by default)."""
        if self.config.guidance_critic == "target":
            return self.target_params["critic"]
        return self.params["critic"]

    @property
    def q_fn(self) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
        """Q(obs (B,D), a (B,d)) -> (B,), aggregated over heads, with the guidance critic."""
        critic, params = self.critic, self.guidance_critic_params
        return lambda observations, actions: critic.q(params, observations, actions)

    def target_q(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        """The guidance critic's aggregated Q, held fixed: what policy losses ascend."""
        return self.q_fn(observations, actions)

    @functools.partial(jax.jit, static_argnames=("target",))
    def q_values(self, observations: jnp.ndarray, actions: jnp.ndarray, target: bool = False) -> jnp.ndarray:
        """All heads (K, B) of the online (or target) critic."""
        params = self.target_params["critic"] if target else self.params["critic"]
        return self.critic.q_heads(params, observations, actions)

    @jax.jit
    def value(self, observations: jnp.ndarray) -> jnp.ndarray:
        """V(obs) (B,); a one-line error for a critic that trains no V (critic=td)."""
        return self.critic.value(self.params, observations)

    # ------------------------------------------------------------------ training

    def losses(self, params: Params, batch: Batch, key: jax.Array) -> tuple[jnp.ndarray, dict]:
        """Policy losses + critic losses at `params`, and metrics. Every cross-network quantity is
        a stop_gradient, so d(total)/d(network) is exactly that network's own loss gradient."""
        critic = self.critic
        if critic.needs_next_actions:
            key, next_key = jax.random.split(key)
            frozen = jax.lax.stop_gradient(params)
            next_actions = self.backup_actions(frozen, batch["next_observations"], next_key)
        else:
            next_actions = None
        if self.config.goal_conditioned and "critic" not in batch:
            raise QGFError(
                "a goal-conditioned run trains on goal-conditioned batches (policy and critic views); "
                "sample them with qgf.agents.base.training_sample_fn(config)"
            )
        policy_loss, metrics = self.policy_losses(params, batch, key)
        critic_loss, critic_metrics = critic.losses(params, self.target_params, batch, next_actions)
        return policy_loss + critic_loss, {**metrics, **critic_metrics}

    def _update(self, batch: Batch) -> tuple[Agent, dict]:
        rng, loss_key = jax.random.split(self.rng)
        grads, metrics = jax.grad(self.losses, has_aux=True)(self.params, batch, loss_key)
        params, opt_state = {}, {}
        for name in self.params:
            if name in self.frozen_networks:
                params[name], opt_state[name] = self.params[name], self.opt_state[name]
                continue
            updates, opt_state[name] = self.optimizer(name).update(
                grads[name], self.opt_state[name], self.params[name]
            )
            params[name] = optax.apply_updates(self.params[name], updates)
            metrics[f"{name}_grad_norm"] = optax.tree.norm(grads[name])
        target_params = {
            name: ema_update(self.target_params[name], params[name], self.config.target_update_rate)
            for name in self.target_params
        }
        new_agent = self.replace(
            params=params, target_params=target_params, opt_state=opt_state, rng=rng, step=self.step + 1
        )
        return new_agent, metrics

    @jax.jit
    def update(self, batch: Batch) -> tuple[Agent, dict]:
        """One gradient step of every network on `batch` (docs/architecture.md format)."""
        return self._update(batch)

    def update_many(
        self, device_data: Any, num_steps: int, sample_fn: SampleFn | None = None, donate: bool = False
    ) -> tuple[Agent, dict]:
        """`num_steps` updates in one compiled loop, each on a batch sampled on the device.

        `sample_fn(device_data, key, batch_size, horizon, discount) -> batch` defaults to
        `training_sample_fn(config)`: `qgf.data.chunks.sample_chunks`, or for a goal-conditioned
        run its goal sampler (`qgf.data.goals.GoalChunkSampler`). Returns the new agent and the
        metrics summarised over the steps (means; extremes for *_min / *_max). With `donate=True`
        the input agent's buffers are reused for the output; it must not be used afterwards.
        """
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if sample_fn is None:
            sample_fn = training_sample_fn(self.config)
        run = _update_many_donated if donate else _update_many
        return run(self, device_data, jnp.asarray(num_steps, jnp.int32), sample_fn)

    # ------------------------------------------------------------------ inference

    def policy_actions(self, observations: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
        """Action chunks of the method's own policy (what `SamplerSpec('policy')` evaluates)."""
        return self.policy_actions_from(self.params, observations, key)

    def sample_actions(self, observations: jnp.ndarray, key: jax.Array, weight, spec) -> jnp.ndarray:
        """Action chunks (B, h*A) for sampler `spec` (a hashable `qgf.guidance.SamplerSpec`,
        static): 'policy' is the method's own policy; every other sampler guides the run's
        behaviour flow with its critic, compiled once per (spec, batch size). `weight` (scalar
        or (B,)) is traced, so sweeping weights never recompiles. A single observation (D,)
        gives one chunk (h*A,)."""
        check_sampler(self, spec)
        observations = jnp.asarray(observations, jnp.float32)
        if observations.ndim == 1:
            return _sample_actions(self, observations[None], key, weight, spec)[0]
        return _sample_actions(self, observations, key, weight, spec)


def training_sample_fn(config: TrainConfig) -> SampleFn:
    """The batch sampler a run of `config` trains on: single-task chunks of `horizon` steps, or,
    when `goal_conditioned`, hindsight-goal chunks of `dqc_horizon` steps seen through the batch
    adapter `qgf.data.goals.goal_training_batch` (policy view with actor goals, critic view with
    value goals). Equal configs give equal (hashable) samplers, so compiled loops are reused."""
    if not config.goal_conditioned:
        from qgf.data.chunks import sample_chunks

        return sample_chunks
    from qgf.data.goals import GoalChunkSampler

    return GoalChunkSampler(config.dqc_horizon, config.value_goal_sampling, config.actor_goal_sampling)


def check_sampler(agent: Agent, spec) -> None:
    """A one-line error when `spec` needs a behaviour flow that `agent`'s method does not train."""
    if spec.estimator != "policy" and agent.behavior_velocity_fn is None:
        raise QGFError(
            f"sampler {spec.label!r} guides a behaviour-cloning flow, and a {agent.name!r} run has none; "
            "evaluate its own policy with --sampler policy"
        )


@functools.partial(jax.jit, static_argnames=("spec",))
@with_agent_precision
def _sample_actions(agent: Agent, observations: jnp.ndarray, key: jax.Array, weight, spec) -> jnp.ndarray:
    from qgf.guidance import sample

    if spec.estimator == "policy":
        if spec.best_of_n == 1:
            return agent.policy_actions(observations, key)
        # Best-of-N on the method's own policy: N draws per row, the critic keeps the best.
        batch, n = observations.shape[0], spec.best_of_n
        copies = jnp.repeat(observations, n, axis=0)
        candidates = agent.policy_actions(copies, key)
        chosen = jnp.argmax(agent.q_fn(copies, candidates).reshape(batch, n), axis=1)
        return candidates.reshape(batch, n, -1)[jnp.arange(batch), chosen]
    return sample(agent.behavior_velocity_fn, agent.q_fn, observations, key, weight, spec, agent.chunk_dim)


# Compiled once per (class, sizes, config): initialising op by op would compile dozens of kernels.
@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _create(cls, seed, obs_dim: int, action_dim: int, config: TrainConfig) -> Agent:
    chunk_dim = config.horizon * action_dim
    critic = critic_for(config)
    rng, policy_key, critic_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    observations = jnp.zeros((1, obs_dim), jnp.float32)
    actions = jnp.zeros((1, chunk_dim), jnp.float32)
    params = {
        **cls.init_policy_params(config, policy_key, observations, actions),
        **critic.init_params(critic_key, observations, actions),
    }
    agent = cls(
        params=params,
        # jit outputs get separate buffers: safe to donate later
        target_params={name: params[name] for name in (*critic.target_networks, *cls.policy_target_networks)},
        opt_state={},
        rng=rng,
        step=jnp.zeros((), jnp.int32),
        config=config,
        obs_dim=obs_dim,
        action_dim=action_dim,
    )
    return agent.replace(opt_state={name: agent.optimizer(name).init(p) for name, p in params.items()})


@with_agent_precision
def _run_updates(
    agent: Agent, device_data: Any, num_steps: jax.Array, sample_fn: SampleFn
) -> tuple[Agent, dict]:
    """`num_steps` (traced) updates, each on a batch sampled on the device, in one `fori_loop`
    (`qgf.training.steps.run_steps`)."""
    config = agent.config

    def one_step(state: Agent) -> tuple[Agent, dict]:
        rng, batch_key = jax.random.split(state.rng)
        batch = sample_fn(device_data, batch_key, config.batch_size, config.horizon, config.discount)
        return state.replace(rng=rng)._update(batch)

    return run_steps(one_step, agent, num_steps)


_update_many = jax.jit(_run_updates, static_argnums=(3,))
_update_many_donated = jax.jit(_run_updates, static_argnums=(3,), donate_argnums=(0,))


# ---- config section of the protocol: read by qgf.agents with ast.literal_eval ----
CONFIG_SECTIONS = {
    "policy-optimiser": {
        "title": "the optimiser of a method's policy networks (Agent.clipped_networks)",
        "settings": {
            "actor_grad_clip": {
                "default": 0.0,
                "help": "element-wise clip of the policy network's gradient (0 = off; QAM uses 1 for QSM, "
                "DAC, QAM)",
                "min": 0.0,
            },
        },
    },
}
