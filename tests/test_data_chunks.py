"""The chunk sampler's semantics at trajectory ends, checked against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf.data import Dataset
from qgf.data.chunks import gather_chunks, sample_chunks, to_device, trajectory_ends

# Two trajectories: rows 0-3 (last stored row 3) and rows 4-8 (last stored row 8).
# obs_i = (i, -i); a_i = (i/10, -i/10); r_i = i + 1; the state at row 6 is a solved state (mask 0).
SIZE = 9
TERMINALS = np.array([0, 0, 0, 1, 0, 0, 0, 0, 1], np.float32)
MASKS = np.ones(SIZE, np.float32)
MASKS[6] = 0.0


def tiny_dataset(size=SIZE, terminals=TERMINALS, masks=MASKS) -> Dataset:
    rows = np.arange(size, dtype=np.float32)
    return Dataset(
        observations=np.stack([rows, -rows], axis=1),
        actions=np.stack([rows / 10, -rows / 10], axis=1),
        rewards=rows + 1,
        masks=masks,
        terminals=terminals,
        name="tiny",
        path="",
        split="train",
        fingerprint="",
        task=1,
        sparse=False,
        action_clip_eps=0.0,
        reward_semantics="",
        mask_semantics="",
    )


def a(*rows):
    return np.concatenate([[r / 10, -r / 10] for r in rows]).astype(np.float32)


# start: (actions of the 3 steps, reward with discount 0.5, mask, valid, next observation row)
EXPECTED = {
    0: (a(0, 1, 2), 1 + 0.5 * 2 + 0.25 * 3, 1.0, [1, 1, 1], 3),  # ends exactly at the last row
    1: (a(1, 2, 2), 2 + 0.5 * 3, 1.0, [1, 1, 0], 3),  # crosses the end: last action repeats
    2: (a(2, 2, 2), 3.0, 1.0, [1, 0, 0], 3),
    4: (a(4, 5, 6), 5 + 0.5 * 6 + 0.25 * 7, 0.0, [1, 1, 1], 7),  # reaches the solved state s_6
    6: (a(6, 7, 7), 7 + 0.5 * 8, 0.0, [1, 1, 0], 8),
    7: (a(7, 7, 7), 8.0, 1.0, [1, 0, 0], 8),  # rows past the end of the whole dataset are never read
}


def test_trajectory_ends():
    np.testing.assert_array_equal(trajectory_ends(TERMINALS), [3, 3, 3, 3, 8, 8, 8, 8, 8])
    with pytest.raises(ValueError):
        trajectory_ends(np.array([0, 1, 0], np.float32))


@pytest.mark.parametrize("capacity", [None, 16])
def test_chunks_at_trajectory_ends_match_hand_computed_values(capacity):
    data = to_device(tiny_dataset(), capacity=capacity)
    starts = jnp.array(list(EXPECTED), jnp.int32)
    batch = jax.jit(gather_chunks, static_argnames="horizon")(data, starts, horizon=3, discount=0.5)
    assert batch["actions"].shape == (6, 6) and batch["valid"].shape == (6, 3)
    for row, (actions, reward, mask, valid, next_row) in enumerate(EXPECTED.values()):
        start = list(EXPECTED)[row]
        np.testing.assert_allclose(batch["observations"][row], [start, -start])
        np.testing.assert_allclose(batch["actions"][row], actions, rtol=1e-6)
        np.testing.assert_allclose(batch["rewards"][row], reward, rtol=1e-6)
        assert batch["masks"][row] == mask
        np.testing.assert_array_equal(batch["valid"][row], valid)
        np.testing.assert_allclose(batch["next_observations"][row], [next_row, -next_row])


def test_sampling_inside_a_jitted_scan_only_draws_transition_starts():
    data = to_device(tiny_dataset())

    @jax.jit
    def many_batches(data, key):
        def step(carry, key):
            batch = sample_chunks(data, key, batch_size=64, horizon=3, discount=0.5)
            return carry, batch["observations"][:, 0]

        return jax.lax.scan(step, 0, jax.random.split(key, 50))[1]

    drawn = np.asarray(many_batches(data, jax.random.key(0))).ravel()
    assert set(drawn.astype(int)) == {0, 1, 2, 4, 5, 6, 7}  # never a trajectory's last row
    counts = np.bincount(drawn.astype(int), minlength=SIZE)[[0, 1, 2, 4, 5, 6, 7]]
    assert counts.min() > 0.6 * counts.mean()  # uniform over the 7 transitions (3200 draws)


def test_same_key_same_batch_and_padding_never_sampled():
    padded = to_device(tiny_dataset(), capacity=32)
    first = sample_chunks(padded, jax.random.key(1), 256, 3, 0.99)
    again = sample_chunks(padded, jax.random.key(1), 256, 3, 0.99)
    other = sample_chunks(padded, jax.random.key(2), 256, 3, 0.99)
    np.testing.assert_array_equal(first["observations"], again["observations"])
    assert not np.array_equal(first["observations"], other["observations"])
    assert np.asarray(first["observations"][:, 0]).max() <= 7


def test_equal_capacity_slices_share_one_compilation():
    traces = []

    def counted(*args, **kwargs):
        traces.append(1)  # runs once per trace, i.e. once per compilation
        return sample_chunks(*args, **kwargs)

    sampler = jax.jit(counted, static_argnames=("batch_size", "horizon"))
    small_terminals = np.array([0, 0, 1, 0, 0, 1], np.float32)
    small = tiny_dataset(6, small_terminals, np.ones(6, np.float32))
    for dataset in (tiny_dataset(), small):
        batch = sampler(
            to_device(dataset, capacity=12), jax.random.key(0), batch_size=8, horizon=2, discount=0.9
        )
        assert batch["next_observations"].shape == (8, 2)
    assert len(traces) == 1
