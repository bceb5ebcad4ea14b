"""The prepared GPU check: one command that measures qgf on a lent GPU within 8 minutes.

    bash bench/gpu_check.sh                      # on the device: results to $OUT
    bash bench/gpu_check.sh --cpu-smoke          # the same parts at toy sizes on CPU
    python bench/gpu_check.py --cpu-smoke --only environment,speed:paper:qgf --out DIR

Writes `gpu_check.json` (every number, every part's status) and `gpu_check.md` (the tables) to
`--out` (default $OUT), plus `gpu_check_losses.png` where matplotlib is installed. The parts, in the
order they run (a part that does not fit the time left is reported as skipped, not run):

- environment: GPU model, versions, the matmul precision in force (detected from the error of a
  float32 product against float64) and the matmul rate under jax's default and 'highest';
- speed:*: training steps/s at the `paper` preset (qgf, fql, qam; IQL critic) and at the QAM
  paper's setting (4x512, batch 256, K = 10 td critic; fql, qam), with the ratio of ms/step to the
  QAM paper's Table 6 (TABLE6_MS) and, at batch 1024, the device memory after the steps;
- seeds:*: 4 seeds trained as one vmapped program against one seed (`paper`, `cpu`; target >= 3x
  combined throughput);
- sampler: guided-sampler latency (ms per chunk) at batch 1 and 1024 for BC, QGF, QGF-Jacobian,
  BPTT on a paper-size qgf agent;
- training:default / training:highest: a short real training (synthesised data, bench/gpu_parts.py)
  with its loss curve, under jax's default matmul precision (TF32 on recent NVIDIA GPUs) and under
  full float32; speed:paper:qgf@highest gives the speed side of that comparison;
- compile: the paper preset of every other agent compiled and stepped at its real size.

On the GPU each part runs in its own process under a hard time limit (`--inline`: all in this
one); a failure or a time-out is a row of the report, never a crash of the check. `--cpu-smoke`
runs them inline by default (`--isolate` for processes), so that equal toy programs compile once,
and with XLA's cheapest compiler settings: its numbers check the code, not the speed. Precision is set
through `jax.default_matmul_precision` (a process-wide setting, not a qgf config field).

Imports: the standard library, `qgf.benchmark.ratio`, `qgf.fileio`, bench/gpu_parts.py and
bench/gpu_report.py (loaded as files: bench/ is no package); JAX only inside a part.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ESTIMATORS = ["none", "qgf", "qgf-jacobian", "bptt"]
TABLE_METRICS = ["bc_loss", "critic_loss", "value_loss", "q_mean"]
OTHER_AGENTS = ["edp", "dac", "qsm-bc", "bam", "qam-fql", "qam-edit"]

# The QAM paper's Table 6: ms per training step on its authors' GPU (cube-triple, 4x512 networks,
# batch 256, K = 10 critics, about 18-20M parameters).
TABLE6_MS = {"ReBRAC": 2.97, "FQL": 3.58, "DAC/QSM": 4.44, "QAM": 5.83, "QAM-EDIT": 6.61}
# The Table 6 row each measured agent is compared with. qgf trains a BC flow and a critic, no
# policy extraction: ReBRAC (actor + critic) is the nearest and the cheapest anchor.
ANCHOR = {
    "qgf": "ReBRAC",
    "fql": "FQL",
    "qam": "QAM",
    "dac": "DAC/QSM",
    "qsm-bc": "DAC/QSM",
    "qam-edit": "QAM-EDIT",
}
SEEDS_TARGET = 3.0
TABLE6_TARGET = 1.0  # at the QAM paper's own setting: no slower per step than its authors' code

QAM_SETTING = {
    "critic": "td",
    "actor_hidden_dims": [512] * 4,
    "critic_hidden_dims": [512] * 4,
    "batch_size": 256,
}

SCALES: dict[str, dict[str, Any]] = {
    "gpu": {
        "presets": {"paper": "paper", "cpu": "cpu"},
        "qam_setting": QAM_SETTING,
        "trajectories": 250,  # 50k rows
        "probe_steps": 10,
        "time_target_s": 3.0,
        "max_timed_steps": 5000,
        "seeds_steps": {"paper": 50, "cpu": 200},
        "sampler_batches": [1, 1024],
        "estimators": ESTIMATORS,
        "sampler_repeats": 20,
        "training": {"preset": "paper", "steps": 2000, "log_every": 100, "metrics": TABLE_METRICS},
        "check_matmul": 2048,
        "rate_matmul": 8192,
        "budget_s": 470,  # 8 minutes less a margin for the wheel install and the report
        "budget_factor": 1.0,
        "compile_agents": OTHER_AGENTS,
    },
    "cpu-smoke": {
        "presets": {"paper": "tiny", "cpu": "tiny"},
        "qam_setting": {"critic": "td"},
        "trajectories": 10,
        "probe_steps": 3,
        "time_target_s": 0.05,
        "max_timed_steps": 50,
        "seeds_steps": {"paper": 5, "cpu": 5},
        "sampler_batches": [1, 8],
        "estimators": ESTIMATORS,
        "sampler_repeats": 3,
        "training": {"preset": "paper", "steps": 40, "log_every": 10, "metrics": TABLE_METRICS},
        "check_matmul": 64,
        "rate_matmul": 128,
        "budget_s": 900,
        "budget_factor": 4.0,  # toy programs still compile for seconds on 2 busy cores
        "compile_agents": [],
    },
}


def parts(scale: dict) -> list[dict[str, Any]]:
    """Every part: name, function (bench/gpu_parts.py), keyword arguments, budget (seconds on the
    GPU; times the scale's factor) and precision (None: the run's)."""

    def part(name, function, budget, precision=None, **args):
        return {"name": name, "function": function, "budget_s": budget, "precision": precision, "args": args}

    listed = [part("environment", "environment", 25)]
    for agent, budget in (("qgf", 40), ("fql", 40), ("qam", 50)):
        listed.append(part(f"speed:paper:{agent}", "training_speed", budget, agent=agent, preset="paper"))
    for agent, budget in (("fql", 35), ("qam", 40)):
        listed.append(
            part(
                f"speed:qam-setting:{agent}",
                "training_speed",
                budget,
                agent=agent,
                preset="paper",
                overrides=scale["qam_setting"],
            )
        )
    listed += [
        part("seeds:paper", "seeds", 60, preset="paper"),
        part("seeds:cpu", "seeds", 35, preset="cpu"),
        part("sampler", "sampler_latency", 40),
        part("training:default", "short_training", 35, "default"),
        part("training:highest", "short_training", 35, "highest"),
        part("speed:paper:qgf@highest", "training_speed", 35, "highest", agent="qgf", preset="paper"),
        part("compile", "compile_check", 120, agents=scale["compile_agents"]),
    ]
    return listed


def load_bench_module(name: str):
    """bench/NAME.py as a module (registered in sys.modules: dataclasses look modules up by name)."""
    module_name = f"qgf_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ running a part


def run_part_here(part: dict, scale: dict, deadline: float, run_precision: str, save) -> dict:
    """Run `part` in this process under its matmul precision; returns its result dict."""
    parts_module = load_bench_module("gpu_parts")
    precision = part["precision"] or run_precision
    function = parts_module.PART_FUNCTIONS[part["function"]]
    with parts_module.matmul_precision(precision):
        return function(scale, deadline, save, **part["args"])


def run_part(part: dict, scale: dict, mode: str, timeout: float, run_precision: str, inline: bool) -> dict:
    """One part's report row: status ok / failed / timeout, seconds, result (partial if cut off)."""
    started = time.time()
    deadline = started + timeout - min(2.0, 0.1 * timeout)  # the part's own target: before the kill
    row: dict[str, Any] = {
        "status": "failed",
        "budget_s": round(timeout, 1),
        "precision": part["precision"] or run_precision,
    }
    if inline:
        cpu_started = time.process_time()
        partial: dict = {}
        try:
            row["result"] = run_part_here(part, scale, deadline, run_precision, partial.update)
            row["status"] = "ok"
        except Exception as error:  # noqa: BLE001 - a failed part is a row of the report
            row["error"] = f"{type(error).__name__}: {error}"[:1000]
            row["traceback"] = traceback.format_exc()[-4000:]
            row["result"] = partial or None
        row["cpu_s"] = round(time.process_time() - cpu_started, 2)
    else:
        with tempfile.TemporaryDirectory(prefix="qgf-gpu-part-") as folder:
            row.update(run_child(part["name"], mode, deadline, timeout, run_precision, Path(folder)))
    row["seconds"] = round(time.time() - started, 2)
    return row


def run_child(name: str, mode: str, deadline: float, timeout: float, precision: str, folder: Path) -> dict:
    """The part in a fresh process (its own session, so a time-out ends it and its children)."""
    result_path = folder / "result.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--mode", mode]
    command += ["--deadline", repr(deadline), "--result", str(result_path), "--precision", precision]
    process = subprocess.Popen(command, start_new_session=True)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        code = None
    stored = json.loads(result_path.read_text()) if result_path.exists() else {}
    row: dict[str, Any] = {"result": stored.get("result")}
    if code is None:
        row.update(status="timeout", error=f"killed at its limit of {timeout:.0f} s")
    elif stored.get("status") == "ok" and code == 0:
        row["status"] = "ok"
    else:
        row.update(status="failed", error=stored.get("error") or f"exited with code {code}")
        if stored.get("traceback"):
            row["traceback"] = stored["traceback"]
    return row


def child_main(args: argparse.Namespace) -> int:
    from qgf.fileio import atomic_write_json

    scale = SCALES[args.mode]
    part = next(p for p in parts(scale) if p["name"] == args.child)

    def save(result: dict, status: str = "running", **extra) -> None:
        atomic_write_json(
            args.result, json.loads(json.dumps({"status": status, "result": result, **extra}, default=str))
        )

    try:
        result = run_part_here(part, scale, args.deadline, args.precision, save)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which reports it
        stored = json.loads(Path(args.result).read_text()) if Path(args.result).exists() else {}
        save(
            stored.get("result"),
            "failed",
            error=f"{type(error).__name__}: {error}"[:1000],
            traceback=traceback.format_exc()[-4000:],
        )
        return 1
    save(result, "ok")
    return 0


# ------------------------------------------------------------------------------------ the check


def select(all_parts: list[dict], only: str | None) -> tuple[list[dict], list[str]]:
    if not only:
        return all_parts, []
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    known = {p["name"] for p in all_parts}
    unknown = [
        name for name in wanted if name not in known and not any(k.startswith(name + ":") for k in known)
    ]
    if unknown:
        raise SystemExit(f"unknown part {unknown[0]!r}; parts: {', '.join(sorted(known))}")
    chosen = [p for p in all_parts if any(p["name"] == w or p["name"].startswith(w + ":") for w in wanted)]
    return chosen, [p["name"] for p in all_parts if p not in chosen]


def run_check(args: argparse.Namespace) -> dict:
    from qgf.fileio import atomic_write_json, atomic_write_text

    report_module = load_bench_module("gpu_report")
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    isolated = args.isolate or not (args.inline or args.cpu_smoke)
    if args.cpu_smoke and "jax" not in sys.modules:  # toy programs: compile time is what counts
        fast = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {fast}".strip()
    scale = SCALES[mode]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget if args.budget is not None else scale["budget_s"]
    started = time.time()
    end = started + budget
    chosen, not_selected = select(parts(scale), args.only)
    report: dict[str, Any] = {
        "mode": mode,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "budget_s": budget,
        "run_precision": args.precision,
        "isolated": isolated,
        "scale": scale,
        "table6_ms": TABLE6_MS,
        "anchors": ANCHOR,
        "targets": {"table6": TABLE6_TARGET, "seeds": SEEDS_TARGET},
        # every part in its order: rows are filled in as they run
        "parts": {
            p["name"]: {"status": "not selected" if p["name"] in not_selected else "pending"}
            for p in parts(scale)
        },
    }

    def write() -> None:
        report["wall_s"] = round(time.time() - started, 1)
        report_module.summarise(report)
        atomic_write_json(out / "gpu_check.json", json.loads(json.dumps(report, default=str)), indent=1)
        atomic_write_text(out / "gpu_check.md", report_module.markdown(report))

    for part in chosen:
        left = end - time.time()
        timeout = min(part["budget_s"] * scale["budget_factor"], left)
        if args.max_part_seconds is not None:
            timeout = min(timeout, args.max_part_seconds)
        if timeout < min(10.0, part["budget_s"] / 2) and args.max_part_seconds is None:
            report["parts"][part["name"]] = {"status": "skipped", "error": f"out of time ({left:.0f} s left)"}
            continue
        print(f"gpu_check: {part['name']} (limit {timeout:.0f} s) ...", flush=True)
        row = run_part(part, scale, mode, timeout, args.precision, inline=not isolated)
        report["parts"][part["name"]] = row
        print(
            f"gpu_check: {part['name']}: {row['status']} in {row['seconds']:.1f} s"
            + (f" ({row['error']})" if row.get("error") else ""),
            flush=True,
        )
        write()
    write()
    figure = report_module.loss_figure(report, out / "gpu_check_losses.png")
    report["loss_figure"] = figure
    write()
    print(report_module.markdown(report), flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default: $OUT)")
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes, for CPUs and CI")
    parser.add_argument("--only", help="comma-separated part names or prefixes (e.g. speed,sampler)")
    parser.add_argument("--inline", action="store_true", help="run every part in this process")
    parser.add_argument("--isolate", action="store_true", help="every part in its own process (--cpu-smoke)")
    parser.add_argument("--budget", type=float, help="seconds for the whole check (default: the scale's)")
    parser.add_argument("--max-part-seconds", type=float, help=argparse.SUPPRESS)  # tests: force time-outs
    parser.add_argument(
        "--precision",
        default="default",
        choices=("default", "highest", "high"),
        help="jax matmul precision of the parts that do not fix their own",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    if not args.out:
        parser.error("--out is required when $OUT is not set")
    report = run_check(args)
    return 0 if all(row["status"] in ("ok", "not selected") for row in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
