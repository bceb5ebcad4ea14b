"""`qgf check RUN`: whether a run's critic can be trusted to guide (`qgf.analysis.trust`): Q's
sensitivity to the action, ensemble disagreement on guided vs dataset actions, guided actions'
distance to the data per weight, a verdict per weight and a suggested gate. Stdlib-only at import."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "check",
        help="critic trust: Q's action sensitivity, ensemble disagreement, distance to data per weight",
        description=(
            "Measure on dataset states whether a run's critic is worth following: the spread of Q over BC "
            "samples of a state against its spread over states, the critic ensemble's disagreement (std of "
            "its heads) on dataset chunks, BC samples and guided actions, and the guided actions' "
            "nearest-neighbour distance to dataset chunks at each weight; one verdict per weight and a "
            "suggested --gate KAPPA for gated guidance. Writes RUN/analysis/check.json (or --out)."
        ),
    )
    parser.add_argument("run", metavar="RUN", help="run directory written by `qgf train`")
    parser.add_argument("--sampler", default="qgf", help="guided estimator to check (default qgf)")
    parser.add_argument(
        "--weights",
        default="0.01,0.03,0.1,0.3,1",
        help="comma-separated weights (default 0.01,0.03,0.1,0.3,1)",
    )
    parser.add_argument("--gate", type=float, default=0.0, metavar="KAPPA", help="check the gated sampler")
    parser.add_argument("--observations", type=int, default=256, help="dataset states (default 256)")
    parser.add_argument("--samples", type=int, default=16, help="BC samples per state (default 16)")
    parser.add_argument(
        "--nn-chunks", type=int, default=20000, help="dataset chunks searched (default 20000)"
    )
    parser.add_argument("--data", help="dataset directory (default: the one recorded in the run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file to write (default RUN/analysis/check.json)")
    parser.set_defaults(func=run)


def parse_weights(text: str) -> list[float]:
    import math

    from qgf.errors import QGFError

    try:
        weights = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise QGFError(f"--weights takes comma-separated numbers, got {text!r}") from None
    if not weights or not all(math.isfinite(w) and w >= 0 for w in weights):
        raise QGFError(f"--weights needs finite numbers >= 0, got {text!r}")
    return weights


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qgf.errors import QGFError

    weights = parse_weights(args.weights)
    if args.observations < 2 or args.samples < 2:
        raise QGFError("--observations and --samples must be >= 2 (spreads need two values)")
    from qgf.analysis.run import sample_run_data
    from qgf.analysis.trust import format_report, trust_report
    from qgf.checkpoint import load_run
    from qgf.fileio import atomic_write_json

    run_ = load_run(args.run)
    data = sample_run_data(
        run_, num_observations=args.observations, nn_chunks=args.nn_chunks, seed=args.seed, data_dir=args.data
    )
    report = trust_report(
        run_,
        data.observations,
        data.observation_chunks,
        data.dataset_chunks,
        weights,
        estimator=args.sampler,
        samples=args.samples,
        gate=args.gate,
        seed=args.seed,
    )
    report.update(run=str(Path(run_.path).resolve()), step=run_.step, dataset=data.facts)
    out = Path(args.out) if args.out else Path(run_.path) / "analysis" / "check.json"
    atomic_write_json(out, report)
    print(format_report(report))
    print(f"wrote {out}")
    return 0
