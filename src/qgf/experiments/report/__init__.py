"""`qgf report`: aggregate statistics of a sweep with rliable (Agarwal et al., 2021), as
SWEEP_DIR/report/{report.md, *.csv, *.png}.

The main stage is 'final' (the protocol's chosen values on fresh evaluation seeds) when the sweep
has one, else 'sweep' (each weight is then a method of its own, `qgf@0.1`: choosing the best weight
on the same episodes would be an oracle). With a protocol, the offline (rollout-free) choice of the
guidance weight is reported next to the rollout choice (`qgf.experiments.offline`).

The package, in the order the data flows; each module may import only those above it here:
- `rows`: a sweep's finished evaluations as flat rows (stage, task, method, weight, seed, success);
- `stats`: per task and across-task numbers with CIs, improvement, profiles, Fig. 7/9 points (rliable);
- `weight_choice`: the offline weight choice next to the rollout choice;
- `curves`: the learning-curve views (curves, the plateau rule and table, the compute view);
- `tables`: CSV and report.md text (standard library only);
- `figures`: the PNG views (through `qgf.plots`);
- this file: `write_report`, which reads the sweep directory and writes every file.
"""

from __future__ import annotations

import json
from pathlib import Path

from qgf.errors import QGFError
from qgf.experiments.report import curves, figures
from qgf.experiments.report.rows import collect_rows, planned_results, planned_runs, stage_method
from qgf.experiments.report.stats import aggregate, compute_points, model_size_points
from qgf.experiments.report.tables import csv_text, markdown
from qgf.experiments.report.weight_choice import offline_report
from qgf.fileio import atomic_write_json, atomic_write_text

__all__ = ["write_report", "IGNORED_FILE"]

IGNORED_FILE = "ignored.txt"  # the results.json under evals/ that spec.json does not expand to


def write_report(
    sweep_dir: str | Path, *, reps: int = 2000, reference: str | None = None, offline: bool | None = None
) -> list[Path]:
    """Write SWEEP_DIR/report/{report.md, runs.csv, per_task.csv, aggregate.csv, improvement.csv,
    performance_profiles.csv, model_size.csv, offline_choice.csv, offline_tables.json, curves.csv,
    plateau.csv, *.png};
    returns the paths written. `offline` (default: the spec's report.offline, else true) measures
    the offline weight choice on the tuning runs when the sweep has a protocol."""
    sweep_dir = Path(sweep_dir)
    paths, ignored = planned_results(sweep_dir)
    rows = collect_rows(sweep_dir, paths)
    if not rows:
        online = _online_tables(sweep_dir, rows, "sweep")
        if online:  # a sweep of online-only runs (RLPD from scratch): nothing evaluated offline
            out = sweep_dir / "report"
            out.mkdir(parents=True, exist_ok=True)
            _write_ignored(out, sweep_dir, ignored)
            return [out / IGNORED_FILE, *_write_online_report(out, online, "# Online phase\n")]
        stale = f" ({len(ignored)} evaluations of other specs or settings ignored)" if ignored else ""
        raise QGFError(f"{sweep_dir} holds no finished evaluation of its sweep{stale}; run qgf sweep first")
    stages = {row["stage"] for row in rows}
    stage = "final" if "final" in stages else "sweep" if "sweep" in stages else "tune"
    spec_path = sweep_dir / "spec.json"
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    settings = spec.get("report") or {}
    if reference is None:
        reference = settings.get("reference", "qgf")
    numbers = aggregate(rows, stage, reference=reference, reps=reps)
    weight_stage = "tune" if "tune" in stages else "sweep"
    model_size = model_size_points(rows, weight_stage, reps=reps)
    protocol_path = sweep_dir / "protocol.json"
    protocol = json.loads(protocol_path.read_text()) if protocol_path.is_file() else None
    offline = settings.get("offline", True) if offline is None else offline
    choice = offline_report(sweep_dir, protocol, rows, settings) if protocol and offline else None
    out = sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tables = [
        ("runs.csv", rows),
        ("per_task.csv", numbers["per_task"]),
        ("aggregate.csv", numbers["aggregate"]),
        ("improvement.csv", numbers["improvement"]),
        ("performance_profiles.csv", numbers["profiles"]),
    ]
    compute = compute_points(rows, stage)
    tables.append(("compute.csv", compute))
    plateaus, curve_numbers = _curve_tables(sweep_dir, compute)
    if curve_numbers:
        tables += [("curves.csv", curve_numbers), ("plateau.csv", plateaus)]
    online = _online_tables(sweep_dir, rows, stage)
    if model_size:
        tables.append(("model_size.csv", model_size))
    if choice is not None:
        tables.append(("offline_choice.csv", choice["rows"]))
        atomic_write_json(out / "offline_tables.json", choice)
        written.append(out / "offline_tables.json")
    for name, table in tables:
        atomic_write_text(out / name, csv_text(table))
        written.append(out / name)
    drawn = []
    if numbers["aggregate"]:
        figures.figure_methods(numbers, out / "fig5_methods.png")
        drawn.append("fig5_methods.png")
    if figures.figure_profiles(numbers["profiles"], out / "performance_profiles.png"):
        drawn.append("performance_profiles.png")
    if figures.figure_weights(rows, weight_stage, out / "fig20_success_vs_weight.png"):
        drawn.append("fig20_success_vs_weight.png")
    if figures.figure_best_of_n(rows, weight_stage, out / "fig7_best_of_n.png"):
        drawn.append("fig7_best_of_n.png")
    if figures.figure_compute(compute, out / "fig7_compute.png"):
        drawn.append("fig7_compute.png")
    if figures.figure_model_size(model_size, out / "fig9_model_size.png"):
        drawn.append("fig9_model_size.png")
    ignored_text = _write_ignored(out, sweep_dir, ignored)
    text = markdown(numbers, protocol, drawn, choice, ignored_text)
    if curve_numbers:
        text += "\n" + "\n".join(curves.plateau_markdown(plateaus))
        for name, draw, data in (
            ("learning_curves.png", curves.figure_curves, curve_numbers),
            ("curve_compute.png", curves.figure_curve_compute, plateaus),
        ):
            if draw(data, out / name):
                drawn.append(name)
                text += f"\n![{name[:-4]}]({name})\n"
    written += [out / name for name in drawn] + [out / IGNORED_FILE]
    if online:  # writes report.md with the online section appended
        return written + _write_online_report(out, online, text)
    atomic_write_text(out / "report.md", text)
    return written + [out / "report.md"]


def _write_online_report(out: Path, online: tuple[list[dict], list[dict]], text: str) -> list[Path]:
    """Write online_curves.csv/.png and report.md: `text` followed by the online phase's section."""
    atomic_write_text(out / "online_curves.csv", csv_text(curves.online_csv_rows(*online)))
    written = [out / "online_curves.csv"]
    text += "\n" + "\n".join(curves.online_markdown(*online))
    if curves.figure_online_curves(*online, out / "online_curves.png"):
        written.append(out / "online_curves.png")
        text += "\n![online_curves](online_curves.png)\n"
    atomic_write_text(out / "report.md", text)
    return written + [out / "report.md"]


def _write_ignored(out: Path, sweep_dir: Path, ignored: list[Path]) -> list[str]:
    """Write OUT/ignored.txt: the evaluations spec.json does not expand to, relative to the sweep."""
    names = [str(path.relative_to(sweep_dir)) for path in ignored]
    atomic_write_text(out / IGNORED_FILE, "".join(f"{name}\n" for name in names))
    return names


def _curve_tables(sweep_dir: Path, compute: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the plateau table, the seed-mean curves) of the runs' learning curves; empty without."""
    rows = curves.collect_curve_rows(sweep_dir, planned_runs(sweep_dir))
    if not rows:
        return [], []
    numbers = curves.curve_table(rows)
    csv_rows = [{key: value for key, value in row.items() if key != "by_seed"} for row in numbers]
    return curves.plateau_table(numbers, compute), csv_rows


def _online_tables(sweep_dir: Path, rows: list[dict], stage: str) -> tuple[list[dict], list[dict]] | None:
    """(the online phases' curves, the flat references) of the online jobs spec.json plans; the
    references are the `stage` evaluations of the agents [online] does not fine-tune (else the
    last point of their offline curves). None without online curves."""
    planned = planned_runs(sweep_dir, online=True)
    online = curves.collect_curve_rows(sweep_dir, planned and planned["runs"], online=True)
    if not online:
        return None
    frozen_methods = planned["frozen_methods"] if planned else set()
    frozen = [
        {**row, "method": f"{stage_method(row, stage)} offline"}
        for row in rows
        if row["stage"] == stage and row["method"] in frozen_methods
    ]
    if not frozen:  # no evaluation: the last point of each frozen run's offline curve
        fine_tuned = planned["fine_tuned"] if planned else {row["agent"] for row in online}
        last: dict[tuple, dict] = {}
        for row in curves.collect_curve_rows(sweep_dir, planned_runs(sweep_dir)):
            key = (row["task"], row["method"], row["seed"])
            if row["agent"] not in fine_tuned and row["step"] >= last.get(key, row)["step"]:
                last[key] = {**row, "method": f"{row['method']} offline"}
        frozen = list(last.values())
    return curves.online_curve_table(online), curves.frozen_references(frozen)
