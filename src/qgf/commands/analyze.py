"""`qgf analyze RUN`: the paper's diagnostics (Figs. 3, 4, 6, 17) on a trained run.

Standard library only at import time (the estimator table, `qgf.guidance.estimators`, is too); JAX
and the analysis load inside `run_analyze`.
"""

from __future__ import annotations

import argparse

from qgf.guidance.estimators import ESTIMATOR_TABLE, EXTRA_ESTIMATORS, PAPER_ESTIMATORS

DEFAULT_ESTIMATORS = ",".join(PAPER_ESTIMATORS)
# Mirrors of qgf.analysis.methods defaults (that package imports JAX, which `qgf --help` must not pay for).
DEFAULT_WEIGHT = 0.04
DEFAULT_BFN_N = 16
DEFAULT_OBSERVATIONS = 256
DEFAULT_NN_CHUNKS = 50_000
DEFAULT_NOISE_SCALES = "0.01,0.03,0.1"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="diagnostics of a trained run (paper Figs. 3, 4, 6, 17)",
        description=(
            "Diagnostics of a trained run's guidance estimators on a sample of its dataset's observations "
            "(validation split when present): noise sensitivity of each estimator's gradient (Fig. 3), the "
            "mean Q of the final action with BFN as reference (Fig. 4), distances to the BFN action and to "
            "the nearest dataset action chunk (Fig. 17), and FLOPs and milliseconds per action (Fig. 6). "
            "Writes JSON + PNG per diagnostic and analysis.json, which says whether the paper's orderings "
            "hold. The samplers of every add-on trained on the run (`qgf addon train`: "
            f"{', '.join(EXTRA_ESTIMATORS)}) are added to --estimators. See docs/analysis.md."
        ),
    )
    parser.add_argument("run", metavar="RUN", help="run directory (its latest checkpoint is analysed)")
    parser.add_argument("--out", default=None, help="output directory (default: RUN/analysis)")
    parser.add_argument(
        "--estimators",
        default=DEFAULT_ESTIMATORS,
        help=f"comma-separated guided estimators to compare (default: {DEFAULT_ESTIMATORS}, plus the "
        "samplers of the run's trained add-ons); BC, GradStep and BFN are always included",
    )
    parser.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="[ESTIMATOR=]W",
        help=f"guidance weight: a number for every estimator (default {DEFAULT_WEIGHT}, the middle of the "
        "paper's grid; CPU presets use discount 0.99, so Q and good weights differ from the paper's), or "
        f"ESTIMATOR=W for one of them; repeatable. {_own_weights_help()}",
    )
    parser.add_argument(
        "--bfn",
        type=int,
        default=DEFAULT_BFN_N,
        metavar="N",
        help=f"N of the best-of-N reference (default {DEFAULT_BFN_N})",
    )
    parser.add_argument(
        "--observations",
        type=int,
        default=DEFAULT_OBSERVATIONS,
        metavar="B",
        help=f"number of dataset observations to act on (default {DEFAULT_OBSERVATIONS})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the observation sample and all noise (default 0)"
    )
    parser.add_argument(
        "--data", default=None, metavar="DIR", help="dataset directory (default: the one recorded in the run)"
    )
    parser.add_argument(
        "--nn-chunks",
        type=int,
        default=DEFAULT_NN_CHUNKS,
        metavar="M",
        help=f"training-set action chunks searched for nearest neighbours (default {DEFAULT_NN_CHUNKS})",
    )
    parser.add_argument(
        "--noise-scales",
        default=DEFAULT_NOISE_SCALES,
        metavar="S1,S2,...",
        help=f"std. deviations of the perturbation eps in the noise test (default {DEFAULT_NOISE_SCALES})",
    )
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed calls per sampler at batch 1 (default 10)"
    )
    parser.add_argument(
        "--no-addons", action="store_true", help="do not add the samplers of the run's trained add-ons"
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.set_defaults(func=run_analyze)


def _own_weights_help() -> str:
    """'gradstep=W sets its step size alpha (default 0.01), ...': the estimators whose weight is not
    the guidance weight and has its own default (the estimator table's `default_weight`)."""
    own = [
        f"{name}=W sets its {record.weight_name} (default {record.default_weight:g})"
        for name, record in ESTIMATOR_TABLE.items()
        if record.default_weight is not None
    ]
    return ", ".join(own)


def parse_weights(items: list[str]) -> tuple[float, dict[str, float]]:
    """``['0.06', 'bptt=0.02']`` -> (0.06, {'bptt': 0.02}); a bare number sets the common weight."""
    from qgf.errors import QGFError

    common, per_estimator = DEFAULT_WEIGHT, {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise QGFError(f"--weight {item!r}: expected a number or ESTIMATOR=NUMBER") from None
        if sep:
            per_estimator[name.strip()] = number
        else:
            common = number
    return common, per_estimator


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def run_analyze(args: argparse.Namespace) -> int:
    from qgf.errors import QGFError

    common, per_estimator = parse_weights(args.weight)
    try:
        noise_scales = tuple(float(s) for s in _comma_list(args.noise_scales))
    except ValueError:
        raise QGFError(f"--noise-scales {args.noise_scales!r}: expected comma-separated numbers") from None

    from qgf.analysis import AnalysisSettings, analyze_run

    settings = AnalysisSettings(
        estimators=tuple(_comma_list(args.estimators)),
        weight=common,
        weight_overrides=tuple(sorted(per_estimator.items())),
        bfn_n=args.bfn,
        num_observations=args.observations,
        noise_scales=noise_scales,
        nn_chunks=args.nn_chunks,
        timing_repeats=args.repeats,
        seed=args.seed,
    )
    summary = analyze_run(
        args.run,
        args.out,
        settings,
        data_dir=args.data,
        progress=not args.no_progress,
        add_trained_addons=not args.no_addons,
    )
    print(format_summary(summary, args.out or f"{args.run}/analysis"))
    return 0


def format_summary(summary: dict, out_dir: str) -> str:
    """A few lines for the terminal; the files hold everything else."""

    def row(title: str, values: dict, digits: int = 3) -> str:
        cells = " | ".join(
            f"{name} {value:.{digits}g}" for name, value in values.items() if value is not None
        )
        return f"  {title}: {cells}"

    def verdict(ordering: dict) -> str:
        if ordering["holds"] is None:
            return "not evaluated"
        if not ordering["holds"]:
            return "does NOT hold"
        return (
            "holds (every gap > 2 paired s.e.)"
            if ordering["holds_by_2_stderr"]
            else "holds, within 2 paired s.e."
        )

    orderings = summary["orderings"]
    claims = {
        "fig3_qgf_least_noise_sensitive": "Fig. 3  qgf least noise-sensitive (vs jacobian, chain, bptt)",
        "fig4_qgf_beats_jacobian_chain_bptt": "Fig. 4  Q(qgf) > Q(qgf-jacobian), Q(qgf-chain), Q(bptt)",
        "fig4_ood_highest_q": "Fig. 4  ood has the highest Q among guided estimators",
        "fig4_ood_above_bfn": "Fig. 4  Q(ood) > Q(BFN)",
        "fig17_ood_farthest_from_bfn": "Fig. 17 ood farthest from the BFN action",
        "fig17_ood_farthest_from_dataset": "Fig. 17 ood farthest from the dataset (NN distance)",
        "fig15_qgf_beats_distill": "Fig. 15 Q(qgf) > Q(qgf-distill), Q(qgf-jacobian-distill) (Q proxy)",
    }
    lines = [
        f"analysed {summary.get('run', '?')} (step {summary.get('step', '?')}) on "
        f"{summary['num_observations']} observations in {summary['wall_clock_s']:.0f} s -> {out_dir}",
        row("mean cos(G(a_t), G(a_t + eps))", summary["noise_sensitivity_overall"]),
        row("mean Q of the final action", summary["mean_q"], 4),
        row("distance to the BFN action", summary["distance_to_bfn"]),
        row("nearest dataset chunk distance", summary["nearest_dataset_distance"]),
        row("dense FLOPs per action", summary["flops_per_action"]),
        row("ms per action at batch 1", summary["ms_per_action_batch_1"]),
    ]
    for key, text in claims.items():
        if key in orderings:
            lines.append(f"  {text}: {verdict(orderings[key])}")
    if "fig15_distill_minus_chain" in orderings:
        gap = orderings["fig15_distill_minus_chain"]
        lines.append(
            f"  Fig. 15 Q(qgf-distill) - Q(qgf-chain): {gap['mean']:.3g} ± {gap['stderr']:.2g} (paired s.e.)"
        )
    return "\n".join(lines)
