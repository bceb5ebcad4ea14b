"""The latency table of `qgf export --bench`: p50 / p99 milliseconds per action chunk and per
executed action at batch 1, for the exported artifact (`qgf.deploy.load`) and the in-library
compiled sampler (`qgf.policy.RunPolicy.actions`), for BC, QGF, QGF-Jacobian and best-of-4; and
the loader's start time (in this process, and in a fresh interpreter including `import jax`).

Both sides are timed the same way: one call per observation with a fresh key, the chunk copied to
numpy (what a controller reads), after a warm-up call that compiles; calls of the two sides are
interleaved so that a noisy machine slows both alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# (row label, sampler, best-of-N, uses the weight)
BENCH_SAMPLERS = (
    ("bc", "none", 1),
    ("qgf", "qgf", 1),
    ("qgf-jacobian", "qgf-jacobian", 1),
    ("bfn-4", "none", 4),
)


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def fresh_start_seconds(path: str | os.PathLike, repeats: int = 3) -> list[tuple[float, float]]:
    """(import jax + qgf.deploy, `load` until the first chunk is ready) seconds in each of
    `repeats` fresh interpreters. The first may compile; the later ones find the program in the
    persistent compilation cache."""
    script = (
        "import time; t = time.perf_counter(); import jax, qgf.deploy; i = time.perf_counter(); "
        f"qgf.deploy.load({str(path)!r}); print(i - t, time.perf_counter() - i)"
    )
    times = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        imported, loaded = done.stdout.strip().splitlines()[-1].split()
        times.append((float(imported), float(loaded)))
    return times


def latency_table(
    run_path: str | os.PathLike,
    weight: float,
    *,
    calls: int = 200,
    gate: float = 0.0,
    platforms: tuple[str, ...] = ("cpu",),
    progress: Any = None,
) -> list[dict[str, Any]]:
    """One row per `BENCH_SAMPLERS` entry (see the module)."""
    import jax

    from qgf.checkpoint import load_run
    from qgf.deploy.export import export_run, sampler_spec
    from qgf.deploy.loader import load
    from qgf.policy import RunPolicy

    run = load_run(run_path)
    horizon = int(run.config.horizon)
    goal_dim = int(run.meta.get("goal_dim", 0)) if run.meta.get("goal_conditioned") else 0
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for label, sampler, best_of_n in BENCH_SAMPLERS:
            spec = sampler_spec(run, sampler, best_of_n, gate if spec_is_guided(sampler) else 0.0)
            w = weight if spec.uses_weight else 0.0
            path = Path(folder) / f"{label}.qgfpolicy"
            export_run(
                run_path,
                path,
                sampler=sampler,
                weight=w,
                best_of_n=best_of_n,
                gate=spec.gate,
                platforms=platforms,
            )
            start = time.perf_counter()
            deployed = load(path)
            load_seconds = time.perf_counter() - start
            policy = RunPolicy.for_run(run, [spec])
            obs = rng.normal(size=(calls + 1, 1, int(run.agent.obs_dim))).astype(np.float32)
            keys = [jax.random.key(i) for i in range(calls + 1)]
            exported_times, library_times = [], []

            def exported_call(i, deployed=deployed, obs=obs, keys=keys):
                if goal_dim:
                    deployed.act(obs[i][:, :-goal_dim], keys[i], goal=obs[i][:, -goal_dim:])
                else:
                    deployed.act(obs[i], keys[i])

            def library_call(i, policy=policy, obs=obs, keys=keys, w=w, spec=spec):
                np.asarray(policy.actions(obs[i], keys[i], w, spec))

            for i in range(calls + 1):
                # alternate which side goes first, so that neither always follows the other
                order = ((exported_call, exported_times), (library_call, library_times))
                for call, times in order if i % 2 else order[::-1]:
                    t = time.perf_counter()
                    call(i)
                    if i:  # call 0 compiles the in-library sampler
                        times.append(time.perf_counter() - t)
            e50, e99 = _percentiles(exported_times)
            l50, l99 = _percentiles(library_times)
            rows.append(
                {
                    "sampler": label,
                    "exported_p50_ms": e50,
                    "exported_p99_ms": e99,
                    "library_p50_ms": l50,
                    "library_p99_ms": l99,
                    "ratio_p50": e50 / l50,
                    "exported_p50_ms_per_action": e50 / horizon,
                    "library_p50_ms_per_action": l50 / horizon,
                    "load_seconds": load_seconds,
                    "fresh_start_seconds": fresh_start_seconds(path) if label == "qgf" else None,
                }
            )
            if progress:
                progress(f"{label}: exported {e50:.2f} ms, in-library {l50:.2f} ms (p50)")
    return rows


def spec_is_guided(sampler: str) -> bool:
    from qgf.guidance.estimators import estimator

    return estimator(sampler).guided


def format_table(rows: list[dict[str, Any]], horizon: int) -> str:
    lines = [
        f"per chunk of {horizon} actions at batch 1, ms (p50 / p99); "
        f"per executed action = per chunk / {horizon}",
        "| sampler | exported p50 | exported p99 | in-library p50 | in-library p99 | ratio p50 | "
        "exported p50 / action | load() s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['exported_p50_ms']:.3f} | {r['exported_p99_ms']:.3f} "
            f"| {r['library_p50_ms']:.3f} | "
            f"{r['library_p99_ms']:.3f} | {r['ratio_p50']:.3f} | {r['exported_p50_ms_per_action']:.3f} | "
            f"{r['load_seconds']:.2f} |"
        )
    fresh = [r["fresh_start_seconds"] for r in rows if r["fresh_start_seconds"] is not None]
    if fresh:
        lines.append(
            "loader start in fresh interpreters (qgf), s, import jax + qgf.deploy / load to first chunk: "
            + ", ".join(f"{i:.2f} / {t:.2f}" for i, t in fresh[0])
            + " (the first may compile; later ones read the persistent compilation cache)"
        )
    return "\n".join(lines)
