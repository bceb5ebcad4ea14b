"""The data layer: generate, load, validate, stream and batch OGBench-format datasets.

- `generate(env, out_dir, ...)`: play data with OGBench's oracles (`qgf.data.generation`).
- `load_dataset(name, data_dir, ...)` -> `Dataset`: one split of a standard OGBench file (`qgf.data.load`).
- `SliceDataset` / `iterate_slices`: 100M-style slice directories, streamed (`qgf.data.slices`).
- `to_device` / `sample_chunks`: on-device action-chunk batches (`qgf.data.chunks`, imports JAX).
- `qgf.data.goals`: goal-conditioned (hindsight-relabelled) chunk batches; import it directly (JAX).
- `describe(path)`: validation and summary (`qgf.data.description`).
"""

from __future__ import annotations

from qgf.data.description import describe, format_description
from qgf.data.generation import GenerationResult, generate
from qgf.data.load import DATA_DIR_ENV_VAR, Dataset, default_data_dir, load_dataset, load_file
from qgf.data.slices import SliceDataset, iterate_slices

_CHUNK_NAMES = ("to_device", "sample_chunks", "sample_chunks_jit", "gather_chunks")

__all__ = [
    "DATA_DIR_ENV_VAR",
    "Dataset",
    "GenerationResult",
    "SliceDataset",
    "default_data_dir",
    "describe",
    "format_description",
    "generate",
    "iterate_slices",
    "load_dataset",
    "load_file",
    *_CHUNK_NAMES,
]


def __getattr__(name: str):
    # The chunk sampler imports JAX; load it only when asked so that data tools stay light.
    if name in _CHUNK_NAMES:
        from qgf.data import chunks

        return getattr(chunks, name)
    raise AttributeError(f"module 'qgf.data' has no attribute {name!r}")
