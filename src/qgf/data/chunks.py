"""On-device action-chunk batches for chunked critics and flow policies (see docs/architecture.md).

A chunk starts at a row t that begins a transition (any row but a trajectory's last) and covers
steps t, ..., t+h-1. Let e be the last row of t's trajectory (its terminal row). Step t+i is *valid*
when t+i < e, i.e. it is a transition of the same trajectory. For a chunk that reaches past e:

- `actions` past the end repeat the last valid action (a_{e-1}), so the array stays well-formed;
- `rewards` sum γ^i r_{t+i} over the valid steps only;
- `masks` is the minimum of the valid steps' masks (0 if any of them is a solved state);
- `next_observations` is s_{min(t+h, e)}: the state after the last valid step;
- `valid[:, i]` says which steps are real; the critic loss uses `valid[:, -1]` to drop such chunks.

Everything is a pure function of device arrays and a PRNG key, so `sample_chunks` can be traced inside
a jitted (and `lax.scan`-ned) training step with `batch_size` and `horizon` static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DEVICE_KEYS = (
    "observations",
    "actions",
    "rewards",
    "masks",
    "trajectory_end",
    "transition_starts",
    "num_transitions",
)


def trajectory_ends(terminals: np.ndarray) -> np.ndarray:
    """For every row, the index of the last row of its trajectory."""
    terminal_rows = np.flatnonzero(np.asarray(terminals) > 0.5)
    if terminal_rows.size == 0 or terminal_rows[-1] != len(terminals) - 1:
        raise ValueError("terminals must mark the last row of every trajectory, including the final row")
    return terminal_rows[np.searchsorted(terminal_rows, np.arange(len(terminals)))]


def complete_chunk_starts(terminals: np.ndarray, horizon: int) -> np.ndarray:
    """Rows t whose chunk t, ..., t+h-1 is made of h transitions of one trajectory: every step of it
    is *valid* (t+h-1 < e, the rule of `gather_chunks`), so the chunk needs no padding. With h = 1,
    every row that begins a transition (the rows `sample_chunks` draws from)."""
    end = trajectory_ends(terminals)
    return np.flatnonzero(np.arange(end.shape[0]) + horizon <= end)


def to_device(dataset, capacity: int | None = None, device=None) -> dict:
    """Put a `Dataset` on the device with the index arrays the sampler needs.

    `capacity` pads every array to that many rows, so that slices of different sizes share one shape
    and rotating slices never recompiles the training step (padding rows are never sampled).
    """
    size = dataset.size
    capacity = size if capacity is None else int(capacity)
    if capacity < size:
        raise ValueError(f"capacity {capacity} is smaller than the dataset ({size} rows)")
    end = trajectory_ends(dataset.terminals).astype(np.int32)
    starts = complete_chunk_starts(dataset.terminals, 1).astype(np.int32)

    def pad(array: np.ndarray) -> np.ndarray:
        if capacity == size:
            return array
        widths = [(0, capacity - size)] + [(0, 0)] * (array.ndim - 1)
        return np.pad(array, widths, mode="edge")

    host = {
        "observations": pad(np.asarray(dataset.observations, np.float32)),
        "actions": pad(np.asarray(dataset.actions, np.float32)),
        "rewards": pad(np.asarray(dataset.rewards, np.float32)),
        "masks": pad(np.asarray(dataset.masks, np.float32)),
        "trajectory_end": pad(end),
        "transition_starts": np.pad(starts, (0, capacity - starts.size), mode="edge"),
        "num_transitions": np.asarray(starts.size, np.int32),
    }
    return {key: jax.device_put(value, device) for key, value in host.items()}


def gather_chunks(device_data: dict, starts: jax.Array, horizon: int, discount: float) -> dict:
    """The chunk batch for explicit start rows `starts` (B,). Semantics in the module docstring."""
    steps = jnp.arange(horizon)
    end = device_data["trajectory_end"][starts]  # (B,)
    rows = starts[:, None] + steps[None, :]  # (B, h)
    valid = rows < end[:, None]
    clamped = jnp.minimum(rows, end[:, None] - 1)  # last valid row repeats past the end
    batch_size = starts.shape[0]
    actions = device_data["actions"][clamped].reshape(batch_size, -1)
    discounts = jnp.asarray(discount, jnp.float32) ** steps
    rewards = jnp.sum(jnp.where(valid, device_data["rewards"][clamped], 0.0) * discounts, axis=1)
    masks = jnp.min(jnp.where(valid, device_data["masks"][clamped], 1.0), axis=1)
    next_rows = jnp.minimum(starts + horizon, end)
    return {
        "observations": device_data["observations"][starts],
        "actions": actions,
        "rewards": rewards,
        "masks": masks,
        "valid": valid.astype(jnp.float32),
        "next_observations": device_data["observations"][next_rows],
    }


def sample_chunks(device_data: dict, key: jax.Array, batch_size: int, horizon: int, discount: float) -> dict:
    """Draw `batch_size` chunk starts uniformly over all transition rows and gather their chunks.

    Jit it with `batch_size` and `horizon` static (they fix shapes); `discount` may be traced.
    """
    picks = jax.random.randint(key, (batch_size,), 0, device_data["num_transitions"])
    starts = device_data["transition_starts"][picks]
    return gather_chunks(device_data, starts, horizon, discount)


sample_chunks_jit = jax.jit(sample_chunks, static_argnames=("batch_size", "horizon"))
