"""The GPU check's report: ratios with their targets, the markdown tables, the loss-curve figure.

`summarise(report)` adds `report["ratios"]` (`{value, target, ok}`, as `qgf bench` writes them) and
`report["summary"]` (the rows of each table) from the parts' raw results; `markdown(report)` renders
them; `loss_figure(report, path)` draws the short trainings' losses where matplotlib exists. Every
function copes with parts that failed, timed out or were not run: their cells read "n/a".

Imports: the standard library, `qgf.benchmark.ratio`, `qgf.plots` (inside `loss_figure`) and the
constants of bench/gpu_check.py, which it passes in the report (`table6_ms`, `anchors`, `targets`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgf.benchmark import ratio

MIB = 2**20


def result(report: dict, name: str) -> dict:
    return (report["parts"].get(name) or {}).get("result") or {}


def speed_rows(report: dict) -> list[dict]:
    rows = []
    table6, anchors = report["table6_ms"], report["anchors"]
    for name, row in report["parts"].items():
        if not name.startswith("speed:"):
            continue
        raw = row.get("result") or {}
        _, setting, agent = name.split(":", 2)
        agent_name, _, precision = agent.partition("@")
        anchor = anchors.get(agent_name)
        ms = raw.get("ms_per_step")
        at_qam_setting = setting == "qam-setting"
        value = ms / table6[anchor] if ms is not None and anchor else None
        rows.append(
            {
                "part": name,
                "status": row.get("status"),
                "setting": setting,
                "agent": agent_name,
                "precision": row.get("precision"),
                "widths": raw.get("actor_hidden_dims"),
                "batch_size": raw.get("batch_size"),
                "num_critics": raw.get("num_critics"),
                "params": raw.get("params"),
                "ms_per_step": ms,
                "steps_per_s": raw.get("steps_per_s"),
                "anchor": anchor,
                "anchor_ms": table6.get(anchor) if anchor else None,
                "ratio": ratio(
                    value, report["targets"]["table6"] if at_qam_setting and not precision else None
                ),
                "peak_bytes": ((raw.get("memory") or {}).get("peak_bytes_in_use")),
                "compile_s": raw.get("compile_and_first_step_s"),
            }
        )
    return rows


def summarise(report: dict) -> None:
    summary: dict[str, Any] = {}
    ratios: dict[str, dict] = {}
    summary["speed"] = speed_rows(report)
    for row in summary["speed"]:
        if row["anchor"]:
            ratios[f"{row['part']} ms/step ÷ Table 6 {row['anchor']} ({row['anchor_ms']} ms)"] = row["ratio"]
    summary["seeds"] = []
    for name in ("seeds:paper", "seeds:cpu"):
        raw = result(report, name)
        value = raw.get("ratio")
        summary["seeds"].append(
            {
                "part": name,
                "status": (report["parts"].get(name) or {}).get("status"),
                "preset": raw.get("preset"),
                "one_seed_steps_per_s": raw.get("one_seed_steps_per_s"),
                "stacked_combined_steps_per_s": raw.get("stacked_combined_steps_per_s"),
                "ratio": ratio(value, report["targets"]["seeds"], at_most=False),
            }
        )
        ratios[f"4 seeds as one program ÷ 4 sequential runs ({name})"] = summary["seeds"][-1]["ratio"]
    sampler = result(report, "sampler")
    summary["sampler"] = {
        "ms_per_call": sampler.get("ms_per_call", {}),
        "ms_per_chunk": sampler.get("ms_per_chunk", {}),
    }
    summary["precision"] = precision_summary(report)
    for key in ("tf32_speedup", "final_loss_relative_difference"):
        if key in summary["precision"]:
            ratios[f"precision: {key.replace('_', ' ')}"] = ratio(summary["precision"][key], None)
    summary["compile"] = compile_rows(report)
    report["summary"] = summary
    report["ratios"] = ratios


def precision_summary(report: dict) -> dict:
    environment = result(report, "environment")
    out: dict[str, Any] = {
        "jax_default_matmul_precision": environment.get("jax_default_matmul_precision"),
        "run_precision": report.get("run_precision"),
        "matmul": environment.get("matmul", {}),
        "default_is_reduced_precision": environment.get("default_is_reduced_precision"),
    }
    fast, exact = result(report, "speed:paper:qgf"), result(report, "speed:paper:qgf@highest")
    if fast.get("steps_per_s") and exact.get("steps_per_s"):
        out["tf32_speedup"] = fast["steps_per_s"] / exact["steps_per_s"]
    curves = {p: result(report, f"training:{p}").get("curve") for p in ("default", "highest")}
    out["training"] = {
        p: {
            "steps": result(report, f"training:{p}").get("steps"),
            "steps_per_s": result(report, f"training:{p}").get("steps_per_s"),
            "final": {k: v[-1] for k, v in (curve or {}).items() if k != "step" and v},
        }
        for p, curve in curves.items()
    }
    if all(curves.values()):
        common = min(len(curves["default"]["step"]), len(curves["highest"]["step"]))
        differences = []
        for name, values in curves["default"].items():
            if name == "step" or name not in curves["highest"] or common == 0:
                continue
            a, b = values[common - 1], curves["highest"][name][common - 1]
            differences.append(abs(a - b) / max(abs(b), 1e-8))
        if differences:
            out["final_loss_relative_difference"] = max(differences)
            out["compared_at_step"] = curves["default"]["step"][common - 1]
    return out


def compile_rows(report: dict) -> list[dict]:
    rows = []
    for name, part in report["parts"].items():
        if name.startswith("speed:paper:") and "@" not in name:
            raw = part.get("result") or {}
            rows.append(
                {
                    "agent": name.split(":")[-1],
                    "status": part.get("status"),
                    "compiled": raw.get("compiled"),
                    "compile_s": raw.get("compile_and_first_step_s"),
                    "ms_per_step": raw.get("ms_per_step"),
                    "params": raw.get("params"),
                    "peak_bytes": (raw.get("memory") or {}).get("peak_bytes_in_use"),
                    "error": part.get("error"),
                }
            )
    compile_part = report["parts"].get("compile") or {}
    for agent, raw in ((compile_part.get("result") or {}).get("agents") or {}).items():
        rows.append(
            {
                "agent": agent,
                "status": compile_part.get("status"),
                "compiled": raw.get("compiled"),
                "compile_s": raw.get("compile_and_first_step_s"),
                "ms_per_step": raw.get("ms_per_step"),
                "params": raw.get("params"),
                "peak_bytes": (raw.get("memory") or {}).get("peak_bytes_in_use"),
                "error": raw.get("error"),
            }
        )
    return rows


# ------------------------------------------------------------------------------------ markdown


def cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    if isinstance(value, list):
        return (
            "x".join(str(v) for v in value) if value and len(set(value)) > 1 else f"{len(value)}x{value[0]}"
        )
    return str(value)


def ratio_cells(item: dict) -> list[str]:
    target = "-" if item["target"] is None else f"{item['target']:g}"
    ok = {True: "yes", False: "NO", None: "-"}[item["ok"]]
    return [cell(item["value"]), target, ok]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"


def markdown(report: dict) -> str:
    summary = report.get("summary") or {}
    environment = result(report, "environment")
    precision = summary.get("precision", {})
    lines = [
        f"# qgf GPU check ({report['mode']})",
        "",
        f"- device: {environment.get('device_kind') or 'n/a'} ({environment.get('backend') or 'n/a'}); "
        f"nvidia-smi: {environment.get('nvidia_smi') or 'n/a'}",
        f"- versions: {environment.get('versions') or 'n/a'}",
        f"- matmul precision: run precision {report.get('run_precision')!r}, jax_default_matmul_precision "
        f"{precision.get('jax_default_matmul_precision')!r}; default is reduced precision (TF32-like): "
        f"{cell(precision.get('default_is_reduced_precision'))}",
        f"- started {report.get('started')}, wall {report.get('wall_s')} s of a {report.get('budget_s')} s "
        f"budget; parts {'each in its own process' if report.get('isolated') else 'in one process'}",
        "",
        "## Training speed (fused update_many steps; Table 6 = QAM paper, its authors' GPU)",
        "",
    ]
    speed = [
        [
            row["part"],
            row["status"] or "n/a",
            cell(row["widths"]),
            cell(row["batch_size"]),
            cell(row["num_critics"]),
            cell(row["params"]),
            cell(row["ms_per_step"]),
            cell(row["steps_per_s"]),
            f"{row['anchor']} {row['anchor_ms']}" if row["anchor"] else "-",
            *ratio_cells(row["ratio"]),
            mib(row["peak_bytes"]),
        ]
        for row in summary.get("speed", [])
    ]
    header = [
        "case",
        "status",
        "nets",
        "batch",
        "K",
        "params",
        "ms/step",
        "steps/s",
        "Table 6 ms",
        "ratio",
        "target",
        "ok",
        "peak MiB",
    ]
    lines += table(header, speed)
    lines += ["", "## 4 seeds as one vmapped program vs one seed (target >= 3x combined throughput)", ""]
    seeds = [
        [
            row["part"],
            row["status"] or "n/a",
            cell(row["preset"]),
            cell(row["one_seed_steps_per_s"]),
            cell(row["stacked_combined_steps_per_s"]),
            *ratio_cells(row["ratio"]),
        ]
        for row in summary.get("seeds", [])
    ]
    lines += table(
        ["case", "status", "preset", "1 seed steps/s", "4 seeds combined steps/s", "ratio", "target", "ok"],
        seeds,
    )
    lines += sampler_lines(report, summary.get("sampler", {}))
    lines += precision_lines(report, precision)
    lines += training_lines(report)
    lines += ["", "## Paper presets at their real size: compiled, memory after the steps", ""]
    compiled = [
        [
            row["agent"],
            row["status"] or "n/a",
            cell(row["compiled"]),
            cell(row["compile_s"]),
            cell(row["ms_per_step"]),
            cell(row["params"]),
            mib(row["peak_bytes"]),
            (row["error"] or "")[:80],
        ]
        for row in summary.get("compile", [])
    ]
    lines += table(
        ["agent", "part status", "compiled", "compile + 1st step s", "ms/step", "params", "peak MiB", "note"],
        compiled,
    )
    lines += ["", "## Parts", ""]
    parts = [
        [
            name,
            row.get("status", "n/a"),
            cell(row.get("seconds")),
            cell(row.get("budget_s")),
            str(row.get("precision") or "-"),
            (row.get("error") or "").replace("|", "/").replace("\n", " ")[:120],
        ]
        for name, row in report["parts"].items()
    ]
    lines += table(["part", "status", "seconds", "limit s", "precision", "note"], parts)
    if report.get("loss_figure"):
        lines += ["", f"Loss curves: {report['loss_figure']}"]
    return "\n".join(lines) + "\n"


def sampler_lines(report: dict, sampler: dict) -> list[str]:
    batches = [str(b) for b in report["scale"]["sampler_batches"]]
    preset = (result(report, "sampler") or {}).get("preset", "paper")
    lines = ["", f"## Guided-sampler latency (qgf agent at the {preset} preset, T flow steps; median)", ""]
    header = ["sampler"] + [f"ms/call @{b}" for b in batches] + [f"ms/chunk @{batches[-1]}"]
    rows = []
    for estimator in report["scale"]["estimators"]:
        calls = sampler.get("ms_per_call", {}).get(estimator, {})
        chunk = sampler.get("ms_per_chunk", {}).get(estimator, {})
        label = "BC (none)" if estimator == "none" else estimator
        rows.append([label] + [cell(calls.get(b)) for b in batches] + [cell(chunk.get(batches[-1]))])
    return lines + table(header, rows)


def precision_lines(report: dict, precision: dict) -> list[str]:
    lines = ["", "## Matmul precision: jax default (TF32 on recent NVIDIA GPUs) vs 'highest' (float32)", ""]
    matmul = precision.get("matmul", {})
    training = precision.get("training", {})
    fast, exact = result(report, "speed:paper:qgf"), result(report, "speed:paper:qgf@highest")
    rows = [
        ["matmul relative error vs float64"]
        + [cell((matmul.get(p) or {}).get("relative_error_vs_float64")) for p in ("default", "highest")],
        ["matmul TFLOP/s"] + [cell((matmul.get(p) or {}).get("tflops")) for p in ("default", "highest")],
        ["paper qgf ms/step", cell(fast.get("ms_per_step")), cell(exact.get("ms_per_step"))],
        ["short training steps/s"]
        + [cell((training.get(p) or {}).get("steps_per_s")) for p in ("default", "highest")],
    ]
    for name in report["scale"]["training"]["metrics"]:
        rows.append(
            [f"short training final {name}"]
            + [cell(((training.get(p) or {}).get("final") or {}).get(name)) for p in ("default", "highest")]
        )
    lines += table(["", "default", "highest"], rows)
    lines += [
        "",
        f"TF32 speed-up (paper qgf steps/s, default ÷ highest): {cell(precision.get('tf32_speedup'))}; "
        "largest relative difference of the final losses: "
        f"{cell(precision.get('final_loss_relative_difference'))} "
        f"(at step {precision.get('compared_at_step', 'n/a')})",
    ]
    return lines


def training_lines(report: dict) -> list[str]:
    metrics = report["scale"]["training"]["metrics"]
    curves = {p: result(report, f"training:{p}").get("curve") or {} for p in ("default", "highest")}
    steps = curves["default"].get("step") or curves["highest"].get("step") or []
    lines = ["", "## Short training (qgf, synthesised reach data): losses, mean over each log window", ""]
    header = ["step"] + [f"{m} ({p})" for m in metrics for p in ("default", "highest")]
    every = max(1, len(steps) // 10)
    rows = []
    for index in list(range(0, len(steps), every)) + ([len(steps) - 1] if (len(steps) - 1) % every else []):
        row = [str(steps[index])]
        for name in metrics:
            for p in ("default", "highest"):
                values = curves[p].get(name) or []
                row.append(cell(values[index] if index < len(values) else None))
        rows.append(row)
    return lines + table(header, rows)


def loss_figure(report: dict, path: Path) -> str | None:
    """The short trainings' losses as a PNG, or None (no matplotlib, or no curve)."""
    curves = {p: result(report, f"training:{p}").get("curve") for p in ("default", "highest")}
    if not any(curves.values()):
        return None
    try:
        from qgf.plots import pyplot, save_figure

        plt = pyplot()
    except ImportError:
        return None
    metrics = [m for m in report["scale"]["training"]["metrics"] if m.endswith("loss")]
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2))
    for axis, name in zip(list(getattr(axes, "flat", [axes])), metrics, strict=False):
        for p, curve in curves.items():
            if curve and curve.get(name):
                axis.plot(curve["step"], curve[name], label=p)
        axis.set_title(name)
        axis.set_xlabel("step")
        values = [v for curve in curves.values() if curve for v in curve.get(name, [])]
        if values and min(values) > 0:
            axis.set_yscale("log")
        axis.legend()
    figure.tight_layout()
    save_figure(figure, path, dpi=100)
    return path.name
