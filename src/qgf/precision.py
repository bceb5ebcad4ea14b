"""The matmul precision a run computes with: one setting (`TrainConfig.matmul_precision`), applied
where the agent's programs are traced.

On GPUs JAX's default float32 matmuls may use TF32 (or bf16 passes): faster, with about 10 bits
of mantissa. `'high'` and `'highest'` ask XLA for more (`jax.default_matmul_precision`); CPUs
compute float32 matmuls in float32 whatever the setting, so on a CPU every choice gives the same
numbers. `'default'` leaves JAX's default in force and traces exactly what it traced before the
setting existed. bench/gpu_check.sh measures the speed and loss of both on a lent GPU
(docs/performance.md, "GPU").

Imports only the standard library at module level (jax when a precision is applied).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

PRECISIONS = ("default", "high", "highest")


def matmul_precision(name: str) -> contextlib.AbstractContextManager:
    """A context in which traced matmuls use precision `name` (nothing changes for 'default')."""
    if name == "default":
        return contextlib.nullcontext()
    import jax  # here, not at the top: config validation imports this module and stays light

    return jax.default_matmul_precision(name)


def precision_in_force(name: str) -> dict[str, Any]:
    """What float32 matmuls compute with under setting `name` (recorded in meta.json, results.json
    and export manifests): the setting, JAX's process-wide default (`jax_default_matmul_precision`,
    e.g. from $JAX_DEFAULT_MATMUL_PRECISION; None when unset), the one in force where the run's
    programs are traced (the setting, or under 'default' JAX's default) and the backend."""
    import jax

    process_default = jax.config.jax_default_matmul_precision
    process_default = None if process_default is None else str(process_default)
    return {
        "setting": name,
        "jax_default_matmul_precision": process_default,
        "in_force": name if name != "default" else (process_default or "default"),
        "backend": jax.default_backend(),
    }


def with_agent_precision(function: Callable) -> Callable:
    """Wrap `function(agent, ...)` so that it is traced under `agent.config.matmul_precision`.
    Apply it inside `jax.jit` (the precision is read while tracing and becomes part of the program)."""

    @functools.wraps(function)
    def wrapped(agent: Any, *args: Any, **kwargs: Any) -> Any:
        with matmul_precision(getattr(agent.config, "matmul_precision", "default")):
            return function(agent, *args, **kwargs)

    return wrapped
