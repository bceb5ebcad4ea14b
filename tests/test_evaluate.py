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
from qgf.evaluate import PolicyOutput, rollout, wilson_interval

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
