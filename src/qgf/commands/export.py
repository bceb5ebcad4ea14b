"""`qgf export`: one run's sampler as a self-contained file for `qgf.deploy.load` (docs/deploy.md);
``--bench`` prints the latency table of the exported policy against the in-library sampler.
Stdlib-only at import time."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Export a run's sampler at one guidance weight as ONE file (a zip of jax.export's serialised StableHLO,
its parameters and a JSON manifest: shapes, action bounds, horizon, sampler, weight, best-of-N, the
run's identity and versions, platforms, matmul precision). Load it with jax and numpy only:

    import jax, qgf.deploy
    policy = qgf.deploy.load("policy.qgfpolicy")
    chunk = policy(obs.astype("float32"), jax.random.key(0))   # (h, A); goal-conditioned: goal=...

Any sampler that needs no network beyond the run and its add-ons exports: BC (none), every
gradient estimator, gradstep, best-of-N (--best-of-n), gated guidance (--gate), the add-on samplers
(robustq, cfgrl, qgf-distill, ...) and a training-time method's own policy (--sampler policy).
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a run's guided sampler as one self-contained file (qgf.deploy.load runs it)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN", help="run directory written by `qgf train`")
    parser.add_argument(
        "--sampler", help="estimator, or 'policy' (default: the run's own method: qgf, or 'policy')"
    )
    parser.add_argument("--weight", type=float, help="guidance weight (required for guided samplers)")
    parser.add_argument("--best-of-n", type=int, default=1, metavar="N", help="best-of-N around the sampler")
    parser.add_argument(
        "--gate",
        type=float,
        default=0.0,
        metavar="KAPPA",
        help="gated guidance: w_eff = w * min(1, (KAPPA / ensemble std)^2) per step (0 = off; "
        "`qgf check RUN` suggests KAPPA)",
    )
    parser.add_argument("--batch", type=int, default=1, metavar="B", help="the fixed batch size (default 1)")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    parser.add_argument(
        "--platform",
        action="append",
        metavar="P",
        help="platform to lower for; repeat for several (default: cpu and cuda)",
    )
    parser.add_argument("--out", help="the file to write (written atomically)")
    parser.add_argument(
        "--bench",
        action="store_true",
        help="instead: p50/p99 ms per chunk and per action at batch 1 for BC, QGF, QGF-Jacobian and "
        "best-of-4, exported against in-library (at --weight, default 0.03), and the loader's start time",
    )
    parser.add_argument(
        "--calls", type=int, default=200, help="--bench: timed calls per sampler (default 200)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from qgf.errors import QGFError

    if args.bench:
        from qgf.checkpoint import load_run
        from qgf.deploy.bench import format_table, latency_table
        from qgf.fileio import atomic_write_json

        if args.calls < 10:
            raise QGFError(f"--calls must be >= 10 for a p99, got {args.calls}")
        weight = 0.03 if args.weight is None else args.weight
        rows = latency_table(
            args.run,
            weight,
            calls=args.calls,
            gate=args.gate,
            platforms=tuple(args.platform or ("cpu",)),
            progress=print,
        )
        print(format_table(rows, int(load_run(args.run).config.horizon)))
        if args.out:
            atomic_write_json(args.out, {"weight": weight, "rows": rows})
        return 0
    if not args.out:
        raise QGFError("--out POLICY is required (the file to write), or pass --bench")
    from qgf.deploy.export import DEFAULT_PLATFORMS, export_run

    manifest = export_run(
        args.run,
        args.out,
        sampler=args.sampler,
        weight=args.weight,
        best_of_n=args.best_of_n,
        batch_size=args.batch,
        gate=args.gate,
        step=args.step,
        platforms=args.platform or DEFAULT_PLATFORMS,
    )
    summary = {k: manifest[k] for k in ("label", "weight", "batch_size", "chunk_shape", "platforms")}
    print(f"wrote {args.out}: {json.dumps(summary)}")
    return 0
