"""`qgf sweep`: a study from a TOML spec run as jobs on Ray. Standard library only at import time."""

from __future__ import annotations

import argparse

SWEEP_DESCRIPTION = """\
Run a study described by a TOML spec (tasks, data, agents with hyperparameter grids, seeds,
test-time conditions, the paper's tuning protocol) as a graph of jobs on Ray: a local instance by
default, a cluster with --address. Every job writes a directory derived from its settings, so
re-running the same command skips finished jobs and resumes the rest. See docs/experiments.md.
Shipped specs (qgf/experiments/specs/) can be named instead of a path: `qgf sweep cpu-study`.
Shipped: {shipped}."""


def register(subparsers) -> None:
    from qgf.experiments.spec import shipped_spec_names  # standard library only: --help stays fast

    sweep = subparsers.add_parser(
        "sweep",
        help="run a study (TOML spec) as jobs on Ray: generate -> train [-> addon] -> evaluate",
        description=SWEEP_DESCRIPTION.format(shipped=", ".join(shipped_spec_names())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("spec", help="the sweep spec: a TOML file, or a shipped spec's name (listed above)")
    sweep.add_argument("--out", help="sweep directory (default: sweeps/<spec name>)")
    sweep.add_argument(
        "--plan", action="store_true", help="print the job list with estimated cost; run nothing"
    )
    sweep.add_argument(
        "--address",
        help="an existing Ray cluster: HOST:PORT of a `ray start --head` node (its token authentication "
        "is followed), ray://HOST:10001 (Ray Client) or auto; default: start a local instance",
    )
    sweep.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance, >= 1 (default: all)")
    sweep.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    sweep.add_argument(
        "--records",
        metavar="DIR",
        help="keep the sweep's records (results, curves, configs, protocol; no checkpoints or data) in "
        "DIR as jobs finish, and restore them from DIR first: a study kept in version control resumes "
        "on a new machine without re-running what it had finished",
    )
    sweep.set_defaults(func=run_sweep_command)


def run_sweep_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qgf.errors import QGFError
    from qgf.experiments.spec import load_spec
    from qgf.fileio import check_output_dir

    if args.num_cpus is not None and args.num_cpus < 1:
        raise QGFError(
            f"--num-cpus must be >= 1 (CPUs of the local Ray instance), got {args.num_cpus}; "
            "leave it out to use every CPU"
        )
    spec = load_spec(args.spec)
    out = Path(args.out or Path("sweeps") / spec.name)
    check_output_dir(out)
    if args.records is not None:
        records = Path(args.records)
        if records.exists() and not records.is_dir():
            raise QGFError(f"--records {records} is a file; give a directory (it is created if missing)")
        if records.resolve() == out.resolve():
            raise QGFError(f"--records {records} is the sweep directory itself; give another directory")
    if args.plan:
        if args.records is not None and records.is_dir():  # what the sweep would restore first
            from qgf.experiments.records import copy_records

            copy_records(records, out, overwrite=False)
        from qgf.experiments.jobs import plan
        from qgf.experiments.runner import format_plan

        jobs, note = plan(spec, out)
        print(format_plan(jobs, note))
        return 0
    from qgf.experiments.runner import run_sweep

    outcome = run_sweep(
        spec,
        out,
        address=args.address,
        num_cpus=args.num_cpus,
        progress=not args.no_progress,
        records=args.records,
    )
    print(
        f"qgf sweep: {out}: {len(outcome.ran)} jobs run, {len(outcome.skipped)} already done, "
        f"{len(outcome.failed)} failed, {len(outcome.blocked)} skipped after a failure "
        f"in {outcome.wall_clock_s:.0f} s (Ray overhead {outcome.ray_overhead_s:.1f} s)"
    )
    for job_id, (error, log_path) in outcome.failed.items():
        print(f"  FAILED {job_id}: {error}\n    log: {log_path}")
    if outcome.waiting:
        print(f"  waiting: {outcome.waiting}")
    return 0 if outcome.ok else 1
