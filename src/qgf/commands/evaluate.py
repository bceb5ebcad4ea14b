"""`qgf evaluate`: roll out a trained run's policy for a grid of (sampler, best-of-N, weight).
Stdlib-only at import time."""

from __future__ import annotations

import argparse
import os

DESCRIPTION = """\
Evaluate a trained run on its OGBench single-task environment. For every sampler, best-of-N and
guidance weight, runs --episodes episodes (action chunks executed open-loop, many envs in parallel)
and reports the success rate with a 95% Wilson interval, return, episode length, mean Q of the
executed chunks and wall-clock. Writes results.json (schema: docs/evaluation.md), results.csv,
results.md and success_vs_weight.png to --out, and prints the table. Every weight is reported on
its own; no maximum over weights is a headline number.

What the weight means depends on the sampler: the guidance weight w = 1/beta of Algorithm 1 for the
Q-gradient samplers (qgf, qgf-jacobian, ood, bptt, robustq, qgf-distill, ...); GradStep's ascent step
size alpha (each of its L = --gradstep-steps steps is a <- a + alpha * grad_a Q(s, a), from the clipped
BC sample; the paper's Table 3 uses alpha = 0.01 with L = 3, or L = 5 on scene); CFGRL's weight
tau_cfg in f + tau_cfg (f_{o=1} - f) (paper grid 1,2,3,5,10,15; 0 is BC, 1 the conditioned flow).
BC ('none') and 'policy' ignore it.

Without --sampler a run is evaluated with its own method: a qgf run with QGF over --weights, a run
of a training-time agent (fql, edp, dac, qsm-bc, qam, bam, qam-fql, qam-edit, rebrac, fbrac, fawac,
ifql) with its own trained policy ('policy', evaluated once). Name samplers to evaluate test-time
guidance on such a run's BC flow and critic (e.g. --sampler qgf --weights 0.03).

robustq, cfgrl, qgf-distill and qgf-jacobian-distill need an add-on trained on the run first:
`qgf addon train RUN robustq|cfgrl|distill` (stored in RUN/addons/, loaded with the run).

A goal-conditioned run (`qgf train --goal-conditioned`) is evaluated on OGBench's five evaluation
goals of its domain (task_id 1..5 of the goal-conditioned env, observations [observation, goal]);
--goal K[,K...] (or --task K) selects goals. Each goal's results go to --out/goal<K>/ (the files
above), and summary.md, summary.json and success_vs_weight.png to --out: success per goal and
condition, and overall (the mean over goals, with a 95% Wilson interval over all episodes).

Finished conditions (and, goal-conditioned, (goal, condition) pairs) are saved in --out/partial/,
so rerunning a killed evaluation with the same settings resumes it at the next condition, with the
same results. --out is checked writable before any rollout."""

PAPER_WEIGHTS = "0,0.004,0.008,0.01,0.02,0.04,0.06,0.08,0.1,0.12"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="success rate (with 95%% CI) per sampler, best-of-N and guidance weight",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run", metavar="RUN", help="run directory written by `qgf train` (or a checkpoint file)"
    )
    parser.add_argument(
        "--sampler",
        action="append",
        metavar="NAME",
        help="sampler to evaluate; repeat for several (default: the run's own method: qgf for a qgf "
        "run, 'policy' for a training-time agent's run such as fql or qam). 'none' is BC, 'policy' the "
        "trained method's own policy; e.g. --sampler qgf --sampler ood. Samplers: "
        + ", ".join(_sampler_names()),
    )
    parser.add_argument(
        "--weights",
        default=PAPER_WEIGHTS,
        metavar="W,W,...",
        help=f"comma-separated guidance weights >= 0 (default: 0 and the paper's grid, {PAPER_WEIGHTS})",
    )
    parser.add_argument(
        "--bfn", default="1", metavar="N[,N...]", help="best-of-N sample counts, comma-separated (default: 1)"
    )
    parser.add_argument(
        "--gradstep-steps",
        type=int,
        metavar="L",
        help="GradStep's number of ascent steps L (default 3; the paper's Table 3 uses 5 on scene); "
        "its weight is the step size alpha of every step",
    )
    parser.add_argument("--episodes", type=int, default=50, help="episodes per condition (default: 50)")
    parser.add_argument(
        "--task",
        type=int,
        help="evaluate on single-task K instead of the run's own task; for a goal-conditioned run, "
        "evaluation goal K (same as --goal K)",
    )
    parser.add_argument(
        "--goal",
        metavar="K[,K...]",
        help="goal-conditioned runs: OGBench evaluation goals to evaluate, 1..5 (default: all five)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of env resets and policy noise (default: 0)"
    )
    parser.add_argument(
        "--workers", type=int, help="env worker processes (default: all cores; 0 = in this process)"
    )
    parser.add_argument("--envs", type=int, help="envs alive at once (default: 8 per worker)")
    parser.add_argument("--step", type=int, help="checkpoint step to evaluate (default: the latest)")
    parser.add_argument(
        "--max-episode-steps",
        type=int,
        metavar="N",
        help="end episodes after N steps (smoke tests; default: the env's own limit); results record it",
    )
    parser.add_argument("--out", help="output directory (default: RUN/eval)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.set_defaults(func=run)


def _sampler_names() -> tuple[str, ...]:
    from qgf.guidance.estimators import SAMPLERS

    return SAMPLERS


def parse_weights(text: str) -> list[float]:
    import math

    from qgf.errors import QGFError

    weights = []
    for item in text.split(","):
        item = item.strip()
        try:
            weight = float(item)
        except ValueError:
            raise QGFError(f"--weights: {item!r} is not a number (expected e.g. 0,0.004,0.01)") from None
        if not math.isfinite(weight) or weight < 0:
            raise QGFError(f"--weights: guidance weights must be finite and >= 0, got {item}")
        weights.append(weight)
    return weights


def parse_best_of_n(text: str) -> list[int]:
    from qgf.errors import QGFError

    values = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise QGFError(f"--bfn: expected integers >= 1 such as 1,4,16, got {item!r}")
        values.append(int(item))
    return values


def check_samplers(names: list[str]) -> list[str]:
    from qgf.errors import QGFError
    from qgf.guidance.estimators import SAMPLERS
    from qgf.registry import unknown_name_error

    for name in names:
        if name in SAMPLERS:
            continue
        if name.lower().startswith("bfn"):
            raise QGFError(f"--sampler {name!r}: best-of-N is --bfn N (BFN is --sampler none --bfn N)")
        raise unknown_name_error("--sampler", name, SAMPLERS)
    return list(dict.fromkeys(names))


def with_gradstep_steps(samplers, best_of_n: list[int], flow_steps: int, gradstep_steps: int):
    """The sampler list with 'gradstep' replaced by explicit SamplerSpecs (one per N) of L steps."""
    from qgf.errors import QGFError
    from qgf.guidance import SamplerSpec

    if not samplers or "gradstep" not in samplers:
        raise QGFError("--gradstep-steps applies to GradStep only: add --sampler gradstep")
    expanded = []
    for name in samplers:
        if name == "gradstep":
            expanded.extend(
                SamplerSpec("gradstep", steps=flow_steps, best_of_n=n, gradstep_steps=gradstep_steps)
                for n in best_of_n
            )
        else:
            expanded.append(name)
    return expanded


def parse_goals(text: str) -> list[int]:
    from qgf.envs import NUM_EVALUATION_GOALS
    from qgf.errors import QGFError

    goals = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or not 1 <= int(item) <= NUM_EVALUATION_GOALS:
            raise QGFError(
                f"--goal: {item!r} is not an evaluation goal; OGBench has goals 1..{NUM_EVALUATION_GOALS} "
                "(e.g. --goal 1,3)"
            )
        goals.append(int(item))
    return list(dict.fromkeys(goals))


def run(args: argparse.Namespace) -> int:
    import sys

    from qgf.envs import NUM_EVALUATION_GOALS, NUM_TASKS
    from qgf.errors import QGFError

    samplers = check_samplers(args.sampler) if args.sampler else None
    weights = parse_weights(args.weights)
    best_of_n = parse_best_of_n(args.bfn)
    if args.episodes < 1:
        raise QGFError(f"--episodes must be >= 1, got {args.episodes}")
    if args.workers is not None and args.workers < 0:
        raise QGFError(f"--workers must be >= 0, got {args.workers}")
    if args.envs is not None and args.envs < 1:
        raise QGFError(f"--envs must be >= 1, got {args.envs}")
    if args.gradstep_steps is not None and args.gradstep_steps < 0:
        raise QGFError(f"--gradstep-steps must be >= 0, got {args.gradstep_steps}")
    if args.task is not None and not 1 <= args.task <= max(NUM_TASKS, NUM_EVALUATION_GOALS):
        raise QGFError(
            f"--task {args.task} does not exist: OGBench has tasks (and evaluation goals) 1..{NUM_TASKS}"
        )
    if args.max_episode_steps is not None and args.max_episode_steps < 1:
        raise QGFError(f"--max-episode-steps must be >= 1, got {args.max_episode_steps}")
    if args.seed < 0:
        raise QGFError(f"--seed must be >= 0 (numpy seeds are non-negative), got {args.seed}")
    from qgf.fileio import check_output_dir

    if args.out is not None:
        check_output_dir(args.out)
    goals = parse_goals(args.goal) if args.goal is not None else None

    from qgf.checkpoint import load_run
    from qgf.evaluation.conditions import evaluation_env_name, run_dataset_name
    from qgf.evaluation.goals import is_goal_conditioned
    from qgf.evaluation.results import markdown_table, write_all
    from qgf.evaluation.run import evaluate_run
    from qgf.policy import use_compilation_cache

    use_compilation_cache()  # a later evaluation of a run of the same shapes loads its samplers
    run_ = load_run(args.run, step=args.step)
    if args.gradstep_steps is not None:
        samplers = with_gradstep_steps(samplers, best_of_n, run_.config.flow_steps, args.gradstep_steps)
    out = args.out or os.path.join(run_.path, "eval")
    check_output_dir(out)
    if is_goal_conditioned(run_):
        if goals is not None and args.task is not None:
            raise QGFError("--task K on a goal-conditioned run is --goal K: give one of them")
        if args.task is not None:
            goals = [args.task]
        return _evaluate_goals(args, run_, samplers, weights, best_of_n, goals, out)
    if goals is not None:
        raise QGFError(
            f"--goal: {run_.path} was trained single-task on {run_dataset_name(run_.meta)}, not "
            "goal-conditioned, so it has no evaluation goals; use --task K for another single task"
        )
    if args.task is not None:
        trained_env, trained_task = evaluation_env_name(run_dataset_name(run_.meta))
        if args.task != trained_task:
            print(
                f"qgf: warning: the run was trained on {trained_env}; its critic knows that task's reward, "
                f"not task {args.task}'s",
                file=sys.stderr,
            )
    results = evaluate_run(
        run_,
        samplers=samplers,
        weights=weights,
        bfn=best_of_n,
        episodes=args.episodes,
        task=args.task,
        seed=args.seed,
        workers=args.workers,
        num_envs=args.envs,
        progress=not args.no_progress,
        resume_dir=os.path.join(out, "partial"),
        max_episode_steps=args.max_episode_steps,
    )
    paths = write_all(results, out)
    print(f"\n{results.env}: {results.episodes_per_condition} episodes per condition, seed {results.seed}")
    print(markdown_table(results))
    print(
        f"\n{results.env_steps} env steps in {results.wall_clock_s:.1f} s; wrote "
        + ", ".join(str(path) for path in paths.values())
    )
    sys.stdout.flush()
    return 0


def _evaluate_goals(args, run_, samplers, weights, best_of_n, goals, out) -> int:
    """A goal-conditioned run: every requested goal, its files in OUT/goal<K>/, then the summary."""
    import sys

    from qgf.evaluation.goals import goal_summary_table, write_goal_evaluation, write_goal_results
    from qgf.evaluation.run import evaluate_goals

    def goal_done(goal, results) -> None:
        paths = write_goal_results(results, out)
        successes = ", ".join(f"{r.label}@{r.weight:g} {r.success_rate:.2f}" for r in results.results)
        print(f"goal {goal}: {successes}; wrote {paths['json']}")
        sys.stdout.flush()

    evaluation = evaluate_goals(
        run_,
        samplers=samplers,
        weights=weights,
        bfn=best_of_n,
        episodes=args.episodes,
        goals=goals,
        seed=args.seed,
        workers=args.workers,
        num_envs=args.envs,
        progress=not args.no_progress,
        resume_dir=os.path.join(out, "partial"),
        max_episode_steps=args.max_episode_steps,
        on_goal_done=goal_done,
    )
    paths = write_goal_evaluation(evaluation, out)
    first = evaluation.per_goal[evaluation.goals[0]]
    print(
        f"\n{evaluation.env}, goals {','.join(map(str, evaluation.goals))}: {first.episodes_per_condition} "
        f"episodes per goal and condition, seed {first.seed}; overall = mean over goals, 95% interval "
        "over all episodes"
    )
    print(goal_summary_table(evaluation))
    overall = evaluation.overall()
    print(
        f"\n{overall.env_steps} env steps in {overall.wall_clock_s:.1f} s; wrote "
        + ", ".join(str(paths[key]) for key in ("summary", "markdown", "plot"))
        + f" and {len(evaluation.goals)} goal directories"
    )
    sys.stdout.flush()
    return 0
