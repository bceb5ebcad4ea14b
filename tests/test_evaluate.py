"""Rollout bookkeeping against a scripted env: chunk queues, episode ends, success counting.

The fake env is a point on a line. It starts at 0 and moves by ``action[0]`` each step; the goal is
``position >= GOAL``. Like OGBench singletask envs (success_timing='pre'), the step's reward,
``info['success']`` and ``terminated`` describe the state *before* the action, so success shows one
step after the goal is reached. No MuJoCo involved.
"""

from __future__ import annotations

import numpy as np
import pytest

from qgf.errors import QGFError
from qgf.evaluation.rollout import PolicyOutput, rollout
from qgf.evaluation.stats import wilson_interval

GOAL = 6.0
LIMIT = 10
HORIZON = 3


class _Spec:
    max_episode_steps = LIMIT


class _Box:
    def __init__(self, n: int):
        self.shape = (n,)


class LineEnv:
    """Scripted env; keeps every executed action (per episode) in ``log`` for the tests."""

    spec = _Spec()
    observation_space = _Box(3)
    action_space = _Box(2)
    _success_timing = "pre"

    def __init__(self, log: list | None = None):
        self.log = log if log is not None else []

    @property
    def unwrapped(self):
        return self

    def reset(self, seed=None):
        self.position, self.t = 0.0, 0
        self.seed_feature = (seed % 1000) / 1000.0
        self.actions: list[np.ndarray] = []
        self.log.append(self.actions)
        return self._obs(), {}

    def _obs(self):
        return np.array([self.t, self.position, self.seed_feature], np.float64)

    def step(self, action):
        action = np.array(action, np.float64)
        self.actions.append(action)
        success_before = self.position >= GOAL
        reward = 0.0 if success_before else -1.0
        self.position += action[0]
        self.t += 1
        truncated = self.t >= LIMIT
        return self._obs(), reward, success_before, truncated, {"success": success_before}


def make_line_env():  # picklable factory for the worker-process tests
    return LineEnv()


class FailingEnv(LineEnv):
    def __init__(self):
        raise RuntimeError("the env cannot be built")


def speed_policy(speeds: list[float], noise: float = 0.0, q_from_time: bool = True):
    """Each condition moves at a fixed speed (plus optional seeded noise). The second action
    coordinate is the index within the chunk, so the env log shows where chunks start."""
    calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def policy(observations, conditions, noise_seeds):
        calls.append((observations.copy(), conditions.copy(), noise_seeds.copy()))
        batch = len(observations)
        chunk = np.zeros((batch, HORIZON, 2), np.float32)
        for row in range(batch):
            jitter = np.random.default_rng(int(noise_seeds[row])).uniform(-noise, noise) if noise else 0.0
            chunk[row, :, 0] = speeds[conditions[row]] + jitter + observations[row, 2] * noise
            chunk[row, :, 1] = np.arange(HORIZON) / 10.0
        q = observations[:, 0] if q_from_time else np.full(batch, np.nan)
        return PolicyOutput(chunk, q)

    policy.calls = calls
    return policy


def records_by_key(result):
    return {
        (r.condition, r.episode): (r.success, r.length, r.episode_return, r.chunk_q) for r in result.episodes
    }


def test_wilson_interval_matches_hand_computed_values():
    # Hand-computed from the score-interval formula with z = 1.95996 (also the textbook values).
    for successes, trials, low, high in [
        (0, 10, 0.0, 0.27753),
        (5, 10, 0.23659, 0.76341),
        (10, 10, 0.72247, 1.0),
        (1, 1, 0.20655, 1.0),
        (3, 20, 0.05236, 0.36040),
    ]:
        assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=5e-5)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def test_chunks_are_executed_open_loop_and_clipped():
    log: list = []
    # Condition 0 asks for speed 5: clipped to 1 -> reaches the goal after 6 actions, success is
    # reported at step 7 (first action of the third chunk), and the rest of that chunk is dropped.
    policy = speed_policy([5.0])
    result = rollout(lambda: LineEnv(log), policy, ["fast"], 2, seed=0, workers=0, num_envs=1)

    assert [(r.success, r.terminated, r.length, r.episode_return) for r in result.episodes] == [
        (True, True, 7, -6.0),
        (True, True, 7, -6.0),
    ]
    assert result.env_steps == 14 and result.action_horizon == HORIZON
    # Two episodes in the one env; each executed 3 + 3 + 1 actions, chunk indices restart per chunk
    # and a new episode starts with a fresh chunk, not the leftovers of the previous one.
    assert len(log) == 2
    for actions in log:
        assert [round(a[1], 1) for a in actions] == [0.0, 0.1, 0.2, 0.0, 0.1, 0.2, 0.0]
        assert all(a[0] == 1.0 for a in actions)  # clipped to [-1, 1]
    # The policy saw the state every HORIZON steps: t = 0, 3, 6 of each episode.
    times = [int(t) for observations, _, _ in policy.calls for t in observations[:, 0]]
    assert times == [0, 3, 6, 0, 3, 6]
    # Mean Q over executed chunks (q = time at the chunk's start here): (0 + 3 + 6) / 3.
    assert [np.mean(r.chunk_q) for r in result.episodes] == [3.0, 3.0]


def test_success_follows_the_pre_step_semantics_at_the_time_limit():
    # speed 0.7: the goal is reached by action 9, reported at step 10 = the limit -> success.
    # speed 0.6: reached only by action 10, the last one; never reported -> failure.
    # speed 0.5: never reached -> failure, truncated at the limit.
    policy = speed_policy([0.7, 0.6, 0.5, 1.0])
    result = rollout(make_line_env, policy, ["a", "b", "c", "d"], 1, seed=3, workers=0, num_envs=4)
    summary = [(r.condition, r.success, r.terminated, r.length, r.episode_return) for r in result.episodes]
    assert summary == [
        (0, True, True, 10, -9.0),
        (1, False, False, 10, -10.0),
        (2, False, False, 10, -10.0),
        (3, True, True, 7, -6.0),
    ]


def test_every_condition_gets_its_episodes_and_batches_mix_conditions():
    policy = speed_policy([1.0, 0.5, 0.7])
    result = rollout(make_line_env, policy, ["x", "y", "z"], 4, seed=1, workers=0, num_envs=6, groups=2)
    assert [(r.condition, r.episode) for r in result.episodes] == [(c, e) for c in range(3) for e in range(4)]
    assert [sum(r.success for r in result.for_condition(c)) for c in range(3)] == [4, 0, 4]
    # Groups of 3 envs: a batch never exceeds the group, and some batch holds two conditions.
    assert max(len(observations) for observations, _, _ in policy.calls) == 3
    assert any(len(set(conditions.tolist())) > 1 for _, conditions, _ in policy.calls)


def test_results_do_not_depend_on_batching_or_env_assignment():
    # Noisy speeds around the success threshold: outcomes depend on the noise seeds, which must
    # follow the episode and chunk, not the env slot or the batch.
    def run(num_envs: int, groups: int):
        policy = speed_policy([0.62, 0.68], noise=0.1)
        return records_by_key(
            rollout(make_line_env, policy, ["a", "b"], 6, seed=7, workers=0, num_envs=num_envs, groups=groups)
        )

    reference = run(1, 1)
    assert len({success for success, *_ in reference.values()}) == 2  # the test exercises both outcomes
    assert run(5, 2) == reference
    assert run(12, 3) == reference
    other_seed = records_by_key(
        rollout(make_line_env, speed_policy([0.62, 0.68], 0.1), ["a", "b"], 6, seed=8, workers=0)
    )
    assert other_seed != reference


def test_conditions_share_reset_seeds_and_noise_per_episode():
    policy = speed_policy([1.0, 1.0])
    rollout(make_line_env, policy, ["a", "b"], 3, seed=0, workers=0, num_envs=2, groups=1)
    first_chunk = {}
    for observations, conditions, seeds in policy.calls:
        for obs, condition, seed in zip(observations, conditions, seeds, strict=True):
            if obs[0] == 0:
                first_chunk.setdefault(int(condition), []).append((obs[2], int(seed)))
    assert first_chunk[0] == first_chunk[1]  # same initial state feature and noise seed per episode
    assert len(set(first_chunk[0])) == 3  # but different across episodes


def test_worker_processes_give_the_same_results_as_in_process():
    conditions = ["a", "b"]
    in_process = rollout(make_line_env, speed_policy([0.62, 0.68], 0.1), conditions, 3, seed=2, workers=0)
    in_workers = rollout(
        make_line_env, speed_policy([0.62, 0.68], 0.1), conditions, 3, seed=2, workers=2, num_envs=4
    )
    assert records_by_key(in_workers) == records_by_key(in_process)
    assert in_workers.env.success_timing == "pre" and in_workers.env.max_episode_steps == LIMIT


def test_a_failing_worker_is_reported_not_hung():
    with pytest.raises(QGFError, match="cannot be built"):
        rollout(FailingEnv, speed_policy([1.0]), ["a"], 1, workers=1)


def test_bad_policy_output_is_a_clear_error():
    def wrong_width(observations, conditions, seeds):
        return PolicyOutput(np.zeros((len(observations), 7), np.float32), np.zeros(len(observations)))

    with pytest.raises(QGFError, match="multiple of 2"):
        rollout(make_line_env, wrong_width, ["a"], 1, workers=0)


def test_summary_statistics_per_condition():
    from qgf.evaluation.stats import summarize

    # Condition 0 (speed 1) always succeeds in 7 steps; condition 1 (speed 0.5) never does.
    result = rollout(
        make_line_env, speed_policy([1.0, 0.5]), ["fast", "slow"], 4, seed=0, workers=0, num_envs=3
    )
    fast, slow = summarize(result, lambda name: (name, 0.1, 1, name))
    assert (fast.sampler, fast.episodes, fast.successes, fast.success_rate) == ("fast", 4, 4, 1.0)
    assert (fast.ci_low, fast.ci_high) == pytest.approx((0.5101, 1.0), abs=1e-4)  # Wilson 4/4
    assert (fast.return_mean, fast.return_std, fast.length_mean) == (-6.0, 0.0, 7.0)
    assert fast.q_mean == 3.0  # chunks chosen at t = 0, 3, 6
    assert (slow.successes, slow.length_mean, slow.return_mean) == (0, 10.0, -10.0)
    assert slow.q_mean == pytest.approx(4.5)  # chunks at t = 0, 3, 6, 9
    assert (slow.ci_low, slow.ci_high) == pytest.approx((0.0, 0.4899), abs=1e-4)  # Wilson 0/4
    assert fast.episode_success == [True] * 4 and slow.episode_length == [10] * 4
    assert fast.wall_clock_s + slow.wall_clock_s == pytest.approx(result.wall_clock_s)


def test_q_mean_is_absent_without_a_critic():
    from qgf.evaluation.stats import summarize

    result = rollout(make_line_env, speed_policy([1.0], q_from_time=False), ["bc"], 1, workers=0)
    (summary,) = summarize(result, lambda name: (name, 0.0, 1, name))
    assert summary.q_mean is None


# --------------------------------------------------------------------------------------------------
# The agent-backed policy (JAX; a tiny randomly initialised agent)


def test_sweep_crosses_samplers_best_of_n_and_weights():
    from qgf.evaluation.conditions import sweep_conditions
    from qgf.guidance import SamplerSpec

    conditions = sweep_conditions(["qgf", "none"], [0.1, 0.0, 0.1], [1, 4], steps=7)
    described = [(c.spec.label, c.spec.steps, c.weight) for c in conditions]
    assert described == [
        ("qgf", 7, 0.0),
        ("qgf", 7, 0.1),
        ("qgf+bfn-4", 7, 0.0),
        ("qgf+bfn-4", 7, 0.1),
        ("none", 7, 0.0),  # BC does not depend on the weight: evaluated once
        ("bfn-4", 7, 0.0),
    ]
    given = sweep_conditions([SamplerSpec("ood", steps=3)], [0.5], [1, 4], steps=10)
    assert [(c.spec.label, c.spec.steps, c.weight) for c in given] == [("ood", 3, 0.5)]
    with pytest.raises(QGFError, match=">= 0"):
        sweep_conditions(["qgf"], [-0.1], [1], steps=10)
    with pytest.raises(QGFError, match="qgf-chain"):
        sweep_conditions(["qgf-chian"], [0.1], [1], steps=10)


@pytest.fixture(scope="module")
def tiny_agent():
    import jax

    from qgf.agents.qgf import QGFAgent
    from qgf.config import load_preset

    config = load_preset("tiny", warn=False)
    return jax.jit(lambda: QGFAgent.create(0, 3, 2, config))()  # one compilation, not one per op


def test_agent_policy_rows_do_not_depend_on_their_batch(tiny_agent):
    from qgf.evaluation.conditions import sweep_conditions
    from qgf.policy import AgentPolicy

    conditions = sweep_conditions(["qgf", "none"], [0.0, 2.0], [1], steps=10)  # qgf@0, qgf@2, none@0
    policy = AgentPolicy(tiny_agent, conditions)
    policy.warmup(4)
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(4, 3)).astype(np.float32)
    seeds = np.array([11, 12, 13, 14], np.uint32)
    mixed = policy(observations, np.array([0, 1, 2, 1]), seeds)
    assert mixed.actions.shape == (4, 10) and mixed.q.shape == (4,) and np.isfinite(mixed.q).all()
    assert np.abs(mixed.actions).max() <= 1.0
    for row, condition in enumerate([0, 1, 2, 1]):  # each row alone gives the same chunk
        alone = policy(observations[row : row + 1], np.array([condition]), seeds[row : row + 1])
        np.testing.assert_allclose(alone.actions[0], mixed.actions[row], atol=1e-5)
        np.testing.assert_allclose(alone.q[0], mixed.q[row], atol=1e-5)
    # Same state, same noise: QGF at weight 0 is BC, a large weight moves the chunk.
    same = policy(np.repeat(observations[:1], 3, 0), np.array([0, 1, 2]), np.full(3, 5, np.uint32))
    np.testing.assert_allclose(same.actions[0], same.actions[2], atol=1e-5)
    assert np.abs(same.actions[1] - same.actions[0]).max() > 1e-3
    # A different noise seed gives a different chunk.
    other = policy(observations[:1], np.array([2]), np.array([99], np.uint32))
    assert np.abs(other.actions[0] - mixed.actions[0]).max() > 1e-3


def test_agent_policy_rejects_observations_of_the_wrong_size(tiny_agent):
    from qgf.evaluation.conditions import sweep_conditions
    from qgf.policy import AgentPolicy

    policy = AgentPolicy(tiny_agent, sweep_conditions(["none"], [0.0], [1], steps=10))
    with pytest.raises(QGFError, match="trained on 3"):
        policy(np.zeros((1, 5), np.float32), np.array([0]), np.array([0], np.uint32))


def test_evaluation_env_name_follows_the_run_and_the_task_override():
    from qgf.evaluation.conditions import evaluation_env_name

    assert evaluation_env_name("cube-double-play-singletask-task2-v0") == (
        "cube-double-singletask-task2-v0",
        2,
    )
    assert evaluation_env_name("cube-double-play-singletask-task2-v0", 4) == (
        "cube-double-singletask-task4-v0",
        4,
    )
    assert evaluation_env_name("cube-single-play-v0", 3) == ("cube-single-singletask-task3-v0", 3)
    assert evaluation_env_name("cube-single-play-v0") == ("cube-single-singletask-v0", None)


def test_env_only_timing_reference():
    from qgf.evaluation.envtiming import time_env_stepping

    timing = time_env_stepping(make_line_env, total_steps=50, workers=2, num_envs=3)
    assert timing["wall_s"] >= timing["stepping_s"] > 0 and timing["steps_per_second"] > 0
    with pytest.raises(QGFError, match="cannot be built"):
        time_env_stepping(FailingEnv, total_steps=5, workers=1, num_envs=1)


class OracleCubeEnv:
    """The real cube-single task env driven by OGBench's scripted pick-and-place oracle (noise 0):
    the rollout's actions are replaced by the oracle's, so episodes succeed like a good policy's."""

    def __init__(self):
        import os

        os.environ.setdefault("MUJOCO_GL", "egl")
        from ogbench.manipspace import lie
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle

        from qgf.envs import make_env

        self.yaw = lambda quaternion: lie.SO3(wxyz=quaternion).compute_yaw_radians()
        self.env = make_env("cube-single-singletask-task1-v0")
        self.spec, self.unwrapped = self.env.spec, self.env.unwrapped
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space
        self.oracle = CubePlanOracle(env=self.env, noise=0.0)

    def _with_target(self, info):  # the oracle reads the target from data-collection-mode info keys
        data, mocap = self.unwrapped._data, self.unwrapped._cube_target_mocap_ids[0]
        target = {
            "privileged/target_block": 0,
            "privileged/target_block_pos": data.mocap_pos[mocap].copy(),
            "privileged/target_block_yaw": np.array([self.yaw(data.mocap_quat[mocap])]),
        }
        return {**info, **target}

    def reset(self, seed=None):
        self.observation, info = self.env.reset(seed=seed)
        self.info = self._with_target(info)
        self.oracle.reset(self.observation, self.info)
        return self.observation, info

    def step(self, action):
        oracle_action = self.oracle.select_action(self.observation, self.info)
        self.observation, reward, terminated, truncated, info = self.env.step(oracle_action)
        self.info = self._with_target(info)
        return self.observation, reward, terminated, truncated, info


def test_success_on_the_real_env_with_the_scripted_oracle():
    def zero_policy(observations, conditions, noise_seeds):
        return PolicyOutput(
            np.zeros((len(observations), HORIZON, 5), np.float32), np.zeros(len(observations))
        )

    result = rollout(OracleCubeEnv, zero_policy, ["oracle"], 2, seed=0, workers=0, num_envs=1)
    assert result.env.success_timing == "pre" and result.env.max_episode_steps == 200
    for record in result.episodes:
        assert record.success and record.terminated and 20 < record.length < 200
        # Reward -1 per step until the cube is placed; the terminating step's reward (like its
        # success flag) describes the placed state before its action, so it is 0.
        assert record.episode_return == -(record.length - 1)


def _identities(pool) -> list[int]:
    """What a kept pool is made of: its worker processes' pids, or its in-process envs' ids."""
    if hasattr(pool, "processes"):
        assert all(process.is_alive() for process in pool.processes)
        return [process.pid for process in pool.processes]
    return [id(env) for host in pool.hosts for env in host.envs]


@pytest.mark.parametrize("workers", [1, 0])
def test_kept_envs_are_reused_and_give_the_same_results(workers):
    from qgf.evaluation import workers as evaluate

    def run(workers: int, keep: bool):
        policy = speed_policy([0.62, 0.68], 0.1)
        return rollout(make_line_env, policy, ["a", "b"], 3, seed=5, workers=workers, keep_envs=keep)

    evaluate.close_kept_envs()
    reference = run(1 - workers, keep=False)  # the other layout, nothing kept
    try:
        first = run(workers, keep=True)
        (pool,) = evaluate._KEPT_POOLS.values()
        assert isinstance(pool, evaluate.InProcessPool if workers == 0 else evaluate.ProcessPool)
        made_of = _identities(pool)
        second = run(workers, keep=True)
        (again,) = evaluate._KEPT_POOLS.values()
        assert again is pool and _identities(again) == made_of
        assert records_by_key(first) == records_by_key(second) == records_by_key(reference)
        if workers:
            assert second.startup_s < first.startup_s  # no spawn, no env construction the second time
        run(1 - workers, keep=True)  # the other kind of pool for the same env and layout is kept apart
        assert len(evaluate._KEPT_POOLS) == 2
    finally:
        evaluate.close_kept_envs()
    assert not evaluate._KEPT_POOLS
    if workers:
        assert not any(process.is_alive() for process in pool.processes)


def test_an_interrupted_rollout_does_not_keep_its_env_workers():
    from qgf.evaluation import workers as evaluate

    evaluate.close_kept_envs()

    def broken(observations, conditions, seeds):
        raise RuntimeError("policy failed")

    with pytest.raises(RuntimeError, match="policy failed"):
        rollout(make_line_env, broken, ["a"], 2, workers=1, keep_envs=True)
    assert not evaluate._KEPT_POOLS


def test_policies_of_different_runs_share_compiled_samplers_but_not_parameters():
    import jax

    from helpers import small_config
    from qgf import policy as evaluate
    from qgf.agents.qgf import QGFAgent
    from qgf.evaluation.conditions import sweep_conditions
    from qgf.policy import AgentPolicy

    config = small_config()
    first, second = (QGFAgent.create(seed, 4, 2, config) for seed in (0, 1))
    conditions = sweep_conditions(["qgf"], [0.1], [1], config.flow_steps)
    observations = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    seeds, rows = np.arange(3, dtype=np.uint32), np.zeros(3, np.int64)

    evaluate._SHARED_ACT.clear()
    AgentPolicy(first, conditions)(observations, rows, seeds)
    shared = dict(evaluate._SHARED_ACT)
    reused = AgentPolicy(second, conditions)(observations, rows, seeds)
    assert evaluate._SHARED_ACT == shared  # the second policy compiled nothing new
    evaluate._SHARED_ACT.clear()
    alone = AgentPolicy(second, conditions)(observations, rows, seeds)  # compiled afresh
    np.testing.assert_array_equal(reused.actions, alone.actions)
    np.testing.assert_array_equal(reused.q, alone.q)
    assert not np.allclose(reused.actions, AgentPolicy(first, conditions)(observations, rows, seeds).actions)
    assert jax.tree.structure(first) == jax.tree.structure(second)


def test_a_run_is_evaluated_with_its_own_method_by_default():
    """qgf runs: QGF over the weight grid; training-time agents: their own policy, once."""
    import types

    from qgf.agents import AGENT_NAMES, agent_class
    from qgf.evaluation.conditions import default_samplers
    from qgf.evaluation.run import EvaluationOptions

    options = EvaluationOptions(weights=(0.0, 0.03, 0.1))
    for name in AGENT_NAMES:
        run = types.SimpleNamespace(
            agent=types.SimpleNamespace(name=agent_class(name).name),
            config=types.SimpleNamespace(flow_steps=10),
        )
        conditions = options.condition_list(run)
        if name == "qgf":
            assert default_samplers(run) == ("qgf",)
            assert [(c.spec.estimator, c.weight) for c in conditions] == [
                ("qgf", 0.0),
                ("qgf", 0.03),
                ("qgf", 0.1),
            ]
        else:
            assert default_samplers(run) == ("policy",), name
            assert [(c.spec.estimator, c.weight) for c in conditions] == [("policy", 0.0)], name
    named = EvaluationOptions(samplers=["qgf"], weights=(0.03,)).condition_list(run)  # a qam-edit run
    assert [(c.spec.estimator, c.weight) for c in named] == [("qgf", 0.03)]
    with pytest.raises(QGFError, match="did you mean 'episodes'"):
        EvaluationOptions.of(None, {"episode": 3})
