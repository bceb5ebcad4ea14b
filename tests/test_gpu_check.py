"""bench/gpu_check.sh / gpu_check.py, the prepared GPU check, at toy sizes on CPU (`--cpu-smoke`).

The GPU itself is never reached here: these tests run the same parts at toy sizes and check that
the JSON and markdown hold what a device run must report, that a part's failure or time-out is a
row of the report, and that the shell entry runs with only src/ on PYTHONPATH.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE_PARTS = "environment,speed:paper:qgf,training:default,sampler"


def load(name: str):
    module_name = f"qgf_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    code = load("gpu_check").main(["--cpu-smoke", "--only", SMOKE_PARTS, "--out", str(out)])
    report = json.loads((out / "gpu_check.json").read_text())
    return code, report, (out / "gpu_check.md").read_text(), out


def test_smoke_run_reports_every_selected_part_and_lists_the_others(smoke):
    code, report, markdown, _ = smoke
    assert code == 0
    assert report["mode"] == "cpu-smoke" and report["isolated"] is False
    statuses = {name: row["status"] for name, row in report["parts"].items()}
    for name in SMOKE_PARTS.split(","):
        assert statuses.pop(name) == "ok", report["parts"][name]
    assert set(statuses.values()) == {"not selected"}
    assert {"speed:qam-setting:qam", "seeds:paper", "training:highest", "compile"} <= set(statuses)
    for name in report["parts"]:  # every part is a row of the parts table, in its order
        assert f"| {name} |" in markdown


def test_smoke_training_speed_and_its_table6_ratio(smoke):
    _, report, markdown, _ = smoke
    raw = report["parts"]["speed:paper:qgf"]["result"]
    assert raw["compiled"] and raw["finite"] and raw["ms_per_step"] > 0
    assert raw["actor_hidden_dims"] == [32, 32] and raw["batch_size"] == 32  # the tiny preset
    name = "speed:paper:qgf ms/step ÷ Table 6 ReBRAC (2.97 ms)"
    # The report rounds ratios to 3 decimals: within half a unit of the last digit.
    assert report["ratios"][name]["value"] == pytest.approx(raw["ms_per_step"] / 2.97, abs=5.01e-4)
    assert report["ratios"][name]["target"] is None  # paper preset: not the Table 6 setting
    assert "## Training speed" in markdown and "ReBRAC 2.97" in markdown


def test_smoke_short_training_has_a_finite_loss_curve(smoke):
    _, report, markdown, out = smoke
    raw = report["parts"]["training:default"]["result"]
    spec = report["scale"]["training"]
    assert raw["steps"] == spec["steps"] and raw["finite"]
    assert raw["curve"]["step"] == list(range(spec["log_every"], spec["steps"] + 1, spec["log_every"]))
    assert set(spec["metrics"]) <= set(raw["curve"])
    assert len(raw["curve"]["bc_loss"]) == len(raw["curve"]["step"])
    assert "## Short training" in markdown
    if importlib.util.find_spec("matplotlib"):
        assert report["loss_figure"] == "gpu_check_losses.png" and (out / "gpu_check_losses.png").exists()


def test_smoke_environment_precision_and_sampler_latency(smoke):
    _, report, markdown, _ = smoke
    environment = report["parts"]["environment"]["result"]
    assert environment["backend"] == "cpu" and environment["versions"]["jax"]
    for precision in ("default", "highest"):
        assert environment["matmul"][precision]["relative_error_vs_float64"] < 1e-4  # CPU: float32
    assert environment["default_is_reduced_precision"] is False
    sampler = report["parts"]["sampler"]["result"]
    batches = [str(b) for b in report["scale"]["sampler_batches"]]
    for estimator in ("none", "qgf", "qgf-jacobian", "bptt"):
        assert sorted(sampler["ms_per_call"][estimator]) == sorted(batches)
        assert all(value > 0 for value in sampler["ms_per_chunk"][estimator].values())
    assert "| BC (none) |" in markdown and "## Matmul precision" in markdown


def test_report_ratios_targets_and_failed_parts_from_raw_numbers():
    check, report_module = load("gpu_check"), load("gpu_report")
    scale = check.SCALES["gpu"]
    report = {
        "mode": "gpu",
        "scale": scale,
        "table6_ms": check.TABLE6_MS,
        "anchors": check.ANCHOR,
        "targets": {"table6": check.TABLE6_TARGET, "seeds": check.SEEDS_TARGET},
        "run_precision": "default",
        "parts": {
            "speed:qam-setting:qam": {"status": "ok", "result": {"ms_per_step": 5.0, "compiled": True}},
            "speed:qam-setting:fql": {"status": "ok", "result": {"ms_per_step": 7.16}},
            "speed:paper:qgf": {"status": "ok", "result": {"steps_per_s": 300.0, "ms_per_step": 3.33}},
            "speed:paper:qgf@highest": {"status": "ok", "result": {"steps_per_s": 100.0}},
            "seeds:paper": {"status": "ok", "result": {"ratio": 3.5, "preset": "paper"}},
            "seeds:cpu": {"status": "timeout", "error": "killed at its limit of 30 s", "result": None},
            "compile": {"status": "failed", "error": "XlaRuntimeError: out of memory", "result": None},
        },
    }
    report_module.summarise(report)
    ratios = report["ratios"]
    qam = ratios["speed:qam-setting:qam ms/step ÷ Table 6 QAM (5.83 ms)"]
    assert qam["value"] == pytest.approx(5.0 / 5.83, abs=1e-3) and qam["ok"] is True
    assert ratios["speed:qam-setting:fql ms/step ÷ Table 6 FQL (3.58 ms)"]["ok"] is False  # 2x slower
    assert ratios["4 seeds as one program ÷ 4 sequential runs (seeds:paper)"]["ok"] is True
    assert ratios["4 seeds as one program ÷ 4 sequential runs (seeds:cpu)"] == {
        "value": None,
        "target": 3.0,
        "ok": None,
    }
    assert ratios["precision: tf32 speedup"]["value"] == pytest.approx(3.0)
    markdown = report_module.markdown(report)
    assert "| seeds:cpu | timeout |" in markdown and "killed at its limit" in markdown
    assert "out of memory" in markdown


def test_a_part_past_its_limit_is_killed_and_reported(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--cpu-smoke", "--isolate"]
    command += ["--only", "environment"]
    command += ["--max-part-seconds", "0.3", "--out", str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    row = report["parts"]["environment"]
    assert report["isolated"] is True and row["status"] == "timeout" and "killed" in row["error"]
    assert "| environment | timeout |" in (tmp_path / "gpu_check.md").read_text()


def test_shell_entry_runs_a_part_in_its_own_process(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "OUT")}
    env["PYTHON"] = sys.executable
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke", "--only", "environment"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "set $OUT or pass --out" in done.stderr
    env["OUT"] = str(tmp_path)
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke", "--isolate", "--only", "environment"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["isolated"] is True and report["parts"]["environment"]["status"] == "ok"
    assert report["parts"]["environment"]["result"]["versions"]["qgf"]
    assert "gpu_check: environment: ok" in (tmp_path / "gpu_check.log").read_text()


def test_the_wheels_that_travel_are_small_pure_python_ones():
    wheels = sorted((ROOT / "bench" / "wheels").glob("*.whl"))
    assert wheels, "bench/wheels/ holds the wheels the device image lacks"
    assert all(wheel.name.endswith("-py3-none-any.whl") for wheel in wheels)
    assert sum(wheel.stat().st_size for wheel in wheels) < 4 * 2**20
