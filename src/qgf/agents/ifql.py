"""`ifql`: IFQL, the flow counterpart of implicit diffusion Q-learning (IDQL; Park et al., 2025), a
post-processing baseline of the QAM paper (App. C Eqs. 84-86).

It trains what `qgf` trains — a BC flow ('actor', flow matching only) and the shared critic (with
the default critic=iql: chunked IQL, Q onto R + gamma^h V(s'), V the expectile kappa =
`expectile` of the target Q, Eqs. 84-85) — and extracts its policy by rejection sampling:

    a* = argmax_{a_1..a_N} Q(s, a_i),   a_i = ODE(v_theta(s, ., .), z_i),  z_i ~ N(0, I)      (Eq. 86)

with N = `ifql_samples` and Q the guidance critic aggregated over its heads (`Agent.q_fn`). That
is the acting policy (`--sampler policy`) and, with critic=td, what the critic backs up on. The
flow is a BC flow (`behavior_velocity_fn`), so every test-time sampler applies to an IFQL run too
(`--sampler none --bfn N` is its policy again). Choices: docs/fidelity.md, "ReBRAC, FBRAC, FAWAC,
IFQL".
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from qgf.agents.base import Params
from qgf.agents.qgf import QGFAgent
from qgf.flow import build_velocity_field
from qgf.guidance import SamplerSpec, sample_with_info


class IFQLAgent(QGFAgent):
    """BC flow ('actor') + shared critic; acts with the best of N flow samples under Q."""

    name = "ifql"
    summary = "IFQL: BC flow + IQL critic; acts with the argmax-Q of N flow samples (QAM Eq. 86)"
    contract_losses = ("bc_loss",)

    def best_of_n(self, params: Params, observations: jnp.ndarray, noise: jnp.ndarray):
        """(actions (B, d), candidate Q (B, N)) of Eq. 86 from given noise z (B, N, d)."""
        config = self.config
        velocity = functools.partial(build_velocity_field(config, self.chunk_dim).apply, params["actor"])
        n = noise.shape[1]
        spec = SamplerSpec("none", steps=config.flow_steps, best_of_n=n)
        # With the noise given, the key feeds nothing (the 'none' estimator draws no noise).
        actions, info = sample_with_info(
            velocity,
            self.q_fn,
            observations,
            jax.random.key(0),
            0.0,
            spec,
            self.chunk_dim,
            noise=noise if n > 1 else noise[:, 0],
        )
        return actions, (info["candidate_q"] if n > 1 else info["q"][:, None])

    def policy_actions_from(self, params: Params, observations, key):
        shape = (observations.shape[0], self.config.ifql_samples, self.chunk_dim)
        return self.best_of_n(params, observations, jax.random.normal(key, shape, observations.dtype))[0]


# ---- registration: read by qgf.agents with ast.literal_eval (listing agents imports no module) ----
AGENTS = {"ifql": {"class": "IFQLAgent", "order": 94, "sections": ["ifql"]}}
CONFIG_SECTIONS = {
    "ifql": {
        "title": "IFQL's best-of-N policy extraction (QAM paper Eq. 86)",
        "settings": {
            "ifql_samples": {
                "default": 32,
                "help": "ifql: number N of BC-flow samples whose argmax-Q chunk it acts with (Eq. 86)",
                "min": 1,
            },
        },
    },
}
