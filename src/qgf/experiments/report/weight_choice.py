"""The offline (rollout-free) choice of the guidance weight, next to the protocol's rollout choice,
as `qgf report` shows it: the numbers behind report.md's section and offline_choice.csv.

The rule and the tables are `qgf.experiments.offline`'s; this module applies them to a sweep's
rows and the spec's [report] settings. May import numpy and `qgf.experiments.offline` (deferred:
it loads runs); nothing of this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def offline_report(
    sweep_dir: Path, protocol: dict, rows: list[dict], settings: dict[str, Any]
) -> dict[str, Any]:
    """The offline weight choice of every protocol choice with a weight grid, next to the rollout
    choice (`qgf.experiments.offline`); `settings` is the spec's [report] table."""
    from qgf.experiments import offline

    tolerance = float(settings.get("offline_tolerance", offline.DEFAULT_TOLERANCE))
    observations = int(settings.get("offline_observations", offline.DEFAULT_OBSERVATIONS))
    tables, notes = offline.sweep_tables(sweep_dir, protocol, observations=observations)
    final: dict[tuple[str, str, float], list[float]] = {}
    for row in rows:
        if row["stage"] == "final":
            final.setdefault((row["method"], row["domain"], float(row["weight"])), []).append(row["success"])
    final_success = {key: float(np.mean(values)) for key, values in final.items()}
    return {
        "rule": offline.RULE.format(tolerance=tolerance),
        "tolerance": tolerance,
        "rows": offline.compare_choices(protocol, tables, final_success, tolerance),
        "tables": [{"method": m, "domain": d, **table} for (m, d), table in sorted(tables.items())],
        "notes": notes,
    }
