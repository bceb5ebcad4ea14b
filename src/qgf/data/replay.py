"""The online replay buffer and the batches of offline ∪ online data (the online phase, `qgf.online`).

`OnlineBuffer` keeps the transitions an agent collects in the layout of `qgf.data.chunks.to_device`
(compact rows: row i holds s_i, the action taken in it, r_i and m_i labelled at s_i; the last row of
a trajectory holds its final state), in fixed-capacity arrays with a counter of the rows that start
a transition. The device copy therefore has one shape for the whole phase, `gather_chunks` reads it
unchanged, and sampling stays inside the jitted update loop. The episode being collected is stored
as it grows: its rows' `trajectory_end` is its newest row, so chunks that reach past what has been
collected so far are cut there exactly as the offline sampler cuts chunks at a trajectory end (and
masked out of the critic loss by `valid`); when the episode continues the end moves forward.

`MixedSampler` draws the batch of one update from both buffers: `union` (uniform over every
transition of offline ∪ online, the QAM paper's setting) or `symmetric` (RLPD: the first half of the
batch offline, the second half online; all offline while the online buffer is empty).

Host arrays are the reference copy; `device()` copies the rows written since the last call into the
device arrays (one jitted slice update per array, lengths rounded up to powers of two so that only a
few programs compile).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from qgf.data.chunks import gather_chunks
from qgf.errors import QGFError

SAMPLING_MODES = ("union", "symmetric")
_ROW_KEYS = ("observations", "actions", "rewards", "masks", "trajectory_end")
STATE_KEYS = (*_ROW_KEYS, "transition_starts", "counters")


class OnlineBuffer:
    """Transitions collected online, episode by episode, in the `to_device` layout (module docstring)."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        if capacity < 2:
            raise QGFError(f"the online buffer needs a capacity of at least 2 rows, got {capacity}")
        self.capacity = int(capacity)
        self.host = {
            "observations": np.zeros((capacity, obs_dim), np.float32),
            "actions": np.zeros((capacity, action_dim), np.float32),
            "rewards": np.zeros(capacity, np.float32),
            "masks": np.ones(capacity, np.float32),
            "trajectory_end": np.zeros(capacity, np.int32),
            "transition_starts": np.zeros(capacity, np.int32),
        }
        self.size = 0  # rows written
        self.num_transitions = 0  # rows that start a transition (every row but a trajectory's last)
        self.episode_start: int | None = None  # first row of the episode being collected
        self._device: dict | None = None
        self._dirty_row = 0  # rows >= this (and transition starts >= _dirty_start) need a copy
        self._dirty_start = 0

    # ------------------------------------------------------------------ writing

    def _claim(self, rows: int) -> int:
        if self.size + rows > self.capacity:
            raise QGFError(
                f"the online buffer is full ({self.capacity} rows); give the phase a larger capacity"
            )
        first = self.size
        self.size += rows
        return first

    def start_episode(self, observation: np.ndarray, reward: float, mask: float) -> None:
        """Begin an episode at its first state s_0 (labelled r_0, m_0). Ends the one in progress."""
        self.end_episode()
        row = self._claim(1)
        self.host["observations"][row] = observation
        self.host["rewards"][row] = reward
        self.host["masks"][row] = mask
        self.host["trajectory_end"][row] = row
        self.episode_start = row
        self._dirty_row = min(self._dirty_row, row)

    def extend(
        self, actions: np.ndarray, observations: np.ndarray, rewards: np.ndarray, masks: np.ndarray
    ) -> None:
        """Append n executed steps of the current episode: `actions[i]` was taken in the newest
        state, `observations[i]` is the state it led to, labelled `rewards[i]`, `masks[i]`."""
        if self.episode_start is None:
            raise QGFError("OnlineBuffer.extend needs an episode: call start_episode first")
        n = len(actions)
        if not (len(observations) == len(rewards) == len(masks) == n) or n == 0:
            raise ValueError("extend needs n >= 1 actions and n states, rewards and masks")
        last = self.size - 1
        self._claim(n)
        host = self.host
        host["actions"][last : last + n] = actions
        host["actions"][last + n] = actions[-1]  # the final row's action is never used (no successor)
        host["observations"][last + 1 : last + n + 1] = observations
        host["rewards"][last + 1 : last + n + 1] = rewards
        host["masks"][last + 1 : last + n + 1] = masks
        host["trajectory_end"][self.episode_start : last + n + 1] = last + n
        host["transition_starts"][self.num_transitions : self.num_transitions + n] = np.arange(last, last + n)
        self.num_transitions += n
        self._dirty_row = min(self._dirty_row, self.episode_start)

    def end_episode(self) -> None:
        """Close the episode in progress: its newest row stays its trajectory end."""
        self.episode_start = None

    @property
    def terminals(self) -> np.ndarray:
        """(size,) 1 at the last row of every trajectory (the current episode's newest row too)."""
        rows = np.arange(self.size)
        return (self.host["trajectory_end"][: self.size] == rows).astype(np.float32)

    # ------------------------------------------------------------------ the device copy

    def device(self, device=None) -> dict:
        """The device arrays (`to_device`'s keys), with every row written so far."""
        if self._device is None:
            self._device = {key: jax.device_put(value, device) for key, value in self.host.items()}
            self._device["num_transitions"] = jnp.asarray(self.num_transitions, jnp.int32)
        else:
            rows, row_offset = _block(self.host["observations"].shape[0], self._dirty_row, self.size)
            starts, start_offset = _block(self.capacity, self._dirty_start, self.num_transitions)
            self._device = _write_blocks(
                self._device,
                {key: self.host[key][row_offset : row_offset + rows] for key in _ROW_KEYS},
                self.host["transition_starts"][start_offset : start_offset + starts],
                np.asarray([row_offset, start_offset, self.num_transitions], np.int32),
            )
        self._dirty_row, self._dirty_start = self.size, self.num_transitions
        if self.episode_start is not None:  # the episode's trajectory_end moves with its next rows
            self._dirty_row = self.episode_start
        return self._device

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, np.ndarray]:
        """The rows written so far and the counters (what a checkpoint stores)."""
        state = {key: self.host[key][: self.size].copy() for key in _ROW_KEYS}
        state["transition_starts"] = self.host["transition_starts"][: self.num_transitions].copy()
        state["counters"] = np.asarray(
            [self.size, self.num_transitions, -1 if self.episode_start is None else self.episode_start],
            np.int32,
        )
        return state

    @classmethod
    def from_state(cls, state: dict, capacity: int) -> OnlineBuffer:
        """A buffer holding `state` (from `state()`); an episode in progress there is closed: the
        environment's state was not stored, so collection resumes with a new episode."""
        observations = np.asarray(state["observations"])
        buffer = cls(capacity, observations.shape[1], np.asarray(state["actions"]).shape[1])
        size, transitions, _ = (int(value) for value in np.asarray(state["counters"]))
        if size > capacity:
            raise QGFError(f"the stored online buffer has {size} rows, more than the capacity {capacity}")
        for key in _ROW_KEYS:
            buffer.host[key][:size] = np.asarray(state[key])
        buffer.host["transition_starts"][:transitions] = np.asarray(state["transition_starts"])
        buffer.size, buffer.num_transitions = size, transitions
        return buffer


def _block(capacity: int, first: int, end: int) -> tuple[int, int]:
    """(length, offset) of the block that copies rows [first, end): a power-of-two length (so few
    programs compile), at least 1, ending inside the array; the other rows it covers are copied
    unchanged (host and device agree on them)."""
    length = min(1 << max(end - first - 1, 0).bit_length(), capacity)
    return length, max(min(first, capacity - length), 0)


@functools.partial(jax.jit, donate_argnums=(0,))
def _write_blocks(device: dict, row_blocks: dict, start_block, offsets) -> dict:
    """The device arrays with the host's blocks written in: one compiled call per chunk."""
    out = dict(device)
    for key, block in row_blocks.items():
        index = (offsets[0],) + (0,) * (block.ndim - 1)
        out[key] = jax.lax.dynamic_update_slice(device[key], block, index)
    out["transition_starts"] = jax.lax.dynamic_update_slice(
        device["transition_starts"], start_block, (offsets[1],)
    )
    out["num_transitions"] = offsets[2]
    return out


@dataclasses.dataclass(frozen=True)
class MixedSampler:
    """`sample_fn` of an online update: batches of chunks from {"offline": ..., "online": ...}
    (both in the `to_device` layout). Hashable, so the compiled update loop is reused."""

    mode: str = "union"

    def __post_init__(self):
        if self.mode not in SAMPLING_MODES:
            raise QGFError(f"online sampling must be one of {SAMPLING_MODES}, got {self.mode!r}")

    def sources(self, data: dict, key: jax.Array, batch_size: int):
        """(offline picks, online picks, from_online (B,) bool): indices into each buffer's
        transition starts, and which buffer each row of the batch takes."""
        n_offline = data["offline"]["num_transitions"]
        n_online = data["online"]["num_transitions"]
        pick_key, offline_key, online_key = jax.random.split(key, 3)
        if self.mode == "union":
            index = jax.random.randint(pick_key, (batch_size,), 0, n_offline + n_online)
            from_online = index >= n_offline
            offline = jnp.minimum(index, n_offline - 1)
            online = jnp.clip(index - n_offline, 0, jnp.maximum(n_online - 1, 0))
            return offline, online, from_online
        offline = jax.random.randint(offline_key, (batch_size,), 0, n_offline)
        online = jax.random.randint(online_key, (batch_size,), 0, jnp.maximum(n_online, 1))
        from_online = (jnp.arange(batch_size) >= batch_size // 2) & (n_online > 0)
        return offline, online, from_online

    def __call__(self, data: dict, key: jax.Array, batch_size: int, horizon: int, discount: float) -> dict:
        offline_pick, online_pick, from_online = self.sources(data, key, batch_size)
        offline, online = data["offline"], data["online"]
        offline_batch = gather_chunks(offline, offline["transition_starts"][offline_pick], horizon, discount)
        online_batch = gather_chunks(online, online["transition_starts"][online_pick], horizon, discount)

        def choose(a, b):
            return jnp.where(from_online.reshape((-1,) + (1,) * (a.ndim - 1)), b, a)

        return jax.tree.map(choose, offline_batch, online_batch)
