"""Add-ons: networks trained against a frozen run for the test-time methods that need one more
network (`qgf.addons.base` describes storage and training). One registry:

    name      module                class
    robustq   qgf.addons.robustq    RobustQ
    cfgrl     qgf.addons.cfgrl      CFGRL
    distill   qgf.addons.distill    Distill

Which samplers each one serves is the estimator table's `addon` field
(`qgf.guidance.estimators.ESTIMATOR_ADDONS`: robustq -> robustq, cfgrl -> cfgrl, distill ->
qgf-distill, qgf-jacobian-distill). Modules are imported on first use, so the CLI's help stays light.
"""

from __future__ import annotations

from qgf.guidance.estimators import ESTIMATOR_ADDONS
from qgf.registry import Registry

# Order is the order of help texts.
ADDONS = Registry(
    "add-on",
    {
        "robustq": "qgf.addons.robustq:RobustQ",
        "cfgrl": "qgf.addons.cfgrl:CFGRL",
        "distill": "qgf.addons.distill:Distill",
    },
)
ADDON_NAMES: tuple[str, ...] = ADDONS.names
# sampler (estimator) name -> the add-on it needs: read from the estimator table
SAMPLER_ADDONS: dict[str, str] = dict(ESTIMATOR_ADDONS)


def addon_class(name: str):
    """The add-on class registered as `name`; a one-line error with close matches otherwise."""
    return ADDONS.get(name)


def addons_for_samplers(samplers) -> list[str]:
    """The add-ons that the given sampler names (or SamplerSpecs) need, in registry order."""
    needed = {SAMPLER_ADDONS.get(getattr(s, "estimator", s)) for s in samplers}
    return [name for name in ADDON_NAMES if name in needed]


def load_addons(run, samplers) -> dict:
    """{add-on name: `LoadedAddon`} for every add-on the samplers need, loaded with `run`; a
    one-line error naming `qgf addon train RUN NAME` when one is missing."""
    from qgf.addons.base import load_addon

    return {name: load_addon(run, name) for name in addons_for_samplers(samplers)}
