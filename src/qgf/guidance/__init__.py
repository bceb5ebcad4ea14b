"""Test-time samplers for flow policies: Q-gradient guidance (QGF and its variants) and baselines.

Everything here is a pure function of two JAX callables, so any model can be guided, not only
`qgf.nets`:

- ``velocity_fn(obs (B, D), a_t (B, d), t (B,)) -> (B, d)``: the reference (BC) flow's velocity;
- ``q_fn(obs (B, D), a (B, d)) -> (B,)``: the critic, already aggregated over its ensemble. Rows must
  be independent (no batch statistics), so ``grad(sum(q_fn))`` gives every row its own gradient.

Samplers of methods that train an extra network on top of a frozen run (RobustQ, CFGRL, the
distilled denoiser: `qgf.addons`) take it as a named callable in ``extras`` (`EXTRA_CALLABLES`).

Estimator, N and step counts live in the hashable `SamplerSpec` (a static argument under `jit`);
the guidance weight is a traced value, scalar or one per row, so a whole weight sweep is one batch
and changing it never recompiles. See docs/guidance.md for the math, costs and defaults.

Modules (each imports only those above it):

- `qgf.guidance.estimators`: the ONE table of estimators (`ESTIMATOR_TABLE`: per estimator its
  function, the add-on it needs, its FLOP formula, plot colour and description) and `SamplerSpec`;
  standard library only, so the CLI's help reads it without JAX;
- `qgf.guidance.gradients`: the estimator functions and `estimate_gradient` (JAX);
- `qgf.guidance.sampler`: the sampler loop (`sample`, `sample_with_info`, `make_sampler`).

The public API below is importable from `qgf.guidance` itself and loads its module on first use.
"""

from __future__ import annotations

from qgf.registry import lazy_exports

_EXPORTS: dict[str, str] = {
    "SamplerSpec": "qgf.guidance.estimators",
    "ESTIMATORS": "qgf.guidance.estimators",
    "EXTRA_CALLABLES": "qgf.guidance.estimators",
    "sample": "qgf.guidance.sampler",
    "sample_with_info": "qgf.guidance.sampler",
    "make_sampler": "qgf.guidance.sampler",
    "estimate_gradient": "qgf.guidance.gradients",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
