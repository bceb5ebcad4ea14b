"""`qgf demo` end to end at toy size: every stage runs, writes the evaluate schema, and re-running
reuses the cached data and the finished run instead of redoing them."""

from __future__ import annotations

import json

import pytest

from qgf.demo import DemoSettings, run_demo
from qgf.errors import QGFError

TINY = DemoSettings(
    data_episodes=2, episode_length=60, preset="tiny", train_steps=20, weights=(0.1,), eval_episodes=1
)


def test_demo_runs_end_to_end_and_resumes(tmp_path):
    lines: list[str] = []
    out, cache = tmp_path / "demo", tmp_path / "cache"
    results = run_demo(out, settings=TINY, data_dir=cache, workers=1, progress=False, log=lines.append)

    document = json.loads((out / "results.json").read_text())
    rows = {(item["sampler"], item["weight"]) for item in document["results"]}
    assert rows == {("none", 0.0), ("qgf", 0.1), ("ood", 0.1)}
    assert all(item["episodes"] == 1 for item in document["results"])
    assert document["env"] == "cube-single-singletask-task1-v0"
    for name in ("results.csv", "results.md", "success_vs_weight.png", "demo.json"):
        assert (out / name).stat().st_size > 0
    assert results.extra["demo_timings_s"]["train_s"] > 0
    checkpoints = sorted((out / "run" / "checkpoints").glob("*.msgpack"))
    assert checkpoints

    lines.clear()
    run_demo(out, settings=TINY, data_dir=cache, workers=1, progress=False, log=lines.append)
    assert any("reusing cached" in line for line in lines)
    assert sorted((out / "run" / "checkpoints").glob("*.msgpack")) == checkpoints


def test_demo_refuses_a_corrupt_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cube-single-play-v0.npz").write_bytes(b"not a zip file")
    (cache / "cube-single-play-v0-val.npz").write_bytes(b"not a zip file")
    with pytest.raises(QGFError, match="delete"):
        run_demo(
            tmp_path / "demo", settings=TINY, data_dir=cache, workers=1, progress=False, log=lambda _: None
        )
