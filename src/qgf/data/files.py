"""Reading and writing `.npz` files safely: atomic, streaming, deterministic, with one-line errors.

OGBench files are `np.savez_compressed` archives. We write the same format (a zip of `.npy` members)
ourselves so that (a) arrays can be streamed into the archive episode by episode, keeping memory flat
however large the dataset, (b) the bytes are reproducible (fixed zip timestamps), and (c) the file
appears under its final name only once it is complete (temporary file + `os.replace`).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterable
from typing import Any

import numpy as np

from qgf.errors import QGFError
from qgf.fileio import atomic_path

# A fixed timestamp makes archives byte-identical across runs (zip stores a mtime per member).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def one_line(text: Any) -> str:
    """Collapse an exception message onto one line, for error messages printed by the CLI."""
    return " ".join(str(text).split()) or type(text).__name__


class NpzWriter:
    """Write an `.npz` archive member by member; each member may be streamed in row blocks."""

    def __init__(self, path: str, compress: bool = True):
        compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        self._zip = zipfile.ZipFile(path, "w", compression=compression, allowZip64=True)
        self._compression = compression

    def add(self, key: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        self.add_blocks(key, array.shape, array.dtype, [array])

    def add_blocks(self, key: str, shape: tuple[int, ...], dtype: Any, blocks: Iterable[np.ndarray]) -> None:
        """Write member `key` of the given total shape from row blocks whose rows sum to shape[0]."""
        dtype = np.dtype(dtype)
        info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
        info.compress_type = self._compression
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        rows = 0
        with self._zip.open(info, "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for block in blocks:
                block = np.ascontiguousarray(block, dtype=dtype)
                if block.shape[1:] != tuple(shape[1:]):
                    raise ValueError(f"{key}: block shape {block.shape} does not match {shape}")
                rows += block.shape[0] if block.ndim else 1
                member.write(block.tobytes())
        if rows != (shape[0] if shape else 1):
            raise ValueError(f"{key}: wrote {rows} rows, header says {shape[0]}")

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def save_npz(path: str, arrays: dict[str, np.ndarray], compress: bool = True) -> None:
    """Atomically write `arrays` to `path` (compressed like `np.savez_compressed` by default)."""
    with atomic_path(path) as tmp, NpzWriter(tmp, compress=compress) as writer:
        for key, value in arrays.items():
            writer.add(key, value)


def fingerprint(path: str, sample_bytes: int = 65536) -> str:
    """A cheap content fingerprint: file size plus three sampled byte ranges (start, middle, end).

    Reading the whole of a 300 MB file to hash it would cost seconds; sampling still changes whenever
    a file is regenerated, because compressed members differ throughout.
    """
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        for offset in (0, max(0, size // 2 - sample_bytes // 2), max(0, size - sample_bytes)):
            handle.seek(offset)
            digest.update(handle.read(sample_bytes))
    return digest.hexdigest()[:16]


class NpzFile:
    """An opened `.npz` file whose reads turn every failure into a one-line `QGFError`.

    `fix` is appended to corruption messages (e.g. the command that regenerates the file).
    """

    def __init__(self, path: str, fix: str = ""):
        self.path = path
        self._fix = f"; {fix}" if fix else ""
        if not os.path.isfile(path):
            raise QGFError(f"file not found: {path}{self._fix}")
        try:
            self._npz = np.load(path, allow_pickle=False)
            self.keys = tuple(self._npz.files)
        except Exception as exc:  # any failure to open means a damaged file
            raise QGFError(f"corrupt or truncated npz file {path} ({one_line(exc)}){self._fix}") from None
        if not isinstance(self._npz, np.lib.npyio.NpzFile):
            raise QGFError(f"{path} is not an npz archive (it holds a single array){self._fix}")

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def require(self, keys: Iterable[str], why: str = "") -> None:
        missing = [k for k in keys if k not in self.keys]
        if missing:
            reason = f" ({why})" if why else ""
            raise QGFError(
                f"{self.path} is missing key(s) {', '.join(missing)}{reason}; it has: "
                f"{', '.join(self.keys) or 'nothing'}{self._fix}"
            )

    def read(self, key: str) -> np.ndarray:
        self.require([key])
        try:
            return self._npz[key]
        except Exception as exc:  # CRC, zlib and short-read errors all mean corruption
            raise QGFError(
                f"corrupt or truncated npz file {self.path}: cannot read {key!r} ({one_line(exc)}){self._fix}"
            ) from None

    def member_shape_dtype(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of a member from its header alone (no decompression of the data)."""
        self.require([key])
        try:
            with self._npz.zip.open(f"{key}.npy") as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        except Exception as exc:
            raise QGFError(
                f"corrupt npz file {self.path}: bad header for {key!r} ({one_line(exc)}){self._fix}"
            ) from None
        return tuple(shape), np.dtype(dtype)

    def close(self) -> None:
        self._npz.close()

    def __enter__(self) -> NpzFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
