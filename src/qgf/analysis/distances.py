"""Fig. 17 of the QGF paper: distances of the final actions to the BFN action of the same
observation and to the nearest dataset action chunk.

Which dataset chunks are complete is the rule of `qgf.data.chunks` (`complete_chunk_starts`).
Imports JAX, numpy, `qgf.errors` and `qgf.analysis.methods`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qgf.analysis.methods import summarize_rows
from qgf.errors import QGFError

Array = jax.Array


def action_chunks(actions: np.ndarray, starts: np.ndarray, horizon: int) -> np.ndarray:
    """(len(starts), h * A): the chunks beginning at `starts`, flattened row-major in time."""
    actions = np.asarray(actions, np.float32)
    index = np.asarray(starts)[:, None] + np.arange(horizon)[None, :]
    return actions[index].reshape(len(starts), horizon * actions.shape[1])


@jax.jit
def _nearest_in_block(queries: Array, block: Array, is_real: Array) -> tuple[Array, Array]:
    """Squared distance to, and index of, each query's nearest real row of `block`."""
    squared = (
        jnp.sum(queries**2, axis=1)[:, None] + jnp.sum(block**2, axis=1)[None, :] - 2.0 * queries @ block.T
    )
    squared = jnp.where(is_real[None, :], squared, jnp.inf)
    return jnp.min(squared, axis=1), jnp.argmin(squared, axis=1)


def nearest_neighbour_distances(queries: Array, references: Array, block_size: int = 8192) -> np.ndarray:
    """(Q,) Euclidean distance of each query row to its nearest reference row.

    References are scanned in blocks (so memory is Q x block_size) with the expansion
    |x|^2 + |r|^2 - 2 x.r; the winner's distance is then recomputed exactly as |x - r|, which removes
    the expansion's cancellation error for near neighbours.
    """
    queries = jnp.asarray(queries, jnp.float32)
    references = jnp.asarray(references, jnp.float32)
    if references.shape[0] == 0:
        raise QGFError("no reference rows to search for nearest neighbours")
    best_squared = np.full(queries.shape[0], np.inf)
    best_index = np.zeros(queries.shape[0], np.int64)
    count = references.shape[0]
    width = min(block_size, count)  # every block padded to one shape: one compilation
    for start in range(0, count, width):
        block = references[start : start + width]
        is_real = jnp.arange(width) < block.shape[0]
        block = jnp.pad(block, ((0, width - block.shape[0]), (0, 0)))
        squared, index = (np.asarray(x) for x in _nearest_in_block(queries, block, is_real))
        better = squared < best_squared
        best_squared = np.where(better, squared, best_squared)
        best_index = np.where(better, index + start, best_index)
    nearest = np.asarray(references)[best_index]
    return np.linalg.norm(np.asarray(queries, np.float64) - nearest, axis=1)


def distance_report(
    actions: Mapping[str, np.ndarray],
    reference: str,
    dataset_chunks: np.ndarray,
    no_nearest_neighbour: Sequence[str] = (),
) -> dict[str, Any]:
    """Fig. 17 numbers: per method the distance of its final action to the `reference` (BFN)
    action of the same observation, and the nearest-neighbour distance to `dataset_chunks`.
    Methods in `no_nearest_neighbour` get no NN distance (e.g. dataset actions that are
    themselves in the reference set)."""
    ref = np.asarray(actions[reference], np.float64)
    methods = {}
    for label, values in actions.items():
        values = np.asarray(values, np.float64)
        entry = {"to_reference": summarize_rows(np.linalg.norm(values - ref, axis=1))}
        if label not in no_nearest_neighbour:
            entry["nearest_dataset"] = summarize_rows(nearest_neighbour_distances(values, dataset_chunks))
        methods[label] = entry
    return {"reference": reference, "dataset_chunks": int(dataset_chunks.shape[0]), "methods": methods}
