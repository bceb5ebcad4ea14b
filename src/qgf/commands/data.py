"""`qgf data generate` and `qgf data describe`. Standard library only at import time."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="generate, validate and describe OGBench-format datasets",
        description="Generate play data with OGBench's oracles (offline) and inspect dataset files.",
    )
    data_sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: _help(parser))

    generate = data_sub.add_parser(
        "generate",
        help="generate a play dataset with OGBench's plan oracles",
        description=(
            "Generate a play dataset in OGBench's layout (<name>.npz + <name>-val.npz, loadable by "
            "ogbench.make_env_and_datasets(..., dataset_dir=OUT)), or with --slices a 100M-style "
            "directory of slices. Interrupted runs resume when the same command is run again."
        ),
    )
    generate.add_argument("--env", required=True, help="e.g. cube-double-play-v0 or cube-double-v0")
    generate.add_argument(
        "--episodes", type=int, default=None, help="training episodes (default: upstream's count, e.g. 1000)"
    )
    generate.add_argument(
        "--val-episodes", type=int, default=None, help="validation episodes (default: max(1, episodes // 10))"
    )
    generate.add_argument("--episode-length", type=int, default=1001, help="steps per episode (default 1001)")
    generate.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    generate.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    generate.add_argument(
        "--out", default=None, help="output directory (default: $QGF_DATA_DIR, else ~/.ogbench/data)"
    )
    generate.add_argument(
        "--slices", type=int, default=None, help="write a 100M-style directory of this many slices instead"
    )
    generate.add_argument("--overwrite", action="store_true", help="replace existing output files")
    generate.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    generate.set_defaults(func=run_generate)

    describe = data_sub.add_parser(
        "describe",
        help="validate a dataset file or slice directory and summarise it",
        description="Validate an OGBench-format .npz file (or 100M-style slice directory) and summarise it.",
    )
    describe.add_argument("path", help="a .npz file or a directory of slices")
    describe.add_argument("--json", action="store_true", help="print the summary as JSON")
    describe.add_argument(
        "--no-task-stats", action="store_true", help="skip relabelling every task to count successes"
    )
    describe.set_defaults(func=run_describe)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_generate(args: argparse.Namespace) -> int:
    from qgf.data import generate
    from qgf.fileio import check_output_dir

    if args.out is not None:
        check_output_dir(args.out)
    result = generate(
        args.env,
        args.out,
        episodes=args.episodes,
        val_episodes=args.val_episodes,
        episode_length=args.episode_length,
        seed=args.seed,
        workers=args.workers,
        slices=args.slices,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    resumed = f", {result.episodes_resumed} episodes resumed" if result.episodes_resumed else ""
    discarded = f", {result.episodes_discarded} scene episodes re-drawn" if result.episodes_discarded else ""
    speed = ""
    if result.steps_generated:
        speed = (
            f": {result.steps_per_second:,.0f} steps/s ({result.steps_per_cpu_second:,.0f} per CPU-second "
            "of simulation)"
        )
    print(
        f"generated {result.steps_total:,} steps ({result.plan.train_episodes} train + "
        f"{result.plan.val_episodes} val episodes of {result.plan.episode_length}) in {result.seconds:.1f} s "
        f"with {result.workers} worker(s){speed}{resumed}{discarded}"
    )
    for path in result.paths:
        print(f"  wrote {path}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    from qgf.data import describe, format_description

    summary = describe(args.path, task_stats=not args.no_task_stats)
    print(json.dumps(summary, indent=2) if args.json else format_description(summary))
    return 0
