"""Goal-conditioned chunk sampling (`qgf.data.goals`) against hand-built trajectories, the DQC critic's
losses (`qgf.critics.dqc`, QGF App. F Eqs. 13-16) against independent float64 numpy, and the
goal-conditioned presets (Table 4) as data."""

import dataclasses
import functools
import json
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf.config import available_presets, load_preset
from qgf.critics.dqc import (
    completion_expectile,
    distillation_loss,
    dqc_value_loss,
    goal_chunk_weights,
    long_critic_loss,
    long_critic_target,
    partial_chunk,
)
from qgf.data.chunks import sample_chunks, to_device
from qgf.data.goals import (
    ACTOR_GOALS,
    VALUE_GOALS,
    GoalSampling,
    gather_goal_chunks,
    sample_goal_chunks,
    sample_goal_rows,
)
from qgf.errors import QGFError

# Five trajectories of 4, 9, 3, 60 and 25 stored rows (the last row of each is its final state and
# starts no transition). obs_r = (r, trajectory id); a_r = (r/100, -r/100). Dataset rewards and masks
# are junk that goal batches must ignore.
LENGTHS = (4, 9, 3, 60, 25)
SIZE = sum(LENGTHS)
TRAJECTORY = np.repeat(np.arange(len(LENGTHS)), LENGTHS)
END = np.repeat(np.cumsum(LENGTHS) - 1, LENGTHS)  # each row's trajectory's last stored row
TRANSITIONS = np.flatnonzero(np.arange(SIZE) < END)
LONG_START = 16  # first row of the 60-row trajectory (rows 16..75, last transition 74)


@dataclasses.dataclass
class Trajectories:
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    masks: np.ndarray
    terminals: np.ndarray

    @property
    def size(self) -> int:
        return len(self.observations)


def trajectories() -> Trajectories:
    rows = np.arange(SIZE, dtype=np.float32)
    terminals = np.zeros(SIZE, np.float32)
    terminals[np.cumsum(LENGTHS) - 1] = 1.0
    return Trajectories(
        observations=np.stack([rows, TRAJECTORY.astype(np.float32)], axis=1),
        actions=np.stack([rows / 100, -rows / 100], axis=1),
        rewards=np.full(SIZE, 7.0, np.float32),
        masks=np.zeros(SIZE, np.float32),
        terminals=terminals,
    )


@pytest.fixture(scope="module")
def data():
    return to_device(trajectories(), capacity=SIZE + 17)  # padded: padding rows must never be drawn


sample_rows_jit = jax.jit(sample_goal_rows, static_argnames="sampling")
sample_goal_chunks_jit = jax.jit(
    sample_goal_chunks, static_argnames=("batch_size", "horizon", "value_goals", "actor_goals")
)


def rows_of(observations) -> np.ndarray:
    return np.asarray(observations)[:, 0].astype(int)


# ----------------------------------------------------------------------------- GoalSampling


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(p_cur=0.2, p_traj=0.5, p_rand=0.2),  # sums to 0.9
        dict(p_cur=0.5, p_traj=0.5, p_rand=0.5),
        dict(p_cur=-0.1, p_traj=0.6, p_rand=0.5),
        dict(p_cur=1.5, p_traj=-0.5, p_rand=0.0),
        dict(p_cur=float("nan"), p_traj=0.5, p_rand=0.5),
        dict(p_cur=True, p_traj=0.0, p_rand=0.0),
        dict(p_cur="0.2", p_traj=0.5, p_rand=0.3),
        dict(p_cur=0.2, p_traj=0.5, p_rand=0.3, geometric=1),
    ],
)
def test_goal_sampling_rejects_bad_settings_in_one_line(kwargs):
    with pytest.raises(QGFError) as info:
        GoalSampling(**kwargs)
    assert "\n" not in str(info.value) and "goal sampling" in str(info.value)


def test_goal_sampling_accepts_rounded_sums_and_ints():
    assert GoalSampling(0.1, 0.7, 0.2).p_traj == 0.7  # 0.1 + 0.7 + 0.2 != 1 exactly in binary
    assert GoalSampling(0, 1, 0, geometric=False).p_traj == 1.0
    assert (VALUE_GOALS.p_cur, VALUE_GOALS.p_traj, VALUE_GOALS.p_rand, VALUE_GOALS.geometric) == (
        0.2,
        0.5,
        0.3,
        True,
    )
    assert (ACTOR_GOALS.p_traj, ACTOR_GOALS.geometric) == (1.0, False)
    hash(VALUE_GOALS)  # static under jit


# ----------------------------------------------------------------------------- goal rows


def expected_event_probabilities(sampling: GoalSampling) -> np.ndarray:
    """P(goal = start), P(goal later in the same trajectory), P(anything else), starts uniform over
    transitions, computed from the definition (not from the sampler)."""
    n = len(TRANSITIONS)
    last = END[TRANSITIONS] - 1
    at_last = (TRANSITIONS == last).astype(float)
    later = (last - TRANSITIONS).astype(float)  # transition rows after t in its trajectory
    same = sampling.p_cur + sampling.p_traj * at_last + sampling.p_rand / n
    ahead = sampling.p_traj * (1 - at_last) + sampling.p_rand * later / n
    return np.array([same.mean(), ahead.mean(), 1 - same.mean() - ahead.mean()])


def observed_event_frequencies(starts: np.ndarray, goals: np.ndarray) -> np.ndarray:
    same = goals == starts
    ahead = (TRAJECTORY[goals] == TRAJECTORY[starts]) & (goals > starts)
    return np.array([same.mean(), ahead.mean(), 1 - same.mean() - ahead.mean()])


def test_value_and_actor_goal_mixtures_match_their_probabilities(data):
    value = GoalSampling(0.2, 0.5, 0.3, geometric=True)
    actor = GoalSampling(0.5, 0.0, 0.5)

    @jax.jit
    def many(key):
        def step(carry, key):
            batch = sample_goal_chunks(data, key, 4096, 5, 0.9, value, actor)
            return carry, (
                batch["observations"][:, 0],
                batch["value_goals"][:, 0],
                batch["actor_goals"][:, 0],
            )

        return jax.lax.scan(step, 0, jax.random.split(key, 25))[1]

    starts, value_goals, actor_goals = (np.asarray(x).ravel().astype(int) for x in many(jax.random.key(0)))
    assert len(starts) == 102_400
    for sampling, goals in ((value, value_goals), (actor, actor_goals)):
        np.testing.assert_allclose(
            observed_event_frequencies(starts, goals), expected_event_probabilities(sampling), atol=0.01
        )
    for goals in (starts, value_goals, actor_goals):  # padding and final rows are never drawn
        assert set(np.unique(goals)) <= set(TRANSITIONS)


def test_future_goals_stay_in_their_trajectory_at_or_after_the_start(data):
    starts = np.tile(TRANSITIONS, 300)
    last = END[starts] - 1
    for geometric in (True, False):
        sampling = GoalSampling(0.0, 1.0, 0.0, geometric=geometric)
        goals = np.asarray(
            sample_rows_jit(data, jax.random.key(1), jnp.asarray(starts, jnp.int32), sampling, 0.99)
        )
        assert np.all(TRAJECTORY[goals] == TRAJECTORY[starts])
        assert np.all(goals <= last)  # never a trajectory's final stored row
        assert np.all(goals[starts < last] > starts[starts < last])  # strictly in the future...
        assert np.all(goals[starts == last] == starts[starts == last])  # ...unless t is the last transition


def test_geometric_future_offsets_follow_the_discount_and_clamp_at_the_end(data):
    discount, draws = 0.9, 40_000
    far = np.asarray(
        sample_rows_jit(data, jax.random.key(2), jnp.full(draws, LONG_START), GoalSampling(0, 1, 0), discount)
    )
    offsets = far - LONG_START
    span = 74 - LONG_START  # 58 rows ahead; P(k) = (1 - g) g^(k-1), the tail k >= 58 lands on row 74
    pmf = (1 - discount) * discount ** np.arange(span - 1, dtype=np.float64)
    pmf = np.append(pmf, discount ** (span - 1))
    counts = np.bincount(offsets, minlength=span + 1)[1:] / draws
    np.testing.assert_allclose(counts[:3], pmf[:3], atol=0.008)
    np.testing.assert_allclose(offsets.mean(), np.sum(np.arange(1, span + 1) * pmf), atol=0.3)
    near = np.asarray(
        sample_rows_jit(data, jax.random.key(3), jnp.full(draws, 70), GoalSampling(0, 1, 0), discount)
    )
    np.testing.assert_allclose(np.mean(near == 74), discount**3, atol=0.015)  # P(k >= 4)
    assert set(np.unique(near)) == {71, 72, 73, 74}


def test_uniform_future_goals_cover_the_rest_of_the_trajectory_evenly(data):
    draws = 40_000
    goals = np.asarray(
        sample_rows_jit(
            data, jax.random.key(4), jnp.full(draws, LONG_START), GoalSampling(0, 1, 0, geometric=False), 0.99
        )
    )
    counts = np.bincount(goals, minlength=75)[LONG_START + 1 : 75]
    assert counts.sum() == draws and len(counts) == 58
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_random_goals_are_uniform_over_transition_rows_and_never_padding(data):
    starts = jnp.zeros(60_000, jnp.int32)
    goals = np.asarray(sample_rows_jit(data, jax.random.key(5), starts, GoalSampling(0, 0, 1), 0.99))
    counts = np.bincount(goals, minlength=SIZE + 17)
    assert set(np.flatnonzero(counts)) == set(TRANSITIONS)
    hits = counts[TRANSITIONS]
    assert hits.min() > 0.75 * hits.mean() and hits.max() < 1.25 * hits.mean()


# ----------------------------------------------------------------------------- rewards and masks


def actions_of(*rows):
    return np.concatenate([[r / 100, -r / 100] for r in rows])


H, GAMMA = 4, 0.5
FULL = -(1 + 0.5 + 0.25 + 0.125)
# (start, value goal row): (reward, mask, valid, next observation row, critic weight, action rows)
GOAL_CASES = {
    (4, 4): (0.0, 0.0, [1, 1, 1, 1], 8, 1, (4, 5, 6, 7)),  # goal = current state
    (4, 6): (-1.5, 0.0, [1, 1, 1, 1], 8, 1, (4, 5, 6, 7)),  # reached at step 2: steps 0, 1 cost -1
    (4, 7): (-1.75, 0.0, [1, 1, 1, 1], 8, 1, (4, 5, 6, 7)),
    (4, 8): (FULL, 1.0, [1, 1, 1, 1], 8, 1, (4, 5, 6, 7)),  # g = s_{t+h}: reached after the chunk
    (4, 11): (FULL, 1.0, [1, 1, 1, 1], 8, 1, (4, 5, 6, 7)),
    (5, 4): (FULL, 1.0, [1, 1, 1, 1], 9, 1, (5, 6, 7, 8)),  # a past state is never reached
    (4, 20): (FULL, 1.0, [1, 1, 1, 1], 8, 1, (4, 5, 6, 7)),  # another trajectory's state
    (10, 11): (-1.0, 0.0, [1, 1, 0, 0], 12, 1, (10, 11, 11, 11)),  # reached, then the trajectory ends
    (10, 5): (-1.5, 1.0, [1, 1, 0, 0], 12, 0, (10, 11, 11, 11)),  # crosses the end unreached: dropped
    (0, 2): (-1.5, 0.0, [1, 1, 1, 0], 3, 1, (0, 1, 2, 2)),
    (11, 11): (0.0, 0.0, [1, 0, 0, 0], 12, 1, (11, 11, 11, 11)),
    (13, 14): (-1.0, 0.0, [1, 1, 0, 0], 15, 1, (13, 14, 14, 14)),
}


def test_rewards_masks_and_weights_at_goal_reach_match_hand_computed_values(data):
    starts = jnp.array([s for s, _ in GOAL_CASES], jnp.int32)
    goals = jnp.array([g for _, g in GOAL_CASES], jnp.int32)
    actor_rows = jnp.full_like(starts, 30)
    batch = jax.jit(gather_goal_chunks, static_argnames="horizon")(data, starts, goals, actor_rows, H, GAMMA)
    weights = np.asarray(goal_chunk_weights(batch["valid"], batch["masks"]))
    for i, ((start, goal), (reward, mask, valid, next_row, weight, action_rows)) in enumerate(
        GOAL_CASES.items()
    ):
        where = f"start {start}, goal {goal}"
        assert batch["rewards"][i] == pytest.approx(reward, abs=1e-6), where
        assert batch["masks"][i] == mask, where
        np.testing.assert_array_equal(batch["valid"][i], valid, err_msg=where)
        assert rows_of(batch["next_observations"])[i] == next_row, where
        assert weights[i] == weight, where
        np.testing.assert_allclose(batch["actions"][i], actions_of(*action_rows), rtol=1e-6, err_msg=where)
        assert rows_of(batch["observations"])[i] == start and rows_of(batch["value_goals"])[i] == goal
    assert np.all(rows_of(batch["actor_goals"]) == 30)


def reference_goal_chunk(start: int, goal: int, horizon: int, discount: float) -> tuple[float, float, int]:
    """OGBench's one-step goal reward (0 and episode end at s = g, else -1) rolled over the chunk's
    steps inside the trajectory; returns (discounted reward, mask, next row)."""
    end, total, mask = END[start], 0.0, 1.0
    for i in range(horizon):
        row = start + i
        if row >= end:
            break
        if row == goal:
            mask = 0.0
            break
        total -= discount**i
    return total, mask, min(start + horizon, end)


def test_sampled_long_chunks_match_a_step_by_step_reference(data):
    horizon, discount = 25, 0.9  # h_c of Table 4: most chunks here cross a trajectory end
    batch = sample_goal_chunks_jit(
        data, jax.random.key(6), batch_size=2048, horizon=horizon, discount=discount
    )
    starts, goals = rows_of(batch["observations"]), rows_of(batch["value_goals"])
    expected = np.array(
        [reference_goal_chunk(s, g, horizon, discount) for s, g in zip(starts, goals, strict=True)]
    )
    np.testing.assert_allclose(batch["rewards"], expected[:, 0], rtol=1e-5)
    np.testing.assert_array_equal(batch["masks"], expected[:, 1])
    np.testing.assert_array_equal(rows_of(batch["next_observations"]), expected[:, 2])
    valid = (starts[:, None] + np.arange(horizon)[None, :]) < END[starts][:, None]
    np.testing.assert_array_equal(batch["valid"], valid)
    assert 0.1 < np.mean(batch["masks"] == 0) < 0.9  # both outcomes occur
    assert 0 < np.mean(valid[:, -1]) < 1


def test_goal_batches_extend_chunk_batches_and_run_inside_a_jitted_scan(data):
    @jax.jit
    def many(key):
        def step(carry, key):
            return carry, sample_goal_chunks(data, key, 8, 3, 0.99)

        return jax.lax.scan(step, 0, jax.random.split(key, 4))[1]

    batches = many(jax.random.key(7))
    plain = jax.eval_shape(
        functools.partial(sample_chunks, batch_size=8, horizon=3, discount=0.99), data, jax.random.key(7)
    )
    assert set(batches) == set(plain) | {"value_goals", "actor_goals"}
    for key, value in plain.items():
        assert batches[key].shape == (4, *value.shape) and batches[key].dtype == value.dtype
    assert batches["value_goals"].shape == batches["actor_goals"].shape == (4, 8, 2)
    again, other = many(jax.random.key(7)), many(jax.random.key(8))
    for key in batches:
        np.testing.assert_array_equal(batches[key], again[key])  # a key fixes the batch
    assert not np.array_equal(batches["value_goals"], other["value_goals"])


# ----------------------------------------------------------------------------- DQC losses (Eqs. 13-16)


def np_expectile(u: np.ndarray, tau: float) -> np.ndarray:
    return np.where(u < 0, 1 - tau, tau) * u**2


def test_eq13_long_chunk_backup_matches_numpy():
    rng = np.random.default_rng(0)
    heads, rows, discount, h_c = 2, 7, 0.99, 25
    q_c = rng.normal(size=(heads, rows))
    rewards, next_values = -rng.uniform(0, 20, rows), rng.normal(size=rows) * 10
    masks = np.array([1, 0, 1, 1, 0, 1, 1], float)
    weights = np.array([1, 1, 0, 1, 1, 1, 0], float)
    target = rewards + discount**h_c * masks * next_values
    expected = np.mean([np.sum(weights * (q_c[k] - target) ** 2) / weights.sum() for k in range(heads)])
    args = [jnp.asarray(x, jnp.float32) for x in (q_c, rewards, masks, next_values)]
    np.testing.assert_allclose(long_critic_target(*args[1:], discount, h_c), target, rtol=1e-5)
    loss = long_critic_loss(*args, discount, h_c, jnp.asarray(weights, jnp.float32))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    grads = jax.grad(long_critic_loss, argnums=(0, 3))(
        *args, discount, h_c, jnp.asarray(weights, jnp.float32)
    )
    assert np.all(np.asarray(grads[1]) == 0)  # the bootstrap V is a fixed target
    assert np.all(np.asarray(grads[0])[:, weights == 0] == 0) and np.any(np.asarray(grads[0]) != 0)


def test_eq14_value_expectile_loss_on_hand_computed_numbers():
    # u = Qbar - V = (-0.5, 0.5, 1.5): weights (0.1, 0.9, 0.9) * u^2 = (0.025, 0.225, 2.025)
    q_bar, values = jnp.array([1.0, 2.0, 3.0]), jnp.full(3, 1.5)
    assert dqc_value_loss(q_bar, values, 0.9, jnp.ones(3)) == pytest.approx(2.275 / 3, rel=1e-6)
    assert dqc_value_loss(q_bar, values, 0.9, jnp.array([1.0, 1.0, 0.0])) == pytest.approx(0.125, rel=1e-6)
    grad_q, grad_v = jax.grad(dqc_value_loss, argnums=(0, 1))(q_bar, values, 0.9, jnp.ones(3))
    assert np.all(np.asarray(grad_q) == 0)
    np.testing.assert_allclose(grad_v, [2 * 0.1 * 0.5 / 3, -2 * 0.9 * 0.5 / 3, -2 * 0.9 * 1.5 / 3], rtol=1e-6)


def test_eq15_distillation_loss_matches_numpy_and_trains_only_q_a():
    # hand numbers: u = (1, -1) with kappa_d = 0.8 -> (0.8, 0.2), mean 0.5
    assert distillation_loss(
        jnp.array([2.0, -1.0]), jnp.array([1.0, 0.0]), 0.8, jnp.ones(2)
    ) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    q_c, q_a = rng.normal(size=9) * 5, rng.normal(size=(2, 9)) * 5
    weights = (rng.uniform(size=9) > 0.3).astype(float)
    for kappa in (0.5, 0.8, 0.93):
        expected = np.mean(
            [np.sum(weights * np_expectile(q_c - q_a[k], kappa)) / weights.sum() for k in range(2)]
        )
        got = distillation_loss(jnp.asarray(q_c), jnp.asarray(q_a), kappa, jnp.asarray(weights))
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    grad_c, grad_a = jax.grad(distillation_loss, argnums=(0, 1))(
        jnp.asarray(q_c, jnp.float32), jnp.asarray(q_a, jnp.float32), 0.8, jnp.asarray(weights, jnp.float32)
    )
    assert np.all(np.asarray(grad_c) == 0) and np.any(np.asarray(grad_a) != 0)


def test_eq16_completion_expectile_is_eq15s_minimiser_and_tends_to_the_best_completion():
    # Q_c values of 6 completions (one tie) of two partial chunks (columns).
    completions = np.array([[-3.0, 0.5], [-1.0, 0.5], [-1.0, 2.0], [0.5, -4.0], [2.0, 1.0], [-6.0, 0.0]])
    np.testing.assert_allclose(
        completion_expectile(jnp.asarray(completions), 0.5), completions.mean(0), rtol=1e-6
    )
    np.testing.assert_allclose(
        completion_expectile(jnp.asarray(completions), 1.0), completions.max(0), rtol=1e-6
    )
    np.testing.assert_allclose(
        completion_expectile(jnp.asarray(completions.T), 0.8, axis=1), completion_expectile(completions, 0.8)
    )
    kappas = [0.5, 0.6, 0.8, 0.9, 0.99, 0.999]
    levels = np.array([np.asarray(completion_expectile(jnp.asarray(completions), k)) for k in kappas])
    assert np.all(np.diff(levels, axis=0) > 0) and np.all(levels[-1] < completions.max(0))
    np.testing.assert_allclose(levels[-1], completions.max(0), atol=0.03)
    for kappa, level in zip(kappas, levels, strict=True):  # first-order condition, in float64
        for column in range(2):
            u = completions[:, column] - level[column]
            assert abs(np.sum(np.where(u < 0, 1 - kappa, kappa) * u)) < 1e-4

    # Minimising Eq. 15 over one Q_a value per partial chunk lands on the same level.
    @jax.jit  # kappa traced: one compilation
    def fit(kappa):
        q_c = jnp.asarray(completions.T.ravel(), jnp.float32)  # rows: (chunk, completion)
        step = jax.grad(
            lambda q_a: distillation_loss(
                q_c, jnp.repeat(q_a, completions.shape[0]), kappa, jnp.ones(q_c.shape)
            )
        )
        return jax.lax.fori_loop(0, 3000, lambda _, q_a: q_a - step(q_a), jnp.zeros(2))

    for kappa in (0.5, 0.8, 0.95):
        np.testing.assert_allclose(fit(kappa), completion_expectile(completions, kappa), atol=1e-3)


def test_partial_chunk_takes_the_first_h_a_steps():
    chunks = jnp.arange(2 * 25 * 5, dtype=jnp.float32).reshape(2, 125)
    np.testing.assert_array_equal(partial_chunk(chunks, 25, 5), chunks[:, :25])
    np.testing.assert_array_equal(partial_chunk(chunks, 25, 25), chunks)
    with pytest.raises(ValueError):
        partial_chunk(chunks, 25, 26)
    with pytest.raises(ValueError):
        partial_chunk(chunks[:, :124], 25, 5)


# ----------------------------------------------------------------------------- presets (Table 4)

# domain: (h_c, h_a, tau, kappa_d, (BPTT, QFQL, QGF-Jacobian, QGF) guidance weights), QGF Table 4
TABLE_4 = {
    "puzzle-4x5": (25, 5, 0.9, 0.5, (10, 10, 3, 3)),
    "cube-triple": (25, 5, 0.93, 0.8, (3, 3, 3, 3)),
    "cube-quadruple": (25, 5, 0.93, 0.8, (10, 3, 10, 3)),
    "puzzle-4x6": (25, 1, 0.7, 0.5, (1, 1, 1, 1)),
    "cube-octuple": (25, 5, 0.93, 0.5, (10, 10, 10, 10)),
}


def goal_presets() -> dict[str, dict]:
    folder = resources.files("qgf").joinpath("presets", "goal")
    return {
        f.name[: -len(".json")]: json.loads(f.read_text())
        for f in folder.iterdir()
        if f.name.endswith(".json")
    }


def test_goal_presets_hold_table_4_and_valid_settings():
    presets = goal_presets()
    assert set(presets) == set(TABLE_4) | {"puzzle-3x3-cpu"}
    for name, preset in presets.items():
        config = load_preset(f"goal/{name}")  # loadable: flat TrainConfig fields + benchmark facts
        goal = preset["benchmark"]
        assert config.goal_conditioned and config.critic == "dqc"
        assert config.value_goal_sampling == GoalSampling(0.2, 0.5, 0.3, geometric=True)
        assert config.actor_goal_sampling == GoalSampling(0.0, 1.0, 0.0, geometric=False)
        assert config.critic_aggregation == ("mean" if goal["domain"].startswith("puzzle") else "min")
        assert config.dqc_horizon >= config.horizon and 0.5 <= config.distill_expectile < 1
        if name in TABLE_4:
            h_c, h_a, tau, kappa_d, weights = TABLE_4[name]
            assert (config.dqc_horizon, config.horizon, config.expectile, config.distill_expectile) == (
                h_c,
                h_a,
                tau,
                kappa_d,
            )
            assert (
                tuple(goal["guidance_weights"][m] for m in ("bptt", "ood", "qgf-jacobian", "qgf")) == weights
            )
            assert (config.batch_size, config.discount, config.steps, goal["scale"]) == (
                4096,
                0.999,
                10**6,
                "gpu",
            )
            assert config.actor_hidden_dims == config.critic_hidden_dims == (1024,) * 4
            assert "GPU scale" in preset["description"]
    cpu = presets["puzzle-3x3-cpu"]
    assert cpu["benchmark"]["scale"] == "cpu" and "Why puzzle-3x3" in cpu["description"]
    assert {f"goal/{name}" for name in presets} <= set(available_presets())
