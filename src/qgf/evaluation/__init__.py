"""Evaluation: parallel OGBench rollouts of a trained run, their statistics and result files.

One concern per module, from the bottom up (a module imports only those above it):

    workers    env hosts (in this process or in spawned worker processes) and the kept-env
               registry; numpy, the standard library and `qgf.envs` only: the worker processes
               import it and must not pay for (or fork) JAX
    envtiming  `time_env_stepping`: the environments alone, the reference of bench/evaluation.py
    rollout    the policy-agnostic rollout loop (`rollout`, `PolicyOutput`) and the seeds of
               common random numbers
    stats      `wilson_interval` and `summarize` (rollout -> one `ConditionResult` per condition)
    results    the results.json schema, its validating reader, the CSV and markdown writers
    plots      success against guidance weight (through `qgf.plots`)
    goals      goal-conditioned evaluation: the goals, the goal env and policy view, pooling over
               goals, summary files
    conditions `Condition`, the (sampler, N, weight) grid, a run's default samplers and its env
    resume     per-condition partial files, so a killed evaluation resumes
    run        `evaluate_run` / `evaluate_goals`: one `EvaluationOptions`, one shared core
    curve      learning curves (RUN/curve.json, curve.csv) and `CurveEvaluator`, evaluation
               during training (imports `run` inside its functions)

The JAX side (a run and its add-ons -> compiled samplers) is `qgf.policy`; only `run` imports it.
Import the entry points from their modules: `from qgf.evaluation.run import evaluate_run`,
`from qgf.evaluation.results import write_all, read_results`.
"""
