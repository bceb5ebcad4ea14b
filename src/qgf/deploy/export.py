"""`qgf export`: a run's sampler (any estimator, best-of-N, the gate, an add-on sampler or the
method's own policy) as one self-contained file that `qgf.deploy.load` runs with jax alone.

The exported program is `qgf.policy.actions_function` (the definition evaluation and
`RunPolicy.actions` compile) traced with `jax.export` at a fixed batch size for each platform
asked for; the parameters it reads are its leading inputs, stored next to it. Format and loader:
`qgf.deploy.loader`, docs/deploy.md.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from qgf.deploy.loader import FORMAT, FORMAT_VERSION, MANIFEST, PARAMETERS, PROGRAM
from qgf.errors import QGFError

DEFAULT_PLATFORMS = ("cpu", "cuda")
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def config_hash(config: Any) -> str:
    """sha256 (16 hex digits) of the run's config.json contents: its identity."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def sampler_spec(run: Any, sampler: str, best_of_n: int = 1, gate: float = 0.0) -> Any:
    """The `SamplerSpec` of `sampler` on `run` (its flow steps), checked against the run."""
    from qgf.guidance.estimators import SamplerSpec
    from qgf.policy import check_run_samplers

    spec = SamplerSpec(sampler, steps=run.config.flow_steps, best_of_n=best_of_n, gate=gate)
    check_run_samplers(run, [spec])
    return spec


def _check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
    platforms = tuple(dict.fromkeys(p.strip().lower() for p in platforms))
    unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
    if not platforms or unknown:
        raise QGFError(
            f"unknown platform(s) {unknown or platforms}: choose from {', '.join(KNOWN_PLATFORMS)}"
        )
    return platforms


def exported_program(run: Any, spec: Any, batch_size: int, platforms: Sequence[str]):
    """(the `jax.export.Exported` of ``(parameters..., obs, key_data, weight) -> chunk (B, d)``,
    the parameters in argument order) for a loaded run."""
    import jax

    from qgf.policy import RunPolicy, actions_function

    policy = RunPolicy.for_run(run, [spec])
    act = actions_function(spec, policy.addons)
    # Sampling reads the networks, not the optimiser: its states stay out of the artifact.
    leaves, treedef = jax.tree.flatten((run.agent.replace(opt_state=None), policy.addon_states()))
    parameters = [np.asarray(leaf) for leaf in leaves]

    def program(*arguments):
        *leaves, obs, key_data, weight = arguments
        agent, states = jax.tree.unflatten(treedef, leaves)
        return act(agent, states, obs, jax.random.wrap_key_data(key_data), weight)

    shapes = [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in parameters] + [
        jax.ShapeDtypeStruct((batch_size, int(run.agent.obs_dim)), np.float32),
        jax.ShapeDtypeStruct((2,), np.uint32),
        jax.ShapeDtypeStruct((), np.float32),
    ]
    try:
        exported = jax.export.export(jax.jit(program), platforms=tuple(platforms))(*shapes)
    except Exception as exc:  # lowering errors of jax have no common type
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QGFError(
            f"jax.export cannot lower sampler {spec.label!r} for {', '.join(platforms)} ({first}); "
            "try --platform cpu"
        ) from None
    return exported, parameters


def manifest_for(run: Any, spec: Any, weight: float, batch_size: int, platforms: Sequence[str]) -> dict:
    """The manifest of an exported policy (docs/deploy.md lists its keys)."""
    from qgf.precision import precision_in_force
    from qgf.versions import package_versions

    meta, agent = run.meta, run.agent
    goal_dim = int(meta.get("goal_dim", 0)) if meta.get("goal_conditioned") else 0
    import dataclasses

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "network_input_dim": int(agent.obs_dim),
        "observation_dim": int(agent.obs_dim) - goal_dim,
        "goal_dim": goal_dim,
        "goal_conditioned": bool(goal_dim),
        "horizon": int(run.config.horizon),
        "action_dim": int(agent.action_dim),
        "chunk_shape": [int(run.config.horizon), int(agent.action_dim)],
        "action_bounds": [-1.0, 1.0],
        "batch_size": int(batch_size),
        "inputs": {
            "obs": f"float32 ({batch_size}, {int(agent.obs_dim) - goal_dim})",
            **({"goal": f"float32 ({batch_size}, {goal_dim})"} if goal_dim else {}),
            "key": "jax.random.key(seed) or uint32 (2,)",
        },
        "sampler": spec.estimator,
        "label": spec.label,
        "sampler_spec": dataclasses.asdict(spec),
        "weight": float(weight),
        "best_of_n": int(spec.best_of_n),
        "gate": float(spec.gate),
        "matmul_precision": precision_in_force(run.config.matmul_precision),
        "platforms": list(platforms),
        "run": {
            "path": str(run.path),
            "agent": agent.name,
            "critic": getattr(run.config, "critic", None),
            "env": meta.get("env"),
            "step": int(run.step),
            "config_hash": config_hash(run.config),
            "created": meta.get("created"),
        },
        "versions": package_versions(),
    }


def export_run(
    run_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    sampler: str | None = None,
    weight: float | None = None,
    best_of_n: int = 1,
    batch_size: int = 1,
    gate: float = 0.0,
    step: int | None = None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
) -> dict[str, Any]:
    """Export `sampler` of the run at `run_path` (default: the run's own method, qgf for a qgf run
    and 'policy' for the others) with guidance `weight` to `out`, atomically; returns the manifest.
    Every check happens before anything is traced or written."""
    from qgf.checkpoint import load_run
    from qgf.evaluation.conditions import default_samplers
    from qgf.fileio import atomic_path

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise QGFError(f"--batch must be an integer >= 1, got {batch_size!r}")
    if weight is not None and not (isinstance(weight, int | float) and np.isfinite(weight) and weight >= 0):
        raise QGFError(f"--weight must be a finite number >= 0, got {weight!r}")
    platforms = _check_platforms(platforms)
    run = load_run(run_path, step)
    spec = sampler_spec(run, sampler or default_samplers(run)[0], best_of_n, gate)
    if weight is None:
        if spec.uses_weight:
            raise QGFError(f"sampler {spec.label!r} is guided: pass its weight with --weight W (e.g. 0.03)")
        weight = 0.0
    exported, parameters = exported_program(run, spec, batch_size, platforms)
    manifest = manifest_for(run, spec, weight, batch_size, platforms)
    stored = io.BytesIO()
    np.savez(stored, **{f"p{index:05d}": p for index, p in enumerate(parameters)})
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
        archive.writestr(PROGRAM, bytes(exported.serialize()))
        archive.writestr(PARAMETERS, stored.getvalue())
    return manifest
