"""Diagnostics on a trained run: the QGF paper's Figs. 3, 4, 6 and 17.

For a frozen policy (velocity field) and critic, and a sample of dataset observations:

- **noise sensitivity** (Fig. 3, App. E; `qgf.analysis.noise`): cos(G(s, a_t), G(s, a_t + eps)) for
  every estimator G, with a_t on the unguided (BC) denoising path at each flow step t and
  eps ~ N(0, sigma^2 I) for a few scales sigma;
- **Q of the final action** (Fig. 4, App. D; `qgf.analysis.qvalues`) per estimator at one guidance
  weight each, with BC, GradStep and best-of-N (BFN) as references;
- **distances** (Fig. 17; `qgf.analysis.distances`): of each final action to the BFN action for the
  same observation, and to its nearest neighbour among the dataset's action chunks;
- **test-time compute** (Fig. 6; `qgf.analysis.compute`): dense-layer FLOPs per action (the
  estimator table's analytic formula, cross-checked by counting the traced program and by XLA's
  cost analysis) and measured milliseconds per action.

`qgf.analysis.methods` holds what is compared (`PolicyAndCritic`, `AnalysisSettings`, the methods),
`qgf.analysis.claims` whether the paper's orderings hold, `qgf.analysis.plots` the figures (through
`qgf.plots`) and `qgf.analysis.run` the whole analysis (`analyze`, `analyze_run`, `sample_run_data`).
The figure modules import `qgf.guidance` and `qgf.analysis.methods` only; `run` imports them all, and
run loading, data and add-ons inside its functions.

The samplers that need an add-on (`qgf.addons`: robustq, cfgrl, qgf-distill, qgf-jacobian-distill)
take part through `PolicyAndCritic.extras`; `analyze_run` adds every add-on the run has trained.

Everything takes any JAX callables (`PolicyAndCritic`), like `qgf.guidance`; `analyze_run` loads
a run directory and its dataset and writes JSON + PNG files. docs/analysis.md describes the
outputs, docs/fidelity.md ("Diagnostics") the choices made where the paper is silent.

The public API below is importable from `qgf.analysis` itself and loads its module on first use.
"""

from __future__ import annotations

from qgf.registry import lazy_exports

_EXPORTS: dict[str, str] = {
    "AnalysisSettings": "qgf.analysis.methods",
    "PolicyAndCritic": "qgf.analysis.methods",
    "analyze": "qgf.analysis.run",
    "analyze_run": "qgf.analysis.run",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
