"""The paper's qualitative claims (Figs. 3, 4, 15, 17), checked on one analysis' reports.

Imports numpy, the estimator table and `qgf.analysis.methods`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from qgf.analysis.methods import summarize
from qgf.guidance.estimators import EXTRA_ESTIMATORS, GUIDED_ESTIMATORS


def _ordering(rows: Mapping[str, Sequence[float]], best: str, others: Sequence[str]) -> dict[str, Any]:
    """Does `best` have the largest mean? Rows are paired (same observations, noise and eps), so
    each comparison also gets the paired difference and whether it exceeds 2 standard errors."""
    present = [o for o in others if o in rows]
    if best not in rows or not present:
        return {"holds": None, "reason": f"needs {best!r} and at least one of {', '.join(others)}"}
    top = np.asarray(rows[best], np.float64)
    against = {}
    for other in present:
        difference = summarize(top - np.asarray(rows[other], np.float64))
        against[other] = {"value": float(np.mean(rows[other])), "difference": difference}
    differences = [entry["difference"] for entry in against.values()]
    return {
        "holds": all(d["mean"] > 0 for d in differences),
        "holds_by_2_stderr": all(d["mean"] > 2 * d["stderr"] for d in differences),
        "value": float(top.mean()),
        "against": against,
    }


def paper_orderings(
    noise: Mapping[str, Any] | None, q_values: Mapping[str, Any], distances: Mapping[str, Any], bfn: str
) -> dict[str, Any]:
    """Whether the paper's qualitative claims hold on this run, from the reports' per-observation
    values: ``holds`` compares means, ``holds_by_2_stderr`` asks every paired difference to exceed
    twice its standard error."""
    rivals = ("qgf-jacobian", "qgf-chain", "bptt")
    result: dict[str, Any] = {}
    if noise is not None:
        cosines = {name: e["overall_per_observation"] for name, e in noise["estimators"].items()}
        result["fig3_qgf_least_noise_sensitive"] = _ordering(cosines, "qgf", rivals)
    q_rows = {label: m["per_observation"] for label, m in q_values["methods"].items()}
    # Figs. 4 and 17 compare the estimators of the run's own flow and critic (not the add-ons)
    guided = [
        label for label in q_rows if label in GUIDED_ESTIMATORS and label not in EXTRA_ESTIMATORS + ("ood",)
    ]
    result["fig4_qgf_beats_jacobian_chain_bptt"] = _ordering(q_rows, "qgf", rivals)
    result["fig4_ood_highest_q"] = _ordering(q_rows, "ood", guided)
    result["fig4_ood_above_bfn"] = _ordering(q_rows, "ood", [bfn])
    if "qgf" in q_rows:
        result["fig4_qgf_minus_bfn"] = q_values["methods"]["qgf"]["minus_reference"]
    methods = distances["methods"]
    to_bfn = {label: m["to_reference"]["per_observation"] for label, m in methods.items()}
    nearest = {
        label: m["nearest_dataset"]["per_observation"]
        for label, m in methods.items()
        if "nearest_dataset" in m
    }
    result["fig17_ood_farthest_from_bfn"] = _ordering(to_bfn, "ood", guided)
    result["fig17_ood_farthest_from_dataset"] = _ordering(nearest, "ood", guided)
    # Fig. 15 compares success rates; its Q-side counterpart: distilled denoisers below QGF, and
    # QGF-Distill close to QGF-chain (whose ODE(a_t) it learns). Only when the run has the add-on.
    distilled = [label for label in ("qgf-distill", "qgf-jacobian-distill") if label in q_rows]
    if distilled:
        result["fig15_qgf_beats_distill"] = _ordering(q_rows, "qgf", distilled)
        if "qgf-chain" in q_rows and "qgf-distill" in q_rows:
            result["fig15_distill_minus_chain"] = summarize(
                np.asarray(q_rows["qgf-distill"], np.float64) - np.asarray(q_rows["qgf-chain"], np.float64)
            )
    return result
