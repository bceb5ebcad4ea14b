"""What names a sweep's directories: the settings hash, and a run group's name from its config's
identity, kept stable across the config's growth (a run trained before a field existed keeps its
directory, so a sweep never retrains it). Also the task-name helpers the planner shares."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from qgf.experiments.spec import AgentSpec, SweepSpec, run_config


def settings_hash(settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]


# The keys that became config sections (qgf.sections) with the values they had by default when
# every config held all of them (qgf before sections, commit a5bea95). A run directory's name hashes
# the config's identity with these filled in wherever the config does not hold the key, which
# reproduces the names of the directories written before sections (their runs are not retrained),
# while a key added later (a new agent's section) enters only the names of the runs it applies to.
# Frozen: never edit or extend it, whatever the sections' defaults become.
LEGACY_SECTION_VALUES: dict[str, Any] = {
    "critic_pessimism": 0.5,
    "dqc_horizon": 25,
    "distill_expectile": 0.8,
    "value_goal_p_cur": 0.2,
    "value_goal_p_traj": 0.5,
    "value_goal_p_rand": 0.3,
    "value_goal_geometric": True,
    "actor_goal_p_cur": 0.0,
    "actor_goal_p_traj": 1.0,
    "actor_goal_p_rand": 0.0,
    "actor_goal_geometric": False,
    "fql_alpha": 300.0,
    "edp_bc_weight": 30.0,
    "normalize_q_loss": True,
    "dac_alpha": 100.0,
    "qsm_inv_temperature": 0.1,
    "qsm_bc_weight": 10.0,
    "actor_grad_clip": 0.0,
    "qam_inv_temperature": 0.1,
    "qam_time_offset": 0.5,
    "qam_fql_alpha": 30.0,
    "qam_edit_sigma": 0.1,
    "qam_edit_target_entropy": -0.5,
}


# Shared config fields added after sections, with their defaults. A run's name leaves such a field
# out while it holds its default (the runs named before it existed keep their names) and hashes it
# once it is set to anything else. Append a field here when you add one to TrainConfig.
LATER_SHARED_DEFAULTS: dict[str, Any] = {
    "matmul_precision": "default",
    "actor_layer_norm": True,
    "network_style": "qgf",
}

# The same for keys added to an existing config section after sections (the runs of the agents it
# applies to keep their names while the key holds its default). Append a key here when you add one.
LATER_SECTION_DEFAULTS: dict[str, Any] = {
    "q_term_critic": "guidance",
    "dac_gradient_scale": "none",
    "ddpm_step_std": "beta",
}
_LATER_DEFAULTS = {**LATER_SHARED_DEFAULTS, **LATER_SECTION_DEFAULTS}


def _config_identity(config) -> dict[str, Any]:
    """What names a run directory: the config's identity (its shared fields and the sections that
    apply) without seed and schedule (so more steps resume it), over LEGACY_SECTION_VALUES."""
    from qgf.config import SCHEDULE_FIELDS

    identity = {
        k: v
        for k, v in config.to_dict().items()
        if k not in SCHEDULE_FIELDS and k != "seed" and not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])
    }
    return {**LEGACY_SECTION_VALUES, **identity}


@dataclasses.dataclass(frozen=True)
class RunGroup:
    """One agent at one grid point: the unit the protocol chooses among for training-time values."""

    agent: AgentSpec
    point: dict[str, Any]
    config: Any  # TrainConfig

    @property
    def name(self) -> str:
        return f"{self.agent.label}-{settings_hash(_config_identity(self.config))}"

    @property
    def point_label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.point.items())) or "default"


def run_groups(spec: SweepSpec) -> list[RunGroup]:
    return [
        RunGroup(agent, point, run_config(agent, spec.overrides, point))
        for agent in spec.agents
        for point in agent.grid_points()
    ]


def domain_dataset(task: str) -> str:
    from qgf.envs import parse_name

    return parse_name(task).dataset_name


def domain_of(task: str) -> str:
    from qgf.envs import parse_name

    return parse_name(task).domain


def task_id(task: str) -> int:
    from qgf.envs import parse_name

    return int(parse_name(task).task)
