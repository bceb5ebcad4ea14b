"""`qgf train`: train (or resume) a BC flow policy and chunked IQL critic. Stdlib-only at import time."""

from __future__ import annotations

import argparse
import warnings

DESCRIPTION = """\
Train one method (--agent; default qgf: the reference BC flow policy and the chunked IQL critic) on an
OGBench dataset, writing a self-describing run directory (config.json, meta.json, checkpoints/,
log.jsonl, log.csv). The critic is chosen with critic=iql (default) or critic=td.
Goal-conditioned training (hindsight goals, the DQC critic): --goal-conditioned with a dataset name
without a task, e.g. --env puzzle-3x3-play-v0 --goal-conditioned --preset goal/puzzle-3x3-cpu.
Re-running the same command on an existing --out resumes from its latest checkpoint; a run whose
config or data differ is refused. Settings: --preset, then key=value overrides (listed below)."""


def register(subparsers) -> None:
    from qgf.agents import AGENT_NAMES
    from qgf.config import available_presets, help_sections

    groups = [
        f"{heading}:\n" + "\n".join(f"  {name:<24} {text}" for name, text in entries.items())
        for heading, entries in help_sections()
    ]
    parser = subparsers.add_parser(
        "train",
        help="train (or resume) a method: the BC flow + IQL critic of QGF, or a baseline (--agent)",
        description=DESCRIPTION,
        epilog="config keys (key=value), by section; a section's keys count only for the runs in its "
        "[brackets],\nelsewhere they are accepted and ignored:\n\n" + "\n\n".join(groups),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. batch_size=128"
    )
    parser.add_argument(
        "--env",
        help="dataset name, e.g. cube-single-play-singletask-task1-v0 (goal-conditioned: puzzle-3x3-play-v0)",
    )
    parser.add_argument(
        "--goal-conditioned",
        action="store_true",
        help="train on hindsight goals with the DQC critic (goal_conditioned=true, critic=dqc unless set); "
        "--env then names play data without a task",
    )
    parser.add_argument("--data", help="data directory (default: $QGF_DATA_DIR, else ~/.ogbench/data)")
    parser.add_argument(
        "--preset",
        help=f"settings preset: {', '.join(available_presets())} (default: the run's own when resuming)",
    )
    parser.add_argument(
        "--agent",
        choices=AGENT_NAMES,
        help="training method (default: qgf, or the run's own when resuming): " + ", ".join(AGENT_NAMES),
    )
    parser.add_argument("--steps", type=int, help="total training steps (overrides the preset's)")
    parser.add_argument("--seed", type=int, help="seed (overrides the preset's, default 0)")
    parser.add_argument(
        "--seeds",
        type=_seed_list,
        help="train several seeds as ONE compiled program (e.g. 0,1,2,3), one run directory each: "
        "--out with {seed} filled in, else OUT/seed<S>",
    )
    parser.add_argument("--out", required=True, help="run directory (created, or resumed if it exists)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.add_argument(
        "--tensorboard", action="store_true", help="also log to TensorBoard (needs tensorboardX)"
    )
    parser.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (needs wandb)")
    from qgf.commands.finetune import add_online_arguments

    add_online_arguments(parser.add_argument_group("online phase (qgf finetune --help)"), required=False)
    parser.set_defaults(func=run)


def resolve_config(args: argparse.Namespace):
    """The TrainConfig this command asks for: preset (or the run's stored config) + overrides."""
    from qgf import checkpoint
    from qgf.config import available_presets, load_preset, parse_overrides
    from qgf.errors import QGFError

    overrides = parse_overrides(args.overrides)
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.seed is not None:
        overrides["seed"] = args.seed
    if getattr(args, "goal_conditioned", False):
        overrides["goal_conditioned"] = True
        if checkpoint.is_run_dir(args.out) and args.preset is None:
            overrides.setdefault("critic", "dqc")  # the layering below picks it for a new run
    if args.agent is not None:
        overrides["agent"] = args.agent
    elif checkpoint.is_run_dir(args.out):
        overrides.setdefault("agent", checkpoint.read_config(args.out).agent)
    if args.preset is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # train() repeats the warnings once, with the data in view
            return load_preset(args.preset, overrides)
    if checkpoint.is_run_dir(args.out):
        return checkpoint.read_config(args.out).replace(**overrides)
    raise QGFError(f"--preset is required for a new run; choose one of: {', '.join(available_presets())}")


def run(args: argparse.Namespace) -> int:
    import sys

    from qgf import checkpoint
    from qgf.errors import QGFError
    from qgf.training import train

    if args.seeds is not None and args.seed is not None:
        raise QGFError("pass either --seed or --seeds, not both")
    online = None
    if args.online_steps is not None:  # checked before any training
        from qgf.commands.finetune import online_settings

        if args.seeds is not None:
            raise QGFError("--online-steps runs one seed; train the seeds, then qgf finetune each run")
        online = online_settings(args)
    run_dir = args.out
    if args.seeds is not None:
        from qgf.training import seed_run_dirs

        run_dirs = seed_run_dirs(args.out, args.seeds)
        run_dir = next((str(d) for d in run_dirs if checkpoint.is_run_dir(d)), str(run_dirs[0]))
    config = resolve_config(argparse.Namespace(**{**vars(args), "out": run_dir}))
    env = args.env
    data_dir = args.data
    if checkpoint.is_run_dir(run_dir):
        meta = checkpoint.read_meta(run_dir)
        stored_env = meta.get("env")
        if env is not None and stored_env is not None and env != stored_env:
            raise QGFError(f"run {run_dir} was trained on --env {stored_env}, not {env}; choose a new --out")
        env = env or stored_env
    if env is None:
        raise QGFError("--env is required for a new run (e.g. cube-single-play-singletask-task1-v0)")

    if args.seeds is not None:
        return _run_seeds(args, config, env, data_dir, run_dirs)
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _show_warning
        result = train(
            config,
            args.out,
            env=env,
            data_dir=data_dir,
            progress=not args.no_progress,
            tensorboard=args.tensorboard,
            wandb=args.wandb,
        )
    where = f"resumed from step {result.resumed_from}" if result.resumed_from is not None else "new run"
    summary = ", ".join(
        f"{key} {result.metrics[key]:.4g}"
        for key in ("bc_loss", "critic_loss", "value_loss", "q_mean", "steps_per_s")
        if key in result.metrics
    )
    print(f"qgf train: {result.run_dir} at step {result.step} ({where}){': ' + summary if summary else ''}")
    sys.stdout.flush()
    if online is not None:
        from qgf.commands.finetune import report
        from qgf.online import run_online

        print(report(run_online(args.out, online, data_dir=data_dir, progress=not args.no_progress)))
        sys.stdout.flush()
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    import sys

    print(f"qgf: warning: {message}", file=sys.stderr)


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seeds needs distinct integers >= 0, got {text!r}")
    return seeds


def _run_seeds(args: argparse.Namespace, config, env: str, data_dir, run_dirs) -> int:
    from qgf.training import train_seeds

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _show_warning
        results = train_seeds(
            config, args.seeds, run_dirs, env=env, data_dir=data_dir, progress=not args.no_progress
        )
    for result in results:
        print(f"qgf train: {result.run_dir} at step {result.step}")
    return 0
