"""Progress bars written to a log file: lines, throttled, with the last state kept."""

from __future__ import annotations

import io

from qgf import progress


def run_bar(monkeypatch, interval: float, updates: int) -> str:
    log = io.StringIO()  # not a terminal, like a sweep's log or a cluster job's output
    monkeypatch.setattr(progress.sys, "stderr", log)
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", interval)
    bar = progress.progress_bar(True, updates, unit="step", desc="train", mininterval=0, miniters=1)
    for _ in range(updates):
        bar.update(1)
    bar.set_postfix_str("stage 2", refresh=True)
    bar.close()
    return log.getvalue()


def test_a_bar_in_a_log_prints_throttled_lines_and_keeps_its_last_state(monkeypatch):
    text = run_bar(monkeypatch, interval=3600.0, updates=50)
    assert "\r" not in text
    lines = text.splitlines()
    # the first draw, then nothing within the hour, then the final state at close
    assert len(lines) == 2, lines
    assert lines[0].startswith("train:   0%") and lines[1].startswith("train: 100%")
    assert "50/50" in lines[1] and "stage 2" in lines[1]


def test_without_throttling_every_redraw_is_its_own_line(monkeypatch):
    text = run_bar(monkeypatch, interval=0.0, updates=5)
    assert "\r" not in text
    counts = [line.split("|")[2].split()[0] for line in text.splitlines()]
    assert counts[:6] == ["0/5", "1/5", "2/5", "3/5", "4/5", "5/5"]


def test_a_disabled_bar_prints_nothing(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", log)
    bar = progress.progress_bar(False, 3, unit="step")
    bar.update(3)
    bar.close()
    assert log.getvalue() == ""
