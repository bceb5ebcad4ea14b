"""Progress bars for long work (generation, training, evaluation, analysis), in one place.

A disabled bar is tqdm's own no-op, so callers never branch on whether progress is shown. Written
to a file or pipe instead of a terminal (a sweep's log, a cluster job's output), a bar prints a
line at most every `LOG_INTERVAL_S` seconds, plus its last state, instead of carriage-return
redraws that pile up into one unreadable line."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

LOG_INTERVAL_S = 60.0


class _LogLines:
    """A stream for tqdm that turns its redraws ('\\r' + status) into throttled lines."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.interval = LOG_INTERVAL_S
        self.last_line = -float("inf")
        self.pending: str | None = None  # the newest redraw not printed yet

    def write(self, text: str) -> None:
        if text.startswith("\r"):
            status = text.strip("\r").rstrip()
            if not status:
                return
            now = time.monotonic()
            if now - self.last_line >= self.interval:
                self._emit(status)
            else:
                self.pending = status
            return
        if text.strip():  # a message (`bar.write`): the current state first, then the message
            self._flush_pending()
            self.stream.write(text)
        elif "\n" in text:  # the bar closes: its last state must not be lost to the throttle
            self._flush_pending()

    def _emit(self, status: str) -> None:
        self.stream.write(status + "\n")
        self.last_line = time.monotonic()
        self.pending = None

    def _flush_pending(self) -> None:
        if self.pending is not None:
            self._emit(self.pending)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(enabled: bool, total: int, *, unit: str, desc: str | None = None, **kwargs: Any):
    from tqdm import tqdm

    stream = sys.stderr
    is_terminal = hasattr(stream, "isatty") and stream.isatty()
    return tqdm(
        total=total,
        unit=unit,
        desc=desc,
        disable=not enabled,
        dynamic_ncols=is_terminal,
        file=stream if is_terminal else _LogLines(stream),
        **kwargs,
    )
