"""Goal-conditioned (hindsight-relabelled) chunk batches, sampled on device (see docs/data.md).

The data are the same `to_device` arrays as for single-task chunks (`qgf.data.chunks`), and a chunk is
the same chunk: start row t, steps t, ..., t+h-1, `valid[:, i]` = step t+i is a transition of t's
trajectory, actions past the end repeat the last valid action, `next_observations` = s_{min(t+h, e)}
(e = the trajectory's last stored row). What changes is where rewards and masks come from: each
chunk gets a *value goal* g, and the dataset's rewards and masks are replaced by OGBench's sparse
goal-reaching ones.

**Goals** are rows of the dataset, and a goal is that row's full observation (OGBench's goal-
conditioned envs give their evaluation goals as full observations too). Goal rows are drawn among
the rows that start a transition, i.e. exactly the rows of OGBench's own (non-compact) layout, so a
trajectory's final stored row is never a goal. Each goal is, with the probabilities of a
`GoalSampling`:

- *current*: g = s_t;
- *future* (same trajectory): row min(t + k, e - 1), with k >= 1 geometric with parameter
  1 - discount (`geometric=True`), or uniform over the rows t+1, ..., e-1 (`geometric=False`); it is
  t itself only when t is the trajectory's last transition (OGBench: "excluding the current state,
  unless it is the final state");
- *random*: a uniformly random transition row of the whole dataset.

**Rewards and masks** (OGBench's `gc_negative` convention): a step *reaches* the goal when its row is
the goal's row. Reaching the goal ends the episode, as in OGBench's evaluation: r_{t+i} = 0 at the
step that reaches g, -1 at the steps before it, and the steps after it do not count. So

- `rewards` = -sum_{i < j} gamma^i over the valid steps before the first step j that reaches g
  (all valid steps if none does): 0 when g = s_t;
- `masks` = 0 if a valid step of the chunk reaches g, else 1;

which is OGBench's one-step reward r = 1(s = g) - 1 and mask 1 - 1(s = g) applied step by step with
termination at the goal. A future goal within the chunk is always reached at a valid step (goal
rows are transition rows of the same trajectory). A chunk that reaches its goal and then crosses
its trajectory's end has a complete target (nothing after the goal counts); the critic losses in
`qgf.critics.dqc` keep those (`goal_chunk_weights`) and drop the other crossing chunks.

*Actor goals* are drawn the same way with their own `GoalSampling` and enter no reward.

Everything is pure JAX: `sample_goal_chunks` traces inside a jitted, `lax.scan`-ned update with
`batch_size`, `horizon` and both `GoalSampling`s static (they are frozen, hashable dataclasses).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from qgf.data.chunks import gather_chunks
from qgf.errors import QGFError

_SUM_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class GoalSampling:
    """Where goals come from: the current state, a future state of the same trajectory, or a random
    dataset state, with probabilities `p_cur + p_traj + p_rand = 1`. `geometric` chooses the future
    offset: geometric with parameter 1 - discount (True) or uniform over the rest of the trajectory."""

    p_cur: float
    p_traj: float
    p_rand: float
    geometric: bool = True

    def __post_init__(self) -> None:
        names = ("p_cur", "p_traj", "p_rand")
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise QGFError(f"goal sampling {name} must be a number in [0, 1], got {value!r}")
            if not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise QGFError(f"goal sampling {name} must be in [0, 1], got {value}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.geometric, bool):
            raise QGFError(f"goal sampling geometric must be true or false, got {self.geometric!r}")
        total = self.p_cur + self.p_traj + self.p_rand
        if abs(total - 1.0) > _SUM_TOLERANCE:
            raise QGFError(
                f"goal sampling probabilities must sum to 1, got p_cur={self.p_cur} + p_traj={self.p_traj} "
                f"+ p_rand={self.p_rand} = {total:g}"
            )


VALUE_GOALS = GoalSampling(p_cur=0.2, p_traj=0.5, p_rand=0.3, geometric=True)
"""OGBench's value-goal defaults (its GCIQL/GCIVL/HIQL agents)."""

ACTOR_GOALS = GoalSampling(p_cur=0.0, p_traj=1.0, p_rand=0.0, geometric=False)
"""OGBench's actor-goal defaults: a future state of the same trajectory, uniformly."""


def _future_rows(key: jax.Array, starts: jax.Array, last: jax.Array, geometric: bool, discount) -> jax.Array:
    """A row in (t, last] for each start t (t itself when t == last); `last` = the trajectory's last
    transition row."""
    span = (last - starts).astype(jnp.float32)  # >= 0; exact in float32 for trajectories < 2^24 rows
    u = jax.random.uniform(key, starts.shape)  # [0, 1)
    if geometric:
        # Inverse CDF: P(k) = (1 - gamma) gamma^(k - 1), k >= 1. float32 uniforms truncate the tail
        # where P(k' >= k) < 2^-24; gamma = 1 puts every future goal at the trajectory's end.
        log_discount = jnp.minimum(jnp.log(jnp.asarray(discount, jnp.float32)), -1e-30)
        offsets = 1.0 + jnp.floor(jnp.log1p(-u) / log_discount)
    else:
        offsets = 1.0 + jnp.floor(u * span)
    return starts + jnp.minimum(offsets, span).astype(starts.dtype)


def sample_goal_rows(
    device_data: dict, key: jax.Array, starts: jax.Array, sampling: GoalSampling, discount
) -> jax.Array:
    """Goal rows (B,) for the chunk starts `starts` (B,), drawn as `sampling` says (module docstring).

    Only the branches with a nonzero probability are computed, so a zero probability is exactly zero.
    """
    kind_key, future_key, random_key = jax.random.split(key, 3)
    u = jax.random.uniform(kind_key, starts.shape)
    if sampling.p_rand > 0.0:
        picks = jax.random.randint(random_key, starts.shape, 0, device_data["num_transitions"])
        goals = device_data["transition_starts"][picks]
    else:
        goals = starts  # every row is overwritten below
    if sampling.p_traj > 0.0:
        last = device_data["trajectory_end"][starts] - 1
        future = _future_rows(future_key, starts, last, sampling.geometric, discount)
        # With p_rand = 0 the future branch takes everything not taken by the current state, so that
        # rounding in p_cur + p_traj can never leak probability to a branch with probability 0.
        goals = (
            future
            if sampling.p_rand == 0.0
            else jnp.where(u < sampling.p_cur + sampling.p_traj, future, goals)
        )
    if sampling.p_cur > 0.0:
        goals = jnp.where(u < sampling.p_cur, starts, goals)
    return goals


def gather_goal_chunks(
    device_data: dict,
    starts: jax.Array,
    value_goal_rows: jax.Array,
    actor_goal_rows: jax.Array,
    horizon: int,
    discount,
) -> dict:
    """The goal-conditioned chunk batch for explicit start and goal rows (B,) each.

    Keys: those of `gather_chunks` (`observations`, `actions` (B, h·A), `rewards`, `masks`, `valid`
    (B, h), `next_observations`) with goal-reaching `rewards` and `masks`, plus `value_goals` and
    `actor_goals` (B, D): the goal rows' observations.
    """
    batch = gather_chunks(device_data, starts, horizon, discount)
    steps = jnp.arange(horizon)
    rows = starts[:, None] + steps[None, :]
    valid = batch["valid"] > 0.5
    reaches = valid & (rows == value_goal_rows[:, None])
    # Steps at or after the first one that reaches the goal are not penalised (the episode has ended).
    reached = jnp.cumsum(reaches.astype(jnp.int32), axis=1) > 0
    penalised = valid & ~reached
    discounts = jnp.asarray(discount, jnp.float32) ** steps
    batch["rewards"] = -jnp.sum(jnp.where(penalised, discounts, 0.0), axis=1)
    batch["masks"] = 1.0 - jnp.any(reaches, axis=1).astype(jnp.float32)
    batch["value_goals"] = device_data["observations"][value_goal_rows]
    batch["actor_goals"] = device_data["observations"][actor_goal_rows]
    return batch


def sample_goal_chunks(
    device_data: dict,
    key: jax.Array,
    batch_size: int,
    horizon: int,
    discount,
    value_goals: GoalSampling = VALUE_GOALS,
    actor_goals: GoalSampling = ACTOR_GOALS,
) -> dict:
    """Draw `batch_size` chunk starts uniformly over all transition rows, a value goal and an actor
    goal for each, and gather the batch (`gather_goal_chunks`).

    `discount` is both the reward discount and the parameter of geometric future offsets (OGBench
    uses the agent's discount for both); it may be traced. Jit with `batch_size`, `horizon`,
    `value_goals` and `actor_goals` static (`sample_goal_chunks_jit`).
    """
    start_key, value_key, actor_key = jax.random.split(key, 3)
    picks = jax.random.randint(start_key, (batch_size,), 0, device_data["num_transitions"])
    starts = device_data["transition_starts"][picks]
    value_rows = sample_goal_rows(device_data, value_key, starts, value_goals, discount)
    actor_rows = sample_goal_rows(device_data, actor_key, starts, actor_goals, discount)
    return gather_goal_chunks(device_data, starts, value_rows, actor_rows, horizon, discount)


sample_goal_chunks_jit = jax.jit(
    sample_goal_chunks, static_argnames=("batch_size", "horizon", "value_goals", "actor_goals")
)


# ----------------------------------------------------------------------------- training batches

CRITIC_VIEW = "critic"
"""Key of the critic's view inside a goal-conditioned training batch (`goal_training_batch`)."""


def goal_training_batch(raw: dict, policy_horizon: int) -> dict:
    """The batch adapter of goal-conditioned training: what the networks see, from a
    `sample_goal_chunks` batch `raw` of horizon h_c.

    Every network of a goal-conditioned run takes [observation, goal] where a single-task run takes
    the observation, so the agents and samplers stay unchanged. Two views of the same chunks:

    - top level, the *policy view* (actor goals): `observations` = [s_t, g_actor] (B, 2D),
      `actions` = a_{t:t+h_a} (B, h_a·A), `valid` (B, h_a): exactly the keys and shapes every
      agent's policy loss reads from a single-task batch of horizon h_a;
    - `batch["critic"]`, the *critic view* (value goals): `observations` = [s_t, g_value],
      `next_observations` = [s_{min(t+h_c, e)}, g_value], `actions` = a_{t:t+h_c} (B, h_c·A),
      `rewards`, `masks` (goal-reaching, `qgf.data.goals`), `valid` (B, h_c).

    The policy view has no rewards, masks or next observations: no policy loss may use them.
    """
    critic_horizon = raw["valid"].shape[1]
    if not 1 <= policy_horizon <= critic_horizon:
        raise ValueError(f"need 1 <= h_a <= h_c, got h_a={policy_horizon}, h_c={critic_horizon}")
    action_dim = raw["actions"].shape[1] // critic_horizon
    value_goals, actor_goals = raw["value_goals"], raw["actor_goals"]
    return {
        "observations": jnp.concatenate([raw["observations"], actor_goals], axis=-1),
        "actions": raw["actions"][:, : policy_horizon * action_dim],
        "valid": raw["valid"][:, :policy_horizon],
        CRITIC_VIEW: {
            "observations": jnp.concatenate([raw["observations"], value_goals], axis=-1),
            "next_observations": jnp.concatenate([raw["next_observations"], value_goals], axis=-1),
            "actions": raw["actions"],
            "rewards": raw["rewards"],
            "masks": raw["masks"],
            "valid": raw["valid"],
        },
    }


@dataclasses.dataclass(frozen=True)
class GoalChunkSampler:
    """The training sampler of a goal-conditioned run, with the `update_many` signature
    `(device_data, key, batch_size, horizon, discount) -> batch`: `sample_goal_chunks` with horizon
    `critic_horizon` (h_c) and the two goal samplings, adapted by `goal_training_batch` to the
    policy's `horizon` (h_a). Frozen and hashable: it is a static argument of the compiled loop."""

    critic_horizon: int
    value_goals: GoalSampling = VALUE_GOALS
    actor_goals: GoalSampling = ACTOR_GOALS

    def __call__(self, device_data: dict, key: jax.Array, batch_size: int, horizon: int, discount) -> dict:
        raw = sample_goal_chunks(
            device_data, key, batch_size, self.critic_horizon, discount, self.value_goals, self.actor_goals
        )
        return goal_training_batch(raw, horizon)
