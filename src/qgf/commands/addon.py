"""`qgf addon`: train an add-on against a frozen run (RobustQ, CFGRL, the distilled denoiser) and
list a run's add-ons. Stdlib-only at import time (the estimator table, `qgf.guidance.estimators`,
is too)."""

from __future__ import annotations

import argparse
import os

from qgf.guidance.estimators import ESTIMATOR_TABLE, estimators_of_addon

# Mirror of qgf.addons.ADDON_NAMES and the add-ons' summaries (that package is light, but its
# registry is read lazily here too); the samplers each one serves come from the estimator table.
_ADDON_SUMMARIES = {
    "robustq": "critic Q(s, a_t, t) of noisy actions regressed onto the run's Q(s, a) (QGF Eq. 20)",
    "cfgrl": "optimality-conditioned flow f_{o=1} on the chunks with A = Q - V > 0 (CFGRL)",
    "distill": "denoiser v_d(s, a_t, t) regressed onto ODE(a_t) of the run's BC flow (QGF App. C)",
}


SETTINGS_HELP = """\
settings (key=value; defaults train in a few minutes on 2 CPU cores for a cpu-preset run):
  steps=5000 batch_size=256 learning_rate=0.0003 hidden_dims=W,W,... (default: the run's own)
  init_from_actor=true (cfgrl, distill: start from the run's BC flow) seed=0 log_every=250
  ckpt_every=1000 keep_checkpoints=2"""


def _addons_help() -> str:
    """Each add-on, its summary and the samplers that use it ('-> --sampler cfgrl (weight = ...)')."""
    lines = ["add-ons (and the samplers that use them):"]
    for name, summary in _ADDON_SUMMARIES.items():
        samplers = []
        for sampler in estimators_of_addon(name):
            weight = ESTIMATOR_TABLE.get(sampler).weight_name
            samplers.append(
                f"--sampler {sampler}" + ("" if weight == "guidance weight" else f" (weight = {weight})")
            )
        lines += [f"  {name:<9} {summary}", f"            -> {', '.join(samplers)}"]
    return "\n".join(lines)


ADDONS_HELP = _addons_help() + "\n\n" + SETTINGS_HELP


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "addon",
        help="train an extra network on a frozen run (robustq, cfgrl, distill) or list a run's add-ons",
        description=(
            "Add-ons are networks trained against a frozen run (its BC flow, critic and value) for the "
            "test-time methods that need one: RobustQ, CFGRL, QGF-Distill. They live in RUN/addons/NAME/ "
            "(addon.json, checkpoints/, log.jsonl), never change the run's own files, are trained by the "
            "same loop as `qgf train` (so they resume exactly when the same command is run again), and are "
            "loaded with the run by `qgf evaluate` and `qgf analyze`."
        ),
        epilog=ADDONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="addon_command", metavar="ACTION", parser_class=type(parser))

    train = actions.add_parser(
        "train",
        help="train (or resume) an add-on of a run",
        epilog=ADDONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("run", metavar="RUN", help="run directory written by `qgf train`")
    train.add_argument("name", metavar="NAME", help="add-on: robustq, cfgrl or distill")
    train.add_argument(
        "overrides", nargs="*", metavar="key=value", help="add-on settings, e.g. batch_size=128"
    )
    train.add_argument("--steps", type=int, help="total training steps (default 5000)")
    train.add_argument(
        "--step", type=int, help="base checkpoint to train against (default: the latest, or the add-on's own)"
    )
    train.add_argument("--data", help="dataset directory (default: the one recorded in the run)")
    train.add_argument("--restart", action="store_true", help="delete the add-on and train it from scratch")
    train.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    train.add_argument(
        "--tensorboard", action="store_true", help="also log to TensorBoard (needs tensorboardX)"
    )
    train.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (needs wandb)")
    train.set_defaults(func=run_train)

    listing = actions.add_parser("list", help="list a run's add-ons")
    listing.add_argument("run", metavar="RUN", help="run directory")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_train(args: argparse.Namespace) -> int:
    from qgf.addons import addon_class
    from qgf.addons.base import AddonConfig, train_addon
    from qgf.checkpoint import is_run_dir
    from qgf.errors import QGFError
    from qgf.fileio import check_output_dir

    addon_class(args.name)
    overrides = AddonConfig.parse(args.overrides)
    if is_run_dir(args.run):
        check_output_dir(os.path.join(args.run, "addons", args.name), option="the add-on directory")
    if args.steps is not None:
        if args.steps < 1:
            raise QGFError(f"--steps must be >= 1, got {args.steps}")
        overrides["steps"] = args.steps
    result = train_addon(
        args.run,
        args.name,
        overrides=overrides,
        step=args.step,
        data_dir=args.data,
        restart=args.restart,
        progress=not args.no_progress,
        tensorboard=args.tensorboard,
        wandb=args.wandb,
    )
    resumed = "" if result.resumed_from is None else f" (resumed from step {result.resumed_from})"
    loss = result.metrics.get("loss")
    tail = f", final loss {loss:.4g}" if loss is not None else ""
    print(f"add-on {args.name}: {result.step} steps{resumed}{tail} -> {result.path}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from qgf.addons.base import describe, dumps, list_addons
    from qgf.checkpoint import is_run_dir
    from qgf.errors import QGFError

    if not is_run_dir(args.run):
        raise QGFError(f"{args.run} is not a qgf run directory (no config.json)")
    entries = list_addons(args.run)
    print(dumps(entries) if args.json else describe(entries))
    return 0
