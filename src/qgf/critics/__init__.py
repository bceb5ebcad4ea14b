"""The critic every agent trains, as a component chosen by `config.critic`: the registry.

    from qgf.critics import CRITICS, critic_for
    CRITICS.names                    # ('iql', 'td', 'dqc')
    critic = critic_for(config)      # the config's critic component (`qgf.critics.base.Critic`)
    params = critic.init_params(key, observations, actions)

Modules of the package:

- `networks`: the shared Q ensemble and value network, head aggregation;
- `losses`: the shared loss primitives (weighted means, chunk TD target, squared and expectile
  regressions) and the EMA update;
- `base`: the `Critic` protocol (its networks and their initialisation, which of them have EMA
  targets, its losses, whether its backup needs the policy's next actions, the Q that policies and
  guidance read, V where it has one) and the single-task Q loss that iql and td share;
- one module per critic: `iql` (chunked IQL, QGF Eqs. 11-12), `td` (pessimistic TD backups on the
  policy's samples, QAM Eq. 26), `dqc` (goal-conditioned Decoupled Q-Chunking, QGF Eqs. 13-16).

This module imports only `qgf.registry`, so config validation and `--help` can list the critics
without importing JAX; the critic modules load on first use. A critic module may import
`qgf.nets`, `qgf.errors`, `qgf.data.goals` and the modules of this package, never an agent.
"""

from __future__ import annotations

from qgf.registry import Registry

CRITICS = Registry(
    "critic",
    {
        "iql": "qgf.critics.iql:IQLCritic",
        "td": "qgf.critics.td:TDCritic",
        "dqc": "qgf.critics.dqc:DQCCritic",
    },
)


def critic_for(config):
    """The critic component of `config` (a `TrainConfig`): `CRITICS.get(config.critic)(config)`."""
    return CRITICS.get(config.critic)(config)
