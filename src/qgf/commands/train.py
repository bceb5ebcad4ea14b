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
config or data differ is refused. Settings: --preset, then key=value overrides (listed below).
--eval-every N evaluates the run every N steps and at its last step (a learning curve: RUN/curve.json,
RUN/curve.csv; the checkpoints at those steps are kept); it does not change the run, and a run with a
curve continues it on resume with the curve's own settings (docs/experiments.md, "Learning curves")."""


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
    _curve_arguments(parser)
    from qgf.commands.finetune import add_online_arguments

    add_online_arguments(parser.add_argument_group("online phase (qgf finetune --help)"), required=False)
    parser.set_defaults(func=run)


def _curve_arguments(parser) -> None:
    from qgf.evaluation.curve import DEFAULT_CURVE_EPISODES, DEFAULT_CURVE_SEED

    group = parser.add_argument_group("learning curve (evaluation during training)")
    group.add_argument(
        "--eval-every", type=int, metavar="N", help="evaluate every N steps and at the last step (curve.json)"
    )
    group.add_argument(
        "--eval-episodes",
        type=int,
        default=DEFAULT_CURVE_EPISODES,
        help=f"episodes per condition and point (default {DEFAULT_CURVE_EPISODES})",
    )
    group.add_argument(
        "--eval-seed",
        type=int,
        default=DEFAULT_CURVE_SEED,
        help=f"evaluation seed of the curve (default {DEFAULT_CURVE_SEED}; never 1000 or 2000, the seeds "
        "studies choose on)",
    )
    group.add_argument(
        "--eval-samplers",
        help="comma-separated samplers (default: the run's own method: qgf for the qgf agent, else policy); "
        "runs with a behaviour flow and a critic also take test-time ones, e.g. policy,none,qgf",
    )
    group.add_argument(
        "--eval-weights", help="comma-separated guidance weights of the guided samplers (default 0.03)"
    )
    group.add_argument(
        "--eval-max-episode-steps", type=int, help="shorter episodes (default: the env's own limit)"
    )


def curve_evaluator(args: argparse.Namespace, run_dirs: list[str], config):
    """The `CurveEvaluator` that --eval-every asks for; without it, the one that continues a curve
    the run already has (None: no curve)."""
    from qgf.errors import QGFError
    from qgf.evaluation.curve import CurveEvaluator

    if args.eval_every is None:
        stored = next((CurveEvaluator.stored(d) for d in run_dirs if CurveEvaluator.stored(d)), None)
        if stored is not None:
            print(f"qgf train: continuing the learning curve every {stored.every} steps (curve.json)")
        return stored
    if config.goal_conditioned:
        raise QGFError(
            "--eval-every evaluates single-task runs; evaluate goal-conditioned runs with qgf evaluate"
        )
    if args.eval_every < 1 or args.eval_episodes < 1:
        raise QGFError("--eval-every and --eval-episodes must be >= 1")
    weights = (0.03,)
    if args.eval_weights:
        try:
            weights = tuple(float(w) for w in args.eval_weights.split(",") if w.strip())
        except ValueError:
            raise QGFError(
                f"--eval-weights takes comma-separated numbers, got {args.eval_weights!r}"
            ) from None
    samplers = (
        tuple(s.strip() for s in args.eval_samplers.split(",") if s.strip()) if args.eval_samplers else None
    )
    if samplers:
        from qgf.evaluation.conditions import sweep_conditions

        sweep_conditions(samplers, weights, [1], config.flow_steps)  # unknown names and bad weights fail now
    evaluator = CurveEvaluator(
        every=args.eval_every,
        episodes=args.eval_episodes,
        seed=args.eval_seed,
        samplers=samplers,
        weights=weights,
        max_episode_steps=args.eval_max_episode_steps,
    )
    from qgf import checkpoint

    for run_dir in run_dirs:  # a curve with other settings fails now, before any training
        if checkpoint.is_run_dir(run_dir) and checkpoint.latest_step(run_dir) is not None:
            from qgf.evaluation.curve import start_curve

            run = checkpoint.load_run(run_dir)
            start_curve(run_dir, evaluator.settings(run))
    return evaluator


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
    from qgf.fileio import check_output_dir
    from qgf.training import train

    if args.seeds is not None and args.seed is not None:
        raise QGFError("pass either --seed or --seeds, not both")
    check_output_dir(args.out.replace("{seed}", "0"))
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

    curve = curve_evaluator(args, [str(d) for d in run_dirs] if args.seeds is not None else [run_dir], config)
    if args.seeds is not None:
        return _run_seeds(args, config, env, data_dir, run_dirs, curve)
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
            curve=curve,
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


def _run_seeds(args: argparse.Namespace, config, env: str, data_dir, run_dirs, curve) -> int:
    from qgf.training import train_seeds

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _show_warning
        results = train_seeds(
            config,
            args.seeds,
            run_dirs,
            env=env,
            data_dir=data_dir,
            progress=not args.no_progress,
            curve=curve,
        )
    for result in results:
        print(f"qgf train: {result.run_dir} at step {result.step}")
    return 0
