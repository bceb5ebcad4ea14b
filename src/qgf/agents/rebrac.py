"""`rebrac`: ReBRAC (Tarasov et al., 2023), TD3 with a behaviour-cloning term; the QAM paper's
Gaussian-family baseline (App. C "Gaussian", App. D Tables 4-5: alpha, sigma).

One policy network, 'actor', a deterministic chunk policy mu_omega(s) = tanh(MLP(s)) (B, h*A), and
its EMA target copy (`target_params['actor']`, `policy_target_networks`). Actor loss (TD3+BC):

    L(omega) = -mean_B Q(s, mu(s)) / sg(mean_B |Q(s, mu(s))|) + alpha * mean_B sum_coords (mu(s) - a)^2

with Q the guidance critic aggregated over its heads (`Agent.target_q`, held fixed) and the BC sum
over the chunk's coordinates (masked by `bc_mask_invalid` like flow matching). Target-policy
smoothing: with `critic=td` the critic backs up on

    a' = clip(mu_target(s') + clip(sigma * eps, -c, c), -1, 1),   eps ~ N(0, I),  c = noise clip 0.5

Actor delay d (2): the critic steps every update; the actor, its optimiser state and every target
network (critic and actor) step only on every d-th update (steps d, 2d, ...), as TD3. The agent
acts with the same smoothed output of its online actor (the authors' code adds the noise at
evaluation too; sigma = 0 is the deterministic actor). ReBRAC's critic BC penalty is not used (the
QAM paper and its code have none). Choices: docs/fidelity.md, "ReBRAC, FBRAC, FAWAC, IFQL".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from qgf.agents.base import Agent, Batch, Params
from qgf.agents.fql import q_ascent_loss
from qgf.config import TrainConfig
from qgf.flow import chunk_step_weights
from qgf.nets import MLP

# Scale of the actor's output layer at initialisation (the authors' code: a fresh actor outputs
# actions near 0, far from tanh's saturation).
ACTOR_OUTPUT_INIT_SCALE = 0.01


class DeterministicActor(nn.Module):
    """mu(s) = tanh(MLP(s)) -> (B, chunk_dim) in (-1, 1)."""

    hidden_dims: Sequence[int]
    chunk_dim: int
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> jnp.ndarray:
        return jnp.tanh(MLP(self.hidden_dims, self.chunk_dim, self.layer_norm)(observations))


def build_actor(config: TrainConfig, chunk_dim: int) -> DeterministicActor:
    return DeterministicActor(config.actor_hidden_dims, chunk_dim, config.layer_norm)


def smoothed_actions(mean_actions: jnp.ndarray, key: jax.Array, sigma: float, noise_clip: float):
    """clip(mu + clip(sigma * eps, -noise_clip, noise_clip), -1, 1), eps ~ N(0, I) from `key`."""
    noise = jnp.clip(sigma * jax.random.normal(key, mean_actions.shape), -noise_clip, noise_clip)
    return jnp.clip(mean_actions + noise, -1.0, 1.0)


def bc_squared_error(actions: jnp.ndarray, data_actions: jnp.ndarray, weights=None) -> jnp.ndarray:
    """mean_B sum_coords w (mu - a)^2: ReBRAC's BC term (sum over the chunk, mean over rows)."""
    squared = jnp.square(actions - data_actions)
    if weights is not None:
        squared = weights * squared
    return jnp.mean(jnp.sum(squared, axis=-1))


class ReBRACAgent(Agent):
    """Deterministic actor ('actor', with an EMA target) + the shared critic; TD3+BC updates."""

    name = "rebrac"
    summary = "ReBRAC: TD3+BC with a deterministic chunk actor, policy smoothing and actor delay 2"
    clipped_networks = ("actor",)
    policy_target_networks = ("actor",)
    contract_losses = ("bc_mse",)

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        params = build_actor(config, actions.shape[-1]).init(key, observations)
        mlp = params["params"]["MLP_0"]
        last = f"Dense_{len(config.actor_hidden_dims)}"
        scaled = {**mlp, last: {**mlp[last], "kernel": ACTOR_OUTPUT_INIT_SCALE * mlp[last]["kernel"]}}
        return {"actor": {"params": {"MLP_0": scaled}}}

    def actor_from(self, actor_params) -> Callable:
        """mu(obs) at the given actor parameters (online or target)."""
        return functools.partial(build_actor(self.config, self.chunk_dim).apply, actor_params)

    def _smoothed(self, actor_params, observations, key):
        config = self.config
        mean = self.actor_from(actor_params)(observations)
        return smoothed_actions(mean, key, config.rebrac_noise, config.rebrac_noise_clip)

    def policy_actions_from(self, params: Params, observations, key):
        """The online actor's smoothed actions (acting)."""
        return self._smoothed(params["actor"], observations, key)

    def backup_actions(self, params: Params, observations, key):
        """Target-policy smoothing: the target actor's smoothed actions at s' (TD3)."""
        return self._smoothed(jax.lax.stop_gradient(self.target_params["actor"]), observations, key)

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        """-Q(s, mu(s)) / sg(mean |Q|) + alpha * BC (no noise on mu here, as TD3)."""
        config = self.config
        observations = batch["observations"]
        actions = self.actor_from(params["actor"])(observations)
        q = self.target_q(observations, actions)
        q_loss = q_ascent_loss(q, normalize=True)
        weights = chunk_step_weights(batch["valid"], self.action_dim) if config.bc_mask_invalid else None
        bc_mse = bc_squared_error(actions, batch["actions"], weights)
        total = q_loss + config.rebrac_alpha * bc_mse
        return total, {"actor_loss": total, "bc_mse": bc_mse, "q_loss": q_loss, "q_policy_mean": jnp.mean(q)}

    def _update(self, batch: Batch):
        """Every network's step, then the actor's (parameters and Adam state) and every target's
        undone unless this is a d-th update: the critic steps every update, the rest every d-th."""
        new, metrics = super()._update(batch)
        delayed_step = (self.step + 1) % self.config.rebrac_actor_delay == 0

        def keep_unless_delayed(updated, current):
            return jax.tree.map(lambda u, c: jnp.where(delayed_step, u, c), updated, current)

        params = {**new.params, "actor": keep_unless_delayed(new.params["actor"], self.params["actor"])}
        opt_state = {
            **new.opt_state,
            "actor": keep_unless_delayed(new.opt_state["actor"], self.opt_state["actor"]),
        }
        target_params = keep_unless_delayed(new.target_params, self.target_params)
        metrics["actor_updated"] = delayed_step.astype(jnp.float32)
        return new.replace(params=params, opt_state=opt_state, target_params=target_params), metrics


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {"rebrac": {"class": "ReBRACAgent", "order": 91, "sections": ["rebrac", "policy-optimiser"]}}
CONFIG_SECTIONS = {
    "rebrac": {
        "title": "ReBRAC's TD3+BC actor (QAM paper App. C, Tables 4-5)",
        "settings": {
            "rebrac_alpha": {
                "default": 0.01,
                "help": "rebrac: weight alpha of the actor's BC term (sum over the chunk of (mu - a)^2)",
                "min": 0.0,
            },
            "rebrac_noise": {
                "default": 0.2,
                "help": "rebrac: std sigma of the target-policy smoothing noise (also added when acting)",
                "min": 0.0,
            },
            "rebrac_noise_clip": {
                "default": 0.5,
                "help": "rebrac: the smoothing noise is clipped to [-clip, clip] (TD3, the paper: 0.5)",
                "min": 0.0,
            },
            "rebrac_actor_delay": {
                "default": 2,
                "help": "rebrac: the actor and the target networks step on every d-th update (TD3: 2)",
                "min": 1,
            },
        },
    },
}
