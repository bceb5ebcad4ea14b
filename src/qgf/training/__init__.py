"""Training: the one schedule loop that trains agents, S vmapped seeds and add-ons, with its
checkpoints, logs and exact resume.

    from qgf.training import train, train_seeds, resume, read_log

Modules (each may import only those above it, plus `qgf.checkpoint`, `qgf.config`, `qgf.agents`):

    steps   the fused update loop (`run_steps`: many steps in one compiled `fori_loop`); jax only,
            so that agents and add-ons can import it
    log     `MetricLog` (log.jsonl, log.csv, TensorBoard, W&B), `read_log`, `combine_metrics`
    loop    `run_schedule`, the loop itself, and `Trainable`, the protocol of what it trains:
            calls end at every log line and checkpoint; Ctrl-C keeps the finished steps
    runs    opening a run directory (create, or check config and data and load the latest
            checkpoint), the dataset checks and warnings, loading training data by name
    fit     `train`, `train_seeds`, `resume`: agents trained by the loop

Add-ons are trained by the same loop from `qgf.addons.base.train_addon`. The names below load on
first use, so importing this package costs nothing until one is used.
"""

from __future__ import annotations

from qgf.registry import lazy_exports

_EXPORTS = {
    "train": "qgf.training.fit",
    "train_seeds": "qgf.training.fit",
    "resume": "qgf.training.fit",
    "seed_run_dirs": "qgf.training.fit",
    "TrainResult": "qgf.training.fit",
    "read_log": "qgf.training.log",
    "MetricLog": "qgf.training.log",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
