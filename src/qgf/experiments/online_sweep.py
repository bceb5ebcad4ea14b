"""The online phase in a sweep: the spec's `[online]` table and the jobs of kind 'online'.

    [online]
    steps = 30000            # env steps of each run's online phase (required)
    sampling = "union"       # 'union' (QAM) or 'symmetric' (RLPD's 50/50)
    utd = 1                  # updates per env step
    weight = 0.1             # acting weight of a qgf run (QGF guidance of its frozen BC flow)
    eval_every = 3000        # env steps between curve points (default steps // 10)
    eval_episodes = 5        # episodes per curve point
    eval_seed = 3000         # the curve's evaluation seed (never one a choice is made on)
    agents = ["fql", "rlpd"] # labels of the agents to fine-tune (default: every agent)
    by_agent = { rlpd = { sampling = "symmetric" } }   # an agent's own sampling, utd, weight
    # optional: max_episode_steps (default the evaluation's), log_every, ckpt_every

Every run (agent x grid point x task x seed) of a listed agent gets one job
`online/<group>/<task>/seed<S>` after its train job: `qgf.online.finetune` of a copy of the run
into SWEEP/online/<group>/<task>/seed<S>-<hash of the online settings' identity>/, with the run's
seed as the online seed (episode resets and acting noise differ between seeds, as their training
does). It is done when its online checkpoint reaches `steps` and its curve
(OUT/online/curve.json) has the point there; a killed job resumes from its newest online
checkpoint. A listed agent may train 0 offline steps (`overrides.steps = 0`: online from a fresh
agent, RLPD), and then has no offline evaluation.

Standard library and `qgf.errors` at import (the spec parser reads it); `qgf.online`,
`qgf.checkpoint` and `qgf.evaluation.curve` inside functions.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from qgf.errors import QGFError

ONLINE_KEYS = {"steps", "sampling", "utd", "weight", "eval_every", "eval_episodes", "eval_seed", "agents"}
ONLINE_KEYS |= {"max_episode_steps", "log_every", "ckpt_every", "by_agent"}
BY_AGENT_KEYS = {"sampling", "utd", "weight"}  # what one agent may set for itself
ONLINE_DIR = "online"  # SWEEP/online/...
KEEP_CHECKPOINTS = 2


def _positive(where: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise QGFError(f"online.{where} must be an integer >= 1, got {value!r}")
    return value


def online_labels(document: dict[str, Any]) -> set[str] | None:
    """The agent labels the raw `[online]` table fine-tunes (None: no online phase), read before
    the agents are validated: those agents may train 0 offline steps."""
    table = document.get("online")
    if not isinstance(table, dict):
        return None
    agents = table.get("agents")
    if agents is None:
        return {
            str(raw.get("label", raw.get("name")))
            for raw in document.get("agents", [])
            if isinstance(raw, dict)
        }
    return {str(label) for label in agents} if isinstance(agents, list) else set()


def parse_online(table: Any, configs: list[tuple], evaluation: dict, protocol: dict | None) -> dict[str, Any]:
    """The validated `[online]` table with its defaults filled in; a one-line QGFError names the
    key. `configs`: (label, agent name, TrainConfig) of every agent and grid point of the spec;
    `evaluation`, `protocol`: the spec's tables (their seeds are taken; the episode limit is the
    default)."""
    from qgf.evaluation.curve import DEFAULT_CURVE_EPISODES, DEFAULT_CURVE_SEED, check_curve_seed
    from qgf.registry import suggest

    if not isinstance(table, dict):
        raise QGFError("[online] must be a table")
    unknown = sorted(set(table) - ONLINE_KEYS)
    if unknown:
        said = ", ".join(f"{key!r}{suggest(key, sorted(ONLINE_KEYS), n=1, cutoff=0.6)}" for key in unknown)
        raise QGFError(f"unknown key(s) in [online]: {said}; allowed: {', '.join(sorted(ONLINE_KEYS))}")
    if "steps" not in table:
        raise QGFError("[online] needs steps (env steps of each run's online phase)")
    steps = _positive("steps", table["steps"])
    online = {"sampling": "union", "utd": 1, "weight": 0.1, "eval_episodes": DEFAULT_CURVE_EPISODES}
    online |= {"eval_seed": DEFAULT_CURVE_SEED, "max_episode_steps": evaluation.get("max_episode_steps")}
    online |= {"by_agent": {}, **table}
    _check_acting(online, "online")
    _positive("eval_episodes", online["eval_episodes"])
    online["eval_every"] = _positive("eval_every", online.get("eval_every", max(1, steps // 10)))
    online["log_every"] = _positive(
        "log_every", online.get("log_every", math.gcd(online["eval_every"], 1000))
    )
    if online["eval_every"] % online["log_every"]:
        raise QGFError(
            f"online.eval_every ({online['eval_every']}) must be a multiple of online.log_every "
            f"({online['log_every']})"
        )
    online["ckpt_every"] = _positive("ckpt_every", online.get("ckpt_every", online["eval_every"]))
    if online["max_episode_steps"] is not None:
        _positive("max_episode_steps", online["max_episode_steps"])
    taken = {evaluation["seed"]: "the sweep evaluation's seed"}
    if protocol is not None:
        taken |= {protocol["tune_seed"]: "the protocol's tune_seed", protocol["final_seed"]: "the final_seed"}
    try:
        check_curve_seed(online["eval_seed"], taken)
    except QGFError as exc:
        raise QGFError(f"online.eval_seed: {exc}") from None
    labels = list(dict.fromkeys(label for label, _, _ in configs))
    agents = online.get("agents", labels)
    if not isinstance(agents, list) or not agents or not all(isinstance(a, str) for a in agents):
        raise QGFError(f"online.agents must be a non-empty list of agent labels, got {agents!r}")
    missing = [label for label in agents if label not in labels]
    if missing:
        raise QGFError(
            f"online.agents names {missing}, which are no agent labels of this spec; choose among {labels}"
        )
    online["agents"] = list(dict.fromkeys(agents))
    by_agent = online["by_agent"]
    if not isinstance(by_agent, dict):
        raise QGFError("online.by_agent must be a table {label = {sampling, utd, weight}}")
    for label, values in by_agent.items():
        if label not in online["agents"]:
            raise QGFError(f"online.by_agent.{label}: not among online.agents {online['agents']}")
        if not isinstance(values, dict) or not set(values) <= BY_AGENT_KEYS:
            raise QGFError(f"online.by_agent.{label} must be a table of {', '.join(sorted(BY_AGENT_KEYS))}")
        by_agent[label] = _check_acting(dict(values), f"online.by_agent.{label}")
    online_settings(online, 0)  # the phase's own checks
    _check_agents(online, configs)
    return online


def _check_acting(values: dict[str, Any], where: str) -> dict[str, Any]:
    """sampling, utd and weight of `values` (those present) checked; the weight made a float."""
    if "sampling" in values and values["sampling"] not in ("union", "symmetric"):
        raise QGFError(f"{where}.sampling must be 'union' or 'symmetric', got {values['sampling']!r}")
    if "utd" in values:
        utd = values["utd"]
        if not isinstance(utd, int) or isinstance(utd, bool) or utd < 1:
            raise QGFError(f"{where}.utd must be an integer >= 1, got {utd!r}")
    if "weight" in values:
        weight = values["weight"]
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not weight >= 0:
            raise QGFError(f"{where}.weight must be a number >= 0, got {weight!r}")
        values["weight"] = float(weight)
    return values


def _check_agents(online: dict[str, Any], configs: list[tuple]) -> None:
    """What the online phase refuses only once a job runs: goal-conditioned runs, and a frozen
    policy (online QGF) that trained 0 offline steps (it would act with an untrained flow)."""
    from qgf.evaluation.conditions import TEST_TIME_AGENTS

    for label, name, config in configs:
        if label not in online["agents"]:
            continue
        if config.goal_conditioned:
            raise QGFError(
                f"online.agents: {label!r} is goal-conditioned; the online phase runs single-task "
                "agents (remove it from online.agents)"
            )
        if config.steps == 0 and name in TEST_TIME_AGENTS:
            raise QGFError(
                f"online.agents: {label!r} trains 0 offline steps, and its online phase keeps its BC "
                "flow frozen (online QGF), so it would act with an untrained flow; give it offline steps"
            )


def online_settings(online: dict[str, Any], run_seed: int, label: str | None = None):
    """The `qgf.online.OnlineSettings` of one run's online job (seed: the run's; `label`: its
    agent, whose `by_agent` settings apply)."""
    from qgf.online import OnlineSettings

    fields = ("steps", "sampling", "utd", "weight", "eval_every", "eval_episodes", "eval_seed")
    fields += ("max_episode_steps", "log_every", "ckpt_every")
    values = {key: online[key] for key in fields} | online.get("by_agent", {}).get(label, {})
    try:
        return OnlineSettings(**values, seed=int(run_seed), keep_checkpoints=KEEP_CHECKPOINTS)
    except QGFError as exc:
        raise QGFError(f"[online]: {exc}") from None


def online_job_fields(
    online: dict[str, Any], agent_name: str, group: str, train: Any, seed: int, sweep_dir: Path
) -> dict[str, Any]:
    """id, out and params of the online job of seed `seed` of the train job `train`."""
    import dataclasses

    task = train.params["task"]
    settings = online_settings(online, seed, train.params["agent"]).resolved(agent_name)
    digest = hashlib.sha256(json.dumps(settings.identity(), sort_keys=True).encode()).hexdigest()[:8]
    params = {"run": str(Path(train.out) / f"seed{seed}"), "settings": dataclasses.asdict(settings)}
    params |= {"task": task, "data_dir": train.params["data_dir"], "agent": train.params["agent"]}
    return {
        "id": f"online/{group}/{task}/seed{seed}",
        "out": str(Path(sweep_dir) / ONLINE_DIR / group / task / f"seed{seed}-{digest}"),
        "params": {**params, "group": group, "run_seed": seed},
    }


def online_done(out: str | Path, params: dict[str, Any]) -> bool:
    """Whether the online phase in `out` reached its steps, with its curve's last point."""
    from qgf import checkpoint as ckpt
    from qgf.evaluation.curve import read_curve
    from qgf.online import online_dir

    steps = int(params["settings"]["steps"])
    if ckpt.latest_step(online_dir(out)) != steps:
        return False
    if not params["settings"]["eval_every"]:
        return True
    document = read_curve(online_dir(out))
    return bool(document and document["points"] and document["points"][-1].get("env_steps") == steps)


def run_online_job(out: str | Path, params: dict[str, Any]) -> None:
    """What an online job runs: `qgf.online.finetune` of its run into `out` (or its resumption)."""
    from qgf.online import OnlineSettings, finetune

    finetune(
        params["run"], out, OnlineSettings(**params["settings"]), data_dir=params["data_dir"], progress=False
    )
