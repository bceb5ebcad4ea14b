"""`qgf bench`: speed and memory ratios measured in one run (see qgf.benchmark)."""

from __future__ import annotations

import argparse

from qgf.benchmark import SCRIPTS as SCRIPT_NAMES  # light: no JAX


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmarks: inference, training, agents, seeds, goals, evaluation, data and curves ratios with "
        "targets",
        description=(
            "Run the bench/ scripts of this source checkout (inference, training, agents, seeds, goals, "
            "evaluation, data, curves; a script may start helper processes) and print every ratio with its "
            "target; writes DIR/bench.json with a mapping "
            "'ratios' (name -> {value, target, ok}) and the raw timings. See docs/performance.md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes on 2 cores")
    parser.add_argument("--out", default="bench-out", help="output directory")
    names = ",".join(SCRIPT_NAMES)
    parser.add_argument("--only", default="all", help=f"comma-separated subset of: {names}")
    parser.set_defaults(func=run)


def run(args) -> int:
    from qgf.benchmark import SCRIPTS, run_bench

    only = tuple(s.strip() for s in args.only.split(",")) if args.only not in ("", "all") else SCRIPTS
    run_bench(args.out, quick=args.quick, only=only)
    return 0
