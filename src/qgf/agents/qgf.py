"""`qgf`: the paper's own training — a BC flow policy and a critic, trained separately (QGF §5).

The velocity field is trained only by flow matching on dataset chunks (Eq. 2); the critic (IQL by
default, Eqs. 11-12) learns in the shared critic component. All policy improvement happens at test
time: `sample_actions` with any `qgf.guidance` sampler steers the frozen flow with the critic's
gradient. With `critic=td` the critic bootstraps on the BC flow's own (unguided) samples, which is
how QFQL trains (QFQL Alg. 1a): `qgf train critic=td` + `--sampler ood` is QFQL as its authors ran it.
In the online phase (`qgf.online`) the td critic instead backs up on the acting sampler's guided
actions (`backup_sampler`): TD on the guided policy's own actions (docs/training.md, "Online phase").
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax
import jax

from qgf.agents.base import Agent, Batch, Params
from qgf.config import TrainConfig
from qgf.flow import bc_flow_loss, build_velocity_field, flow_policy_actions, init_velocity_field


class QGFAgent(Agent):
    """BC flow ('actor') + shared critic ('critic', 'value'); guidance at test time."""

    name = "qgf"
    summary = "BC flow + critic trained separately; Q-gradient guidance at test time (QGF paper)"
    contract_losses = ("bc_loss",)

    # (SamplerSpec, weight) whose guided actions a td critic backs up on, or None: the BC flow's
    # unguided samples (offline training, QFQL Alg. 1a). Set by the online phase (`qgf.online`) to
    # its acting sampler; static, so the update compiles once per (spec, weight).
    backup_sampler: tuple | None = flax.struct.field(pytree_node=False, default=None)

    @classmethod
    def init_policy_params(cls, config: TrainConfig, key, observations, actions) -> Params:
        return {"actor": init_velocity_field(config, key, observations, actions)}

    @property
    def behavior_velocity_fn(self) -> Callable:
        """v(obs (B,D), a_t (B,d), t (B,)) -> (B,d) with the current actor parameters."""
        return functools.partial(
            build_velocity_field(self.config, self.chunk_dim).apply, self.params["actor"]
        )

    # The QGF run's only policy network is the BC flow; the name predates the agent family.
    velocity_fn = behavior_velocity_fn

    def velocity_from(self, params: Params) -> Callable:
        """v(obs, a_t, t) of the BC flow at `params` (the subclasses' flow at any parameters)."""
        return functools.partial(build_velocity_field(self.config, self.chunk_dim).apply, params["actor"])

    def policy_losses(self, params: Params, batch: Batch, key: jax.Array):
        bc_loss, _, _ = bc_flow_loss(self, params, batch, key)
        return bc_loss, {"bc_loss": bc_loss}

    def policy_actions_from(self, params: Params, observations, key):
        return flow_policy_actions(self.velocity_from(params), observations, key, self.config, self.chunk_dim)

    def backup_actions(self, params: Params, observations, key):
        """The BC flow's samples at `params`, or with `backup_sampler` the flow at `params` guided
        by that sampler with the guidance critic at `params` (`guided_actions`): what the agent acts
        with online."""
        if self.backup_sampler is None:
            return super().backup_actions(params, observations, key)
        spec, weight = self.backup_sampler
        return self.replace(params=params).guided_actions(observations, key, weight, spec)


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {"qgf": {"class": "QGFAgent", "order": 10, "sections": []}}
