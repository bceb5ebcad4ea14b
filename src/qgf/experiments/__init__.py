"""Experiments at scale: sweep specs (TOML), their job graph (generate -> train -> evaluate, and
the paper's tuning protocol), running it on Ray, and aggregate reports with rliable.

    from qgf.experiments import load_spec, run_sweep, write_report
    outcome = run_sweep(load_spec("study.toml"), "sweeps/study")
    write_report("sweeps/study")

See docs/experiments.md.
"""

from qgf.experiments.spec import SweepSpec, load_spec, parse_spec

__all__ = ["SweepSpec", "load_spec", "parse_spec", "run_sweep", "plan", "write_report"]


def __getattr__(name: str):
    if name == "run_sweep":
        from qgf.experiments.runner import run_sweep

        return run_sweep
    if name == "plan":
        from qgf.experiments.jobs import plan

        return plan
    if name == "write_report":
        from qgf.experiments.report import write_report

        return write_report
    raise AttributeError(name)
