"""Experiments at scale: sweep specs (TOML), their job graph (generate -> train -> evaluate, and
the paper's tuning protocol), running it on Ray, and aggregate reports with rliable.

    from qgf.experiments import load_spec, run_sweep, write_report
    outcome = run_sweep(load_spec("study.toml"), "sweeps/study")
    write_report("sweeps/study")

See docs/experiments.md.
"""

from qgf.experiments.spec import SweepSpec, load_spec, parse_spec
from qgf.registry import lazy_exports

_EXPORTS = {
    "run_sweep": "qgf.experiments.runner",
    "plan": "qgf.experiments.jobs",
    "write_report": "qgf.experiments.report",
}
__all__ = ["SweepSpec", "load_spec", "parse_spec", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
