"""Deploying a run's policy: `qgf export` writes one self-contained file (`export_run`), and
`load(POLICY)` turns it into ``act(obs, key) -> chunk`` with jax and numpy only (docs/deploy.md).

- `qgf.deploy.loader`: `load`, `DeployedPolicy`, the artifact's format (standard library, numpy,
  jax and `qgf.errors`: what a robot's process imports);
- `qgf.deploy.export`: `export_run` (loads the run through `qgf.policy`);
- `qgf.deploy.bench`: the latency table of `qgf export --bench`.
"""

from __future__ import annotations

from qgf.registry import lazy_exports

_EXPORTS: dict[str, str] = {
    "load": "qgf.deploy.loader",
    "DeployedPolicy": "qgf.deploy.loader",
    "export_run": "qgf.deploy.export",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
