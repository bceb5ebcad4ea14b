"""Progress bars for long work (generation, training, evaluation, analysis), in one place.

A disabled bar is tqdm's own no-op, so callers never branch on whether progress is shown."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(enabled: bool, total: int, *, unit: str, desc: str | None = None, **kwargs: Any):
    from tqdm import tqdm

    return tqdm(
        total=total, unit=unit, desc=desc, disable=not enabled, dynamic_ncols=True, file=sys.stderr, **kwargs
    )
