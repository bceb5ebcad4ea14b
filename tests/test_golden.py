"""Golden values: the reshaping of issue 19 (and any later refactor) must not change a number.

Recorded once with the code before the reshaping (`python tests/test_golden.py --record` writes
tests/golden_values.json), then checked on every run: the parameters of qgf (iql and td critics),
fql, qam and a goal-conditioned dqc run after a few updates, a robustq add-on trained on a tiny run,
and one evaluation's per-condition results (own policy and QGF samplers rolled out on a scripted
env through the run -> policy bridge, `rollout` and `summarize`).

Each value is a SHA-256 of the raw float32 bytes (bit-identical) plus float64 sums and norms. The
hashes are compared where the recording machine's fingerprint (CPU vector extensions, JAX version,
XLA flags) is this one's: XLA may round differently on another CPU. Elsewhere the float64
summaries must agree to 1e-5 relative, which still catches any real change.

The td case has no 'value' network or V metrics: td runs stopped training the value network their
backup never read (issue 19); those entries were deleted from the recording, nothing re-recorded.

The configs and data are those of the contract suite (tests/agent_contract.py), so the compiled
update programs come from the suite's persistent compilation cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from helpers import make_dataset, small_config

GOLDEN_FILE = Path(__file__).with_name("golden_values.json")
OBS_DIM, ACTION_DIM = 4, 2
UPDATES = 3
RELATIVE_TOLERANCE = 1e-5

# (case name, agent, critic, extra config)
AGENT_CASES = [
    ("qgf-iql", "qgf", "iql", {}),
    ("qgf-td", "qgf", "td", {"num_critics": 3, "critic_aggregation": "mean"}),
    ("fql-iql", "fql", "iql", {}),
    ("qam-iql", "qam", "iql", {}),
    ("qgf-dqc-goal", "qgf", "dqc", {"goal_conditioned": True, "dqc_horizon": 4, "distill_expectile": 0.7}),
]


def machine_fingerprint() -> dict:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    vector = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "amx")))
    return {
        "machine": platform.machine(),
        "cpu_vector_flags": vector,
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def fingerprint_tree(tree) -> dict:
    """{path: [sha256 of the float32 bytes, float64 sum, float64 L2 norm]} for every leaf."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.asarray(leaf)
        wide = array.astype(np.float64)
        out[jax.tree_util.keystr(path)] = [
            hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:24],
            float(wide.sum()),
            float(np.sqrt((wide**2).sum())),
        ]
    return out


def agent_values(name: str, agent: str, critic: str, extra: dict) -> dict:
    from qgf.agents import agent_class
    from qgf.data.chunks import to_device

    config = small_config(agent=agent, critic=critic, **extra)
    obs_dim = config.network_obs_dim(OBS_DIM)
    fresh = agent_class(agent).create(0, obs_dim, ACTION_DIM, config)
    trained, metrics = fresh.update_many(to_device(make_dataset()), UPDATES)
    return {
        "params": fingerprint_tree(trained.params),
        "target_params": fingerprint_tree(trained.target_params),
        "metrics": {key: float(value) for key, value in sorted(metrics.items()) if "grad_norm" not in key},
    }


class ScriptedEnv:
    """A deterministic 4-d env: the observation drifts with the first action coordinate; success
    when it passes a threshold (so returns and successes depend on every action)."""

    class spec:  # noqa: N801 - gymnasium-like attribute
        max_episode_steps = 8

    class observation_space:  # noqa: N801
        shape = (OBS_DIM,)

    class action_space:  # noqa: N801
        shape = (ACTION_DIM,)

    _success_timing = "pre"

    @property
    def unwrapped(self):
        return self

    def reset(self, seed=None):
        rng = np.random.default_rng(seed)
        self.state = rng.normal(size=OBS_DIM) * 0.5
        return self.state.copy(), {}

    def step(self, action):
        action = np.asarray(action, np.float64)
        success = bool(self.state[0] > 1.0)
        self.state = self.state + np.array([action[0], action[1], -action[0], 0.1]) * 0.5
        reward = float(-np.abs(self.state[:2]).sum())
        return self.state.copy(), reward, success, False, {"success": success}


def make_scripted_env():
    return ScriptedEnv()


def evaluation_values(agent) -> dict:
    from qgf.evaluation.conditions import Condition
    from qgf.evaluation.rollout import rollout
    from qgf.evaluation.stats import summarize
    from qgf.guidance import SamplerSpec
    from qgf.policy import AgentPolicy

    steps = agent.config.flow_steps
    conditions = [
        Condition(SamplerSpec("none", steps=steps), 0.0),
        Condition(SamplerSpec("qgf", steps=steps), 0.3),
    ]
    if agent.name != "qgf":
        conditions.append(Condition(SamplerSpec("policy", steps=steps), 0.0))
    policy = AgentPolicy(agent, conditions)
    policy.warmup(4)
    result = rollout(make_scripted_env, policy, conditions, 3, seed=7, workers=0, num_envs=4)
    summaries = summarize(result, lambda c: (c.spec.label, c.weight, c.spec.best_of_n, c.spec.label))
    out = {}
    for item in summaries:
        out[f"{item.label}@{item.weight:g}"] = {
            "successes": item.successes,
            "episode_return": item.episode_return,
            "episode_length": item.episode_length,
            "q_mean": item.q_mean,
        }
    return out


def robustq_values(tmp: Path) -> dict:
    from qgf.addons.base import load_addon, train_addon
    from qgf.checkpoint import load_run
    from qgf.training import train

    run_dir = tmp / "run"
    train(
        small_config(steps=20, log_every=10, ckpt_every=20), run_dir, dataset=make_dataset(), progress=False
    )
    settings = {"steps": 20, "batch_size": 32, "log_every": 10, "ckpt_every": 10}
    train_addon(run_dir, "robustq", overrides=settings, dataset=make_dataset(), progress=False)
    run = load_run(run_dir)
    loaded = load_addon(run, "robustq")
    return {
        "run_params": fingerprint_tree(run.agent.params),
        "addon_params": fingerprint_tree(loaded.state.params),
        "evaluation": evaluation_values(run.agent),
    }


def compute_all(tmp: Path) -> dict:
    from qgf.agents import agent_class
    from qgf.data.chunks import to_device

    values = {name: agent_values(name, *rest) for name, *rest in AGENT_CASES}
    for agent in ("fql", "qam"):
        config = small_config(agent=agent, critic="iql")
        trained, _ = (
            agent_class(agent)
            .create(0, OBS_DIM, ACTION_DIM, config)
            .update_many(to_device(make_dataset()), UPDATES)
        )
        values[f"{agent}-iql"]["evaluation"] = evaluation_values(trained)
    values["robustq"] = robustq_values(tmp)
    return values


# --------------------------------------------------------------------------------------------------


def _compare(expected, found, where: str, exact: bool, problems: list[str]) -> None:
    if isinstance(expected, dict):
        if set(expected) != set(found):
            problems.append(f"{where}: keys differ: {sorted(set(expected) ^ set(found))}")
            return
        for key in expected:
            _compare(expected[key], found[key], f"{where}/{key}", exact, problems)
    elif isinstance(expected, list) and expected and isinstance(expected[0], str) and len(expected) == 3:
        digest, total, norm = expected
        if exact and digest != found[0]:
            problems.append(f"{where}: bytes differ (sum {total!r} -> {found[1]!r})")
        elif not np.allclose([total, norm], found[1:], rtol=RELATIVE_TOLERANCE, atol=1e-7):
            problems.append(f"{where}: sum/norm {total!r}/{norm!r} -> {found[1]!r}/{found[2]!r}")
    elif isinstance(expected, float) or (
        isinstance(expected, list) and expected and isinstance(expected[0], float)
    ):
        if exact and expected != found:
            problems.append(f"{where}: {expected!r} -> {found!r}")
        elif not np.allclose(expected, found, rtol=RELATIVE_TOLERANCE, atol=1e-7):
            problems.append(f"{where}: {expected!r} -> {found!r}")
    elif expected != found:
        problems.append(f"{where}: {expected!r} -> {found!r}")


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN_FILE.exists():
        pytest.fail(f"{GOLDEN_FILE.name} is missing: record it with `python tests/test_golden.py --record`")
    return json.loads(GOLDEN_FILE.read_text())


def test_golden_values_are_unchanged(golden, tmp_path):
    exact = golden["machine"] == machine_fingerprint()
    problems: list[str] = []
    _compare(golden["values"], json.loads(json.dumps(compute_all(tmp_path))), "", exact, problems)
    assert not problems, f"{len(problems)} golden values changed (exact={exact}):\n" + "\n".join(
        problems[:30]
    )


def test_the_comparison_can_fail():
    problems: list[str] = []
    _compare({"a": ["ff", 1.0, 1.0]}, {"a": ["fe", 1.0, 1.0]}, "", True, problems)
    _compare({"b": ["ff", 1.0, 1.0]}, {"b": ["ff", 1.001, 1.0]}, "", False, problems)
    _compare({"c": [1.0, 2.0]}, {"c": [1.0, 2.0000001]}, "", True, problems)
    _compare({"d": 3}, {"d": 4}, "", False, problems)
    assert len(problems) == 4


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    import conftest  # noqa: F401 - the suite's XLA flags, so the fingerprint matches test runs

    with tempfile.TemporaryDirectory() as tmp:
        document = {"machine": machine_fingerprint(), "values": compute_all(Path(tmp))}
    GOLDEN_FILE.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN_FILE}")
