"""`qgf finetune`: the online phase of a finished run, in a new run directory. Also the online
options `qgf train --online-steps` shares. Stdlib-only at import time."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Offline-to-online fine-tuning: copy RUN (config, meta, latest checkpoint) to --out and run the online
phase there: the agent acts in the run's single-task env with its acting policy (action chunks open
loop), every reached state is labelled as the offline loader labels data, and each env step is
followed by --utd updates of the offline objective on batches of offline U online data
(--online-sampling union: uniform over both, the QAM paper's setting; symmetric: RLPD's 50/50).
A qgf run keeps its BC flow frozen and trains its critic online (online QGF; --train-policy to
fine-tune the flow too). Re-running the same command resumes from the newest online checkpoint
(OUT/online/checkpoints: agent, replay buffer and env step counter together). docs/training.md."""


def add_online_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """The online phase's options (shared by `qgf finetune` and `qgf train`)."""
    parser.add_argument(
        "--online-steps",
        type=int,
        required=required,
        help="env steps of the online phase" + ("" if required else " (after the offline steps)"),
    )
    parser.add_argument(
        "--online-sampling",
        choices=("union", "symmetric"),
        default="union",
        help="batches: uniform over offline U online (union, QAM) or half each (symmetric, RLPD)",
    )
    parser.add_argument("--utd", type=int, default=1, help="updates per env step (default 1)")
    parser.add_argument(
        "--online-sampler",
        help="acting sampler (default: the run's own method: qgf for a qgf run, else policy)",
    )
    parser.add_argument("--online-weight", type=float, default=0.1, help="guidance weight when acting")
    parser.add_argument(
        "--train-policy",
        action="store_true",
        help="also train the policy networks online (a qgf run's BC flow is frozen by default)",
    )
    parser.add_argument("--online-seed", type=int, default=0, help="env reset and acting-noise seed")
    parser.add_argument("--online-workers", type=int, default=0, choices=(0, 1), help="0: env in process")
    parser.add_argument("--online-log-every", type=int, default=1000, help="env steps between log lines")
    parser.add_argument("--online-ckpt-every", type=int, default=10_000, help="env steps between checkpoints")
    parser.add_argument("--max-episode-steps", type=int, help="episode limit (default: the env's own)")
    parser.add_argument(
        "--online-eval-every",
        type=int,
        default=0,
        help="env steps between learning-curve points in RUN/online/curve.json (a multiple of "
        "--online-log-every; default 0: none)",
    )
    parser.add_argument("--online-eval-episodes", type=int, default=5, help="episodes per curve point")
    parser.add_argument("--online-eval-seed", type=int, default=3000, help="the curve's evaluation seed")


def online_settings(args: argparse.Namespace):
    from qgf.online import OnlineSettings

    return OnlineSettings(
        steps=args.online_steps,
        sampling=args.online_sampling,
        utd=args.utd,
        sampler=args.online_sampler,
        weight=args.online_weight,
        freeze_policy=False if args.train_policy else None,
        seed=args.online_seed,
        max_episode_steps=args.max_episode_steps,
        workers=args.online_workers,
        log_every=args.online_log_every,
        ckpt_every=args.online_ckpt_every,
        eval_every=args.online_eval_every,
        eval_episodes=args.online_eval_episodes,
        eval_seed=args.online_eval_seed,
    )


def report(result) -> str:
    metrics = result.metrics
    summary = ", ".join(
        f"{key} {metrics[key]:.4g}" for key in ("episode_success", "q_mean", "steps_per_s") if key in metrics
    )
    where = f"resumed at {result.resumed_from}" if result.resumed_from is not None else "new phase"
    return (
        f"qgf online: {result.run_dir} at {result.env_steps} env steps, {result.episodes} episodes "
        f"({where}){': ' + summary if summary else ''}"
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="online fine-tuning of a finished run (offline-to-online RL, online QGF)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="the offline run to start from (not modified)")
    parser.add_argument("--out", required=True, help="the fine-tuned run (created, or resumed)")
    parser.add_argument("--data", help="data directory (default: where the run's dataset was read)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    add_online_arguments(parser, required=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qgf.online import finetune

    settings = online_settings(args)
    result = finetune(args.run, args.out, settings, data_dir=args.data, progress=not args.no_progress)
    print(report(result), flush=True)
    return 0
