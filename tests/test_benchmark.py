"""`qgf bench` bookkeeping: ratios against targets, computed from raw numbers by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qgf.benchmark import data_ratios, format_ratios, ratio, run_bench
from qgf.errors import QGFError


def test_ratio_respects_the_direction_of_its_target():
    assert ratio(1.19, 1.2) == {"value": 1.19, "target": 1.2, "ok": True}
    assert ratio(1.21, 1.2)["ok"] is False
    assert ratio(0.71, 0.7, at_most=False)["ok"] is True
    assert ratio(0.69, 0.7, at_most=False)["ok"] is False
    assert ratio(3.0, None)["ok"] is None
    assert ratio(None, 1.5) == {"value": None, "target": 1.5, "ok": None}


def test_data_ratios_from_raw_numbers():
    raw = {
        "env_stepping": {"steps_per_cpu_second": 500.0},
        "generation": [
            {"workers": 1, "rollout_steps_per_cpu_second": 400.0},
            {"workers": 2, "rollout_steps_per_cpu_second": 200.0},
        ],
        "slices": {
            "peak_rss_bytes": 900,
            "rss_before_first_slice_bytes": 700,
            "rss_after_first_slice_bytes": 800,
            "train_bytes_in_memory_if_loaded_whole": 1000,
        },
    }
    ratios = data_ratios(raw)
    assert ratios["data/generation per worker÷env stepping (1 workers)"] == {
        "value": 0.8,
        "target": None,
        "ok": None,
    }
    assert ratios["data/generation per worker÷env stepping (2 workers)"]["value"] == 0.4
    streaming = ratios["data/slice streaming RSS growth÷dataset in memory"]
    assert streaming["value"] == pytest.approx(0.1) and streaming["ok"] is True
    raw["slices"]["peak_rss_bytes"] = 1500  # grew by 0.7 of the dataset: not streaming
    assert data_ratios(raw)["data/slice streaming RSS growth÷dataset in memory"]["ok"] is False
    table = format_ratios(data_ratios(raw))
    assert "NO" in table and " - " in table


def test_unknown_benchmark_is_a_clear_error(tmp_path):
    with pytest.raises(QGFError, match="unknown benchmark 'trainig'"):
        run_bench(tmp_path, only=("trainig",))


def test_every_bench_script_has_its_ratios_and_a_run_function():
    import inspect

    from qgf.benchmark import RATIOS, SCRIPTS, declared_ratios, load_script

    assert set(SCRIPTS) == set(RATIOS)
    for name in SCRIPTS:  # each loads as `qgf bench` loads it (dataclasses in it included)
        assert "quick" in inspect.signature(load_script(name).run).parameters, name
        assert f"qgf_bench_{name}" not in sys.modules
    raw = {"ratios": {"a÷b": 1.3}, "targets": {"a÷b": 1.2}, "at_most": {"a÷b": True}}
    assert RATIOS["goals"](raw) == {"goals/a÷b": {"value": 1.3, "target": 1.2, "ok": False}}
    expected = {"seeds/x": {"value": 2.0, "target": None, "ok": None}}
    assert declared_ratios({"ratios": {"x": 2.0}}, "seeds") == expected


def test_bench_script_functions_travel_by_value_to_processes_that_cannot_import_them():
    # Ray sends a task's function with cloudpickle: by reference if its module is importable by
    # name, which a loaded script is not in a Ray worker (bench/seeds.py's Ray overhead case).
    from ray import cloudpickle

    from qgf.benchmark import load_script

    payload = cloudpickle.dumps(load_script("seeds")._noop)
    child = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read())() > 0)"
    done = subprocess.run([sys.executable, "-c", child], input=payload, capture_output=True, timeout=120)
    assert done.stdout.strip() == b"True", done.stderr.decode()[-500:]


def test_script_process_returns_the_function_result_or_a_one_line_error():
    from qgf.benchmark import ScriptProcess

    # a bench script's function runs in a fresh process (scripts are loaded from files, not
    # importable, so this is the only way to give them a process of their own)
    assert isinstance(ScriptProcess("seeds", "_noop").result(), float)
    with pytest.raises(QGFError, match=r"bench/seeds.py:no_such_function failed:(.|\n)*AttributeError"):
        ScriptProcess("seeds", "no_such_function").result()
