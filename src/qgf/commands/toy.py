"""`qgf toy`: the 1-D illustrative example (QGF paper Figs. 2 and 14) — closed-form BC flow, no training."""

from __future__ import annotations

import argparse


def _weights(text: str) -> list[float]:
    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not weights or any(w <= 0 for w in weights):
        raise argparse.ArgumentTypeError("weights must be positive (w = 0 is the BC row, always included)")
    return weights


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "toy",
        help="1-D tri-modal guidance example: compare BC, ood, bptt, qgf, qgf-jacobian, qgf-chain",
        description=(
            "Guide the exact BC flow of a tri-modal 1-D mixture toward a* with Q(a) = -(a - a*)^2, using "
            "the library's own sampler. Writes DIR/toy.json and PNG figures; prints a table."
        ),
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if needed)")
    parser.add_argument("--samples", type=_positive_int, default=2000, help="samples per (estimator, weight)")
    parser.add_argument(
        "--weights",
        type=_weights,
        default=None,
        metavar="W1,W2,...",
        help="guidance weights (default 2,4,8,16,32)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the shared initial noises")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qgf.toy import DEFAULT_WEIGHTS, format_table, run_toy, write_toy

    toy = run_toy(samples=args.samples, weights=args.weights or DEFAULT_WEIGHTS, seed=args.seed)
    print(format_table(toy))
    for path in write_toy(toy, args.out):
        print(f"wrote {path}")
    return 0
