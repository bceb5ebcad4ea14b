"""`qgf report`: the aggregate report of a sweep directory. Standard library only at import time."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    report = subparsers.add_parser(
        "report",
        help="aggregate a sweep (rliable): markdown, CSV and figures",
        description="Aggregate a finished (or partly finished) sweep directory with rliable: per task "
        "mean over seeds with 95% CIs, IQM and mean across tasks with stratified-bootstrap CIs, "
        "probability of improvement; writes report.md, CSVs and PNGs into SWEEP_DIR/report. Reads only "
        "the evaluations of the jobs the sweep's spec.json expands to; any other results.json under "
        "evals/ is listed as ignored (report.md, report/ignored.txt).",
    )
    report.add_argument("sweep_dir", help="the sweep directory")
    report.add_argument("--reps", type=int, default=2000, help="bootstrap replications (default 2000)")
    report.set_defaults(func=run_report_command)


def run_report_command(args: argparse.Namespace) -> int:
    from qgf.errors import QGFError
    from qgf.experiments.report import IGNORED_FILE, write_report

    if args.reps < 1:
        raise QGFError(
            f"--reps must be >= 1 (bootstrap replications, e.g. the default 2000), got {args.reps}"
        )
    paths = write_report(args.sweep_dir, reps=args.reps)
    for path in paths:
        print(f"wrote {path}")
    ignored = [path for path in paths if path.name == IGNORED_FILE][0].read_text().splitlines()
    if ignored:
        print(
            f"qgf report: ignored {len(ignored)} evaluations that are no job of the sweep's spec.json "
            "(listed in report.md)"
        )
    return 0
