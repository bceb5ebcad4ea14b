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


def fresh_start_seconds(path: str | os.PathLike, repeats: int = 3) -> list[float]:
    """Wall times of fresh interpreters that each import jax and qgf.deploy, load `path` and
    compile it (its first chunk is ready): the loader's whole start. The first may compile; the
    later ones find the program in the persistent compilation cache."""
    script = (
        "import time; t = time.perf_counter(); import jax, qgf.deploy; "
        f"qgf.deploy.load({str(path)!r}); print(time.perf_counter() - t)"
    )
    times = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        times.append(float(done.stdout.strip().splitlines()[-1]))
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
            for i in range(calls + 1):
                network_input = obs[i]
                t = time.perf_counter()
                if goal_dim:
                    deployed.act(network_input[:, :-goal_dim], keys[i], goal=network_input[:, -goal_dim:])
                else:
                    deployed.act(network_input, keys[i])
                t_exported = time.perf_counter() - t
                t = time.perf_counter()
                np.asarray(policy.actions(network_input, keys[i], w, spec))
                t_library = time.perf_counter() - t
                if i:  # call 0 compiles the in-library sampler
                    exported_times.append(t_exported)
                    library_times.append(t_library)
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
            "loader start in a fresh interpreter (import jax + qgf.deploy, load, first chunk ready; qgf): "
            + ", ".join(f"{t:.2f}" for t in fresh[0])
            + " s (the first run may compile; later runs read the persistent compilation cache)"
        )
    return "\n".join(lines)
