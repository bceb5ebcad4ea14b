"""The evaluation plot: success rate against guidance weight, one line per sampler label (the QGF
paper's Fig. 20 view). Drawn with `qgf.plots` (headless pyplot, atomic PNG).

Imports: `qgf.plots` only (matplotlib when it draws); the results it draws are duck-typed
`qgf.evaluation.results.EvaluationResults`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from qgf.plots import pyplot, save_figure

if TYPE_CHECKING:
    from qgf.evaluation.results import ConditionResult, EvaluationResults


def write_plot(results: EvaluationResults, path: str | os.PathLike) -> Path:
    """Success rate against guidance weight, one line per sampler label with its interval as a band
    (the QGF paper's Fig. 20 view). A label evaluated at a single weight (e.g. BC, whose samples
    do not depend on the weight) is drawn as a dashed horizontal reference."""
    plt = pyplot()
    by_label: dict[str, list[ConditionResult]] = {}
    for item in results.results:
        by_label.setdefault(item.label, []).append(item)
    weights = sorted({item.weight for item in results.results})
    margin = 0.03 * (weights[-1] - weights[0]) or 0.5  # keep the end markers inside the frame
    span = (weights[0] - margin, weights[-1] + margin)

    figure, axis = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, items) in enumerate(by_label.items()):
        color = colors[index % len(colors)]
        items = sorted(items, key=lambda item: item.weight)
        if len(items) == 1:
            (item,) = items
            axis.axhline(item.success_rate, color=color, linestyle="--", label=f"{label} (any weight)")
            axis.axhspan(item.ci_low, item.ci_high, color=color, alpha=0.12, linewidth=0)
            continue
        x = [item.weight for item in items]
        axis.plot(x, [item.success_rate for item in items], marker="o", color=color, label=label)
        axis.fill_between(
            x, [item.ci_low for item in items], [item.ci_high for item in items], color=color, alpha=0.18
        )
    axis.set_xlim(*span)
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("guidance weight w")
    axis.set_ylabel("success rate")
    level = round(100 * results.interval["level"])
    axis.set_title(
        f"{results.title}\n{results.episodes_per_condition} episodes per point, {level}% "
        f"{results.interval['method'].title()} interval",
        fontsize=10,
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    return save_figure(figure, path)
