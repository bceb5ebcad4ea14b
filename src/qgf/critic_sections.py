"""The critics' config sections: the settings that only one critic reads (`qgf.sections` format).

The whole file is one block meant to move into the critic modules of a `qgf.critics` package (then
name the new module(s) in `qgf.config.SECTION_MODULES` and the new path in the dqc "check"). It is
read with ast.literal_eval to list keys and build configs; `check_dqc` is imported for dqc runs
only. Imports only `qgf.errors`.
"""

from __future__ import annotations

from typing import Any

from qgf.errors import QGFError

# ---- critic sections (begin): move as one block ----
CONFIG_SECTIONS = {
    "td": {
        "title": "the td critic: TD backups on the agent's own policy samples (QAM Eq. 26)",
        "applies": {"critic": "td"},
        "settings": {
            "critic_pessimism": {
                "default": 0.5,
                "help": "rho of the td critic's target mean_K Qbar - rho * std_K Qbar (QAM Eq. 26)",
                "min": 0.0,
            },
        },
    },
    "dqc": {
        "title": "the dqc critic: goal-conditioned Decoupled Q-Chunking (QGF App. F Eqs. 13-16)",
        "applies": {"critic": "dqc"},
        "check": "qgf.critic_sections:check_dqc",
        "settings": {
            "dqc_horizon": {
                "default": 25,
                "help": "dqc: chunk length h_c of the long critic Q_c (Eq. 13); `horizon` is h_a, the "
                "policy's and Q_a's",
                "min": 1,
            },
            "distill_expectile": {
                "default": 0.8,
                "help": "dqc: expectile kappa_d distilling Q_c into Q_a (Eq. 15); 0.5 = mean over "
                "completions",
                "above": 0.0,
                "below": 1.0,
            },
        },
    },
}


def check_dqc(values: Any, config: Any) -> None:
    """dqc is the goal-conditioned critic, and its long chunk holds the policy's chunk."""
    if not config.goal_conditioned:
        raise QGFError(
            "critic=dqc is the goal-conditioned critic: set goal_conditioned=true "
            "(qgf train --goal-conditioned) or use critic=iql or td"
        )
    if values.dqc_horizon < config.horizon:
        raise QGFError(
            f"critic=dqc needs dqc_horizon (h_c) >= horizon (h_a), got dqc_horizon={values.dqc_horizon} "
            f"< horizon={config.horizon}"
        )


# ---- end of the critic sections ----
