"""The config section of goal-conditioned training: how `qgf.data.goals` draws value and actor
goals (`qgf.sections` format). It applies to runs with goal_conditioned=true.

Kept apart from `qgf.data.goals` (JAX) so that reading it imports nothing: `qgf.config` reads the
literal with ast.literal_eval; `check_goal_settings` is imported for goal-conditioned runs only.
Imports only `qgf.errors`.
"""

from __future__ import annotations

from typing import Any

from qgf.errors import QGFError

CONFIG_SECTIONS = {
    "goals": {
        "title": "goal-conditioned training: hindsight goals of the critics and the policy (qgf.data.goals)",
        "applies": {"goal_conditioned": True},
        "check": "qgf.data.goal_settings:check_goal_settings",
        "settings": {
            "value_goal_p_cur": {
                "default": 0.2,
                "help": "goal_conditioned: P(value goal = the current state)",
                "min": 0.0,
                "max": 1.0,
            },
            "value_goal_p_traj": {
                "default": 0.5,
                "help": "goal_conditioned: P(value goal = a future state of the same trajectory)",
                "min": 0.0,
                "max": 1.0,
            },
            "value_goal_p_rand": {
                "default": 0.3,
                "help": "goal_conditioned: P(value goal = a random dataset state)",
                "min": 0.0,
                "max": 1.0,
            },
            "value_goal_geometric": {
                "default": True,
                "help": "goal_conditioned: future value goals at a Geometric(1 - discount) offset "
                "(else uniform)",
            },
            "actor_goal_p_cur": {
                "default": 0.0,
                "help": "goal_conditioned: P(actor goal = the current state)",
                "min": 0.0,
                "max": 1.0,
            },
            "actor_goal_p_traj": {
                "default": 1.0,
                "help": "goal_conditioned: P(actor goal = a future state of the same trajectory)",
                "min": 0.0,
                "max": 1.0,
            },
            "actor_goal_p_rand": {
                "default": 0.0,
                "help": "goal_conditioned: P(actor goal = a random dataset state)",
                "min": 0.0,
                "max": 1.0,
            },
            "actor_goal_geometric": {
                "default": False,
                "help": "goal_conditioned: future actor goals at a Geometric(1 - discount) offset "
                "(else uniform)",
            },
        },
    },
}
_GOAL_SUM_TOLERANCE = 1e-6


def check_goal_settings(values: Any, config: Any) -> None:
    """Goal-conditioned training goes with the dqc critic; each goal's probabilities are a mixture."""
    if config.critic != "dqc":
        raise QGFError(
            f"goal_conditioned=true needs critic=dqc (critic={config.critic} is single-task only); "
            "drop the critic override or set critic=dqc"
        )
    for who in ("value_goal", "actor_goal"):
        names = [f"{who}_p_{kind}" for kind in ("cur", "traj", "rand")]
        probabilities = [getattr(values, name) for name in names]  # each in [0, 1]: the bounds above
        if abs(sum(probabilities) - 1.0) > _GOAL_SUM_TOLERANCE:
            raise QGFError(
                f"{' + '.join(names)} must sum to 1, got "
                f"{' + '.join(f'{value:g}' for value in probabilities)} = {sum(probabilities):g}"
            )
