"""Headless matplotlib and atomic PNG writing: the one place every figure of the package uses.

plt = pyplot()                       # Agg backend, whatever the user's default
figure, axis = plt.subplots()
...
save_figure(figure, path, dpi=120)   # written atomically (no half-written PNG), then closed
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qgf.fileio import atomic_path


def pyplot() -> Any:
    """`matplotlib.pyplot` on the headless Agg backend (imported on first use: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Write `figure` to `path` as a PNG atomically and close it (also when writing fails)."""
    plt = pyplot()
    path = Path(path)
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", **savefig_kwargs)
    finally:
        plt.close(figure)
    return path
