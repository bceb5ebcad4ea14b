"""`qgf demo`: the README's main job (see qgf.demo)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="end to end on a real OGBench task: data, training, BC vs QGF vs QFQL evaluation",
        description=(
            "Generate (or reuse cached) play data for cube-single task 1, train a CPU-preset BC flow "
            "policy and IQL critic, evaluate BC ('none'), QGF ('qgf') and QFQL ('ood') over a few "
            "guidance weights, print the table and write results.json, results.csv, results.md and "
            "success_vs_weight.png into --out. About 15 minutes on 2 CPU cores; every stage resumes "
            "if interrupted. Data is cached in $QGF_DEMO_CACHE (default ~/.cache/qgf/demo-data)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default="qgf-demo", help="output directory")
    parser.add_argument("--data", default=None, help="data cache directory (default: $QGF_DEMO_CACHE)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny smoke run (seconds of data, a few hundred steps)"
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from qgf.demo import QUICK, DemoSettings, run_demo

    run_demo(
        args.out,
        settings=QUICK if args.quick else DemoSettings(),
        data_dir=args.data,
        workers=args.workers,
        progress=not args.no_progress,
    )
    return 0
