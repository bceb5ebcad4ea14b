"""The figures of `qgf analyze` (Figs. 3, 4, 6, 17), drawn from the JSON reports.

Colours come from the estimator table (`qgf.guidance.estimators`); matplotlib through `qgf.plots`.
Imports numpy, `qgf.plots`, the estimator table and `qgf.analysis.methods`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qgf.analysis.methods import DATASET_LABEL
from qgf.guidance.estimators import estimator_figure_color
from qgf.plots import pyplot, save_figure

DATASET_COLOR = "#555555"


def _color(label: str) -> str:
    """An estimator's colour from its table record; the dataset row grey; anything else (BFN) black."""
    return DATASET_COLOR if label == DATASET_LABEL else estimator_figure_color(label)


def _save(figure, path: Path) -> None:
    save_figure(figure, path, dpi=110, bbox_inches="tight")


def plot_noise_sensitivity(report: Mapping[str, Any], path: Path, title: str) -> None:
    plt = pyplot()
    scales = report["noise_scales"]
    figure, axes = plt.subplots(1, len(scales), figsize=(4.2 * len(scales), 3.6), sharey=True, squeeze=False)
    for column, scale in enumerate(scales):
        ax = axes[0, column]
        for name, entry in report["estimators"].items():
            mean = np.asarray(entry["mean"][column])
            ax.plot(
                report["flow_times"],
                mean,
                marker="o",
                ms=3,
                color=_color(name),
                label=name,
                lw=2.4 if name == "qgf" else 1.4,
            )
        ax.set_title(f"ε ~ N(0, {scale:g}² I)")
        ax.set_xlabel("flow time t of a_t (BC path)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("cos(G(s, a_t), G(s, a_t + ε))")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.suptitle(f"Noise sensitivity of gradient estimators (QGF Fig. 3) — {title}", fontsize=10)
    _save(figure, path)


def _dot_plot(ax, labels, means, errors, reference=None, reference_label=None):
    positions = np.arange(len(labels))
    for x, label, mean, error in zip(positions, labels, means, errors, strict=True):
        ax.errorbar(x, mean, yerr=error, fmt="o", ms=7, capsize=4, color=_color(label))
    if reference is not None:
        ax.axhline(reference, ls="--", color="black", lw=1, label=reference_label)
        ax.legend(fontsize=8)
    ax.set_xticks(positions, labels, rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)


def plot_q_values(report: Mapping[str, Any], path: Path, title: str) -> None:
    plt = pyplot()
    methods = report["methods"]
    labels = list(methods)
    reference, baseline = report["reference"], report["baseline"]
    figure, axes = plt.subplots(1, 2, figsize=(2 * (0.8 * len(labels) + 2.5), 3.8))
    _dot_plot(
        axes[0],
        labels,
        [methods[m]["mean"] for m in labels],
        [methods[m]["stderr"] for m in labels],
        methods[reference]["mean"],
        f"{reference} (reference)",
    )
    axes[0].set_ylabel("mean Q(s, a) of the final action (± s.e.)")
    axes[0].set_title("Q of the denoised action")
    others = [m for m in labels if m != baseline]
    _dot_plot(
        axes[1],
        others,
        [methods[m]["minus_baseline"]["mean"] for m in others],
        [methods[m]["minus_baseline"]["stderr"] for m in others],
        0.0,
        f"{baseline}",
    )
    axes[1].set_ylabel(f"Q − Q({baseline}), paired (± s.e.)")
    axes[1].set_title(f"gain over {baseline} on the same observations and noise")
    figure.suptitle(f"Q of denoised actions (QGF Fig. 4) — {title}", fontsize=10)
    _save(figure, path)


def plot_distances(report: Mapping[str, Any], path: Path, title: str) -> None:
    plt = pyplot()
    methods = report["methods"]
    figure, axes = plt.subplots(1, 2, figsize=(2 * (0.8 * len(methods) + 2.5), 3.8))
    labels = [m for m in methods if m != report["reference"]]
    _dot_plot(
        axes[0],
        labels,
        [methods[m]["to_reference"]["mean"] for m in labels],
        [methods[m]["to_reference"]["stderr"] for m in labels],
    )
    axes[0].set_ylabel(f"‖a − a_{report['reference']}‖ (± s.e.)")
    axes[0].set_title(f"distance to the {report['reference']} action")
    nn_labels = [m for m in methods if "nearest_dataset" in methods[m]]
    _dot_plot(
        axes[1],
        nn_labels,
        [methods[m]["nearest_dataset"]["mean"] for m in nn_labels],
        [methods[m]["nearest_dataset"]["stderr"] for m in nn_labels],
    )
    axes[1].set_ylabel("nearest-neighbour distance (± s.e.)")
    axes[1].set_title(f"to {report['dataset_chunks']} dataset action chunks")
    figure.suptitle(f"Are the actions in distribution? (QGF Fig. 17) — {title}", fontsize=10)
    _save(figure, path)


def plot_compute(report: Mapping[str, Any], path: Path, title: str) -> None:
    plt = pyplot()
    methods = report["methods"]
    labels = list(methods)
    positions = np.arange(len(labels))
    batch = report["batch"]
    figure, axes = plt.subplots(1, 2, figsize=(2 * (0.8 * len(labels) + 2.5), 3.8))
    analytic = [
        np.nan if methods[m]["analytic_flops"] is None else methods[m]["analytic_flops"] for m in labels
    ]
    traced = [methods[m]["traced_dense_flops"] for m in labels]
    axes[0].bar(
        positions, analytic, color=[_color(m) for m in labels], alpha=0.85, label="analytic (formula)"
    )
    axes[0].plot(positions, traced, "k_", ms=18, mew=2, label="dense count of traced sampler")
    if any(value > 0 for value in analytic):  # nan compares False
        axes[0].set_yscale("log")
    axes[0].set_ylabel("dense-layer FLOPs per action")
    axes[0].legend(fontsize=8)
    width = 0.4
    axes[1].bar(
        positions - width / 2,
        [methods[m]["ms_per_action_batch_1"] for m in labels],
        width,
        color=[_color(m) for m in labels],
        label="batch 1",
    )
    axes[1].bar(
        positions + width / 2,
        [methods[m][f"ms_per_action_batch_{batch}"] for m in labels],
        width,
        color=[_color(m) for m in labels],
        alpha=0.45,
        hatch="//",
        label=f"batch {batch} (per action)",
    )
    axes[1].set_yscale("log")
    axes[1].set_ylabel("ms per action (median)")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(positions, labels, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3, which="both")
    figure.suptitle(f"Test-time compute (QGF Fig. 6) — {title}", fontsize=10)
    _save(figure, path)
