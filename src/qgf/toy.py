"""The 1-D illustrative example of the QGF paper (Figs. 2 and 14), with no training at all.

The "dataset" is a tri-modal mixture of narrow Gaussians, the BC flow is that mixture's exact
velocity field under the linear interpolant x_t = (1 - t) x_0 + t x_1 (x_0 ~ N(0, 1)), and the
critic is Q(a) = -(a - a*)^2. Guidance runs through the library's own sampler, `qgf.guidance`, with
a dummy observation, so the toy exercises exactly the code that steers real policies.

Closed-form velocity. Given component k (x_1 ~ N(mu_k, s_k^2)), x_t is Gaussian with mean t mu_k and
variance c_k = (1 - t)^2 + t^2 s_k^2, and jointly Gaussian with x_1 and x_0:
Cov(x_1, x_t) = t s_k^2, Cov(x_0, x_t) = 1 - t. Gaussian conditioning gives

    E[x_1 - x_0 | x_t, k] = mu_k + (t s_k^2 - (1 - t)) / c_k * (x_t - t mu_k),

and the posterior over components is p(k | x_t) ∝ pi_k N(x_t; t mu_k, c_k). The exact BC velocity
is v(x_t, t) = E[x_1 - x_0 | x_t] = sum_k p(k | x_t) E[x_1 - x_0 | x_t, k].

Choices (docs/guidance.md): modes at -0.8, 0, 0.8 (std 0.05, weights 0.3 / 0.4 / 0.3) sit well
inside the action box, so the final clip to [-1, 1] never distorts the BC samples; a* = 0.4 lies in
the empty gap between the two upper modes, so no mode is optimal and a sampler that treats noisy
actions as clean ones (ood) visibly lands beside a* instead of on it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from qgf.fileio import atomic_write_bytes
from qgf.guidance import SamplerSpec, sample_with_info
from qgf.plots import pyplot, save_figure

TOY_ESTIMATORS = ("none", "ood", "bptt", "qgf", "qgf-jacobian", "qgf-chain")
DEFAULT_WEIGHTS = (2.0, 4.0, 8.0, 16.0, 32.0)
# Q = -(a - a*)^2 has curvature 2, so one Euler step moves a by about 2 w / T toward a*; past
# 2 w / T = 2 every estimator oscillates for purely numerical reasons. 50 steps keep the weights above
# well inside the stable range, so differences between estimators are not discretisation artefacts.
TOY_STEPS = 50


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A 1-D Gaussian mixture: component means, standard deviations and probabilities."""

    means: tuple[float, ...] = (-0.8, 0.0, 0.8)
    stds: tuple[float, ...] = (0.05, 0.05, 0.05)
    probs: tuple[float, ...] = (0.3, 0.4, 0.3)

    @property
    def mean(self) -> float:
        return float(np.dot(self.probs, self.means))

    @property
    def std(self) -> float:
        second = np.dot(self.probs, np.square(self.stds) + np.square(self.means))
        return float(math.sqrt(second - self.mean**2))


TOY_MIXTURE = Mixture()
TARGET_ACTION = 0.4  # a*: in the gap between the modes at 0 and 0.8


def mixture_velocity(mixture: Mixture = TOY_MIXTURE):
    """The exact flow-matching velocity E[x_1 - x_0 | x_t] of `mixture`, as a guidance velocity_fn."""
    means = jnp.asarray(mixture.means)
    variances = jnp.square(jnp.asarray(mixture.stds))
    log_probs = jnp.log(jnp.asarray(mixture.probs))

    def velocity_fn(obs, a_t, t):
        x, time = a_t[:, :1], t[:, None]  # (B, 1) against (K,) components
        variance_t = (1.0 - time) ** 2 + time**2 * variances
        offset = x - time * means
        log_posterior = log_probs - 0.5 * offset**2 / variance_t - 0.5 * jnp.log(variance_t)
        per_component = means + (time * variances - (1.0 - time)) / variance_t * offset
        return jnp.sum(jax.nn.softmax(log_posterior, axis=1) * per_component, axis=1, keepdims=True)

    return velocity_fn


def toy_critic(target: float = TARGET_ACTION):
    """Q(s, a) = -(a - a*)^2 for 1-D actions, ignoring the (dummy) observation."""

    def q_fn(obs, a):
        return -((a[:, 0] - target) ** 2)

    return q_fn


def toy_spec(estimator: str) -> SamplerSpec:
    # clip_hat=False: the toy critic is exact everywhere (nothing is out of distribution for it) and
    # the paper's figure follows Eq. 7; it also lets bptt's raw instability show.
    return SamplerSpec(estimator, steps=TOY_STEPS, clip_hat=False)


def run_toy(
    samples: int = 2000,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    seed: int = 0,
    mixture: Mixture = TOY_MIXTURE,
    target: float = TARGET_ACTION,
    estimators: Sequence[str] = TOY_ESTIMATORS,
) -> dict:
    """Sample every estimator at every weight from the same noises; return metrics and trajectories.

    Each estimator's whole weight sweep runs as one batch with a per-row weight.
    """
    weights = [float(w) for w in weights]
    velocity_fn, q_fn = mixture_velocity(mixture), toy_critic(target)
    noise = jax.random.normal(jax.random.key(seed), (samples, 1))
    results, trajectories = [], {}
    for estimator in estimators:
        sweep = [0.0] if estimator == "none" else weights
        spec = toy_spec(estimator)
        row_weights = jnp.repeat(jnp.asarray(sweep), samples)
        run = jax.jit(
            lambda w, n, spec=spec: sample_with_info(
                velocity_fn,
                q_fn,
                jnp.zeros((n.shape[0], 1)),
                jax.random.key(seed),
                w,
                spec,
                1,
                noise=n,
                trajectory=True,
            )  # fmt: skip
        )
        actions, info = run(row_weights, jnp.tile(noise, (len(sweep), 1)))
        actions = np.asarray(actions[:, 0]).reshape(len(sweep), samples)
        unclipped = np.asarray(info["unclipped"][:, 0]).reshape(len(sweep), samples)
        paths = np.asarray(info["trajectory"][:, :, 0]).reshape(TOY_STEPS + 1, len(sweep), samples)
        for i, weight in enumerate(sweep):
            results.append(
                _summarise(estimator, weight, actions[i], unclipped[i], paths[:, i], mixture, target)
            )
            trajectories[(estimator, weight)] = paths[:, i]
    config = {
        "mixture": dataclasses.asdict(mixture),
        "target_action": target,
        "q": "-(a - a*)^2",
        "steps": TOY_STEPS,
        "clip_hat": False,
        "samples": samples,
        "weights": weights,
        "seed": seed,
    }
    return {"config": config, "results": results, "trajectories": trajectories}


def _summarise(estimator, weight, actions, unclipped, path, mixture, target) -> dict:
    nearest = np.argmin(np.abs(actions[:, None] - np.asarray(mixture.means)[None]), axis=1)
    return {
        "estimator": estimator,
        "weight": weight,
        "mean_abs_error": float(np.mean(np.abs(actions - target))),
        "mean": float(np.mean(actions)),
        "std": float(np.std(actions)),
        "mode_fractions": [float(np.mean(nearest == k)) for k in range(len(mixture.means))],
        "fraction_outside_box": float(np.mean(np.abs(unclipped) > 1.0)),  # before the final clip
        "max_abs_trajectory": float(np.max(np.abs(path))),
    }


# --------------------------------------------------------------------------------------------------
# Reporting


def format_table(toy: dict) -> str:
    means = toy["config"]["mixture"]["means"]
    modes = " ".join(f"{m:>+6.1f}" for m in means)
    columns = f"{'estimator':<13} {'weight':>6} {'|a1-a*|':>8} {'mean':>7} {'std':>6}"
    header = f"{columns}  near {modes}  {'max|a_t|':>9}"
    lines = [header, "-" * len(header)]
    for r in toy["results"]:
        fractions = " ".join(f"{f:>6.2f}" for f in r["mode_fractions"])
        lines.append(
            f"{r['estimator']:<13} {r['weight']:>6g} {r['mean_abs_error']:>8.3f} {r['mean']:>+7.3f} "
            f"{r['std']:>6.3f}       {fractions}  {r['max_abs_trajectory']:>9.3g}"
        )
    return "\n".join(lines)


def write_toy(toy: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write toy.json and the PNG figures into out_dir (created if needed); returns the paths."""
    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"config": toy["config"], "results": toy["results"]}
    json_path = out / "toy.json"
    atomic_write_bytes(json_path, (json.dumps(payload, indent=2) + "\n").encode())
    written = [json_path]
    for name, draw in (
        ("toy_trajectories.png", _plot_trajectories),
        ("toy_histograms.png", _plot_histograms),
        ("toy_error_vs_weight.png", _plot_error_vs_weight),
        ("toy_bptt_instability.png", _plot_bptt_instability),
    ):
        save_figure(draw(toy, plt), out / name, dpi=110, bbox_inches="tight")
        written.append(out / name)
    return written


def _guided_estimators(toy: dict) -> list[str]:
    return list(dict.fromkeys(r["estimator"] for r in toy["results"] if r["estimator"] != "none"))


def _shown_weights(toy: dict) -> list[float]:
    weights = toy["config"]["weights"]
    if len(weights) <= 3:
        return weights
    return [weights[0], weights[len(weights) // 2], weights[-1]]


def _decorate(axis, toy: dict) -> None:
    for mode in toy["config"]["mixture"]["means"]:
        axis.axhline(mode, color="0.75", lw=0.8, ls=":")
    axis.axhline(toy["config"]["target_action"], color="tab:red", lw=1.0, ls="--")


def _plot_trajectories(toy: dict, plt):
    estimators, weights = _guided_estimators(toy), _shown_weights(toy)
    steps = toy["config"]["steps"]
    times = np.linspace(0.0, 1.0, steps + 1)
    figure, axes = plt.subplots(
        len(estimators) + 1, len(weights), figsize=(3.2 * len(weights), 2.0 * (len(estimators) + 1)),
        sharex=True, sharey=True, squeeze=False,
    )  # fmt: skip
    shown = slice(0, 60)
    rows = [("none", 0.0)] + [(e, None) for e in estimators]
    for i, (estimator, _) in enumerate(rows):
        for j, weight in enumerate(weights):
            axis = axes[i, j]
            if estimator == "none" and j > 0:
                axis.axis("off")
                continue
            key = (estimator, 0.0 if estimator == "none" else weight)
            path = toy["trajectories"][key][:, shown]
            axis.plot(times, np.clip(path, -2, 2), color="tab:blue", lw=0.5, alpha=0.5)
            _decorate(axis, toy)
            axis.set_ylim(-1.6, 1.6)
            title = "BC (no guidance)" if estimator == "none" else f"{estimator}, w={weight:g}"
            axis.set_title(title, fontsize=9)
            if j == 0:
                axis.set_ylabel("a_t")
    for axis in axes[-1]:
        axis.set_xlabel("flow time t")
    figure.suptitle(
        f"Denoising trajectories (60 samples; red dashed: a* = {toy['config']['target_action']}, "
        "dotted: BC modes; paths clipped to ±2 for display)",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def _plot_histograms(toy: dict, plt):
    estimators, weights = _guided_estimators(toy), _shown_weights(toy)
    by_key = {(r["estimator"], r["weight"]): r for r in toy["results"]}
    figure, axes = plt.subplots(
        len(estimators), len(weights), figsize=(3.2 * len(weights), 1.8 * len(estimators)),
        sharex=True, squeeze=False,
    )  # fmt: skip
    bins = np.linspace(-1.0, 1.0, 81)
    bc_final = np.clip(toy["trajectories"][("none", 0.0)][-1], -1, 1)
    for i, estimator in enumerate(estimators):
        for j, weight in enumerate(weights):
            axis = axes[i, j]
            final = np.clip(toy["trajectories"][(estimator, weight)][-1], -1, 1)
            # stairs of precomputed counts draw far faster than hist's one patch per bar
            axis.stairs(np.histogram(bc_final, bins)[0], bins, fill=True, color="0.8", label="BC")
            counts = np.histogram(final, bins)[0]
            axis.stairs(counts, bins, fill=True, color="tab:blue", alpha=0.8, label="guided")
            axis.axvline(toy["config"]["target_action"], color="tab:red", lw=1.0, ls="--")
            error = by_key[(estimator, weight)]["mean_abs_error"]
            axis.set_title(f"{estimator}, w={weight:g}: |a1-a*| = {error:.3f}", fontsize=9)
            axis.set_yticks([])
    axes[0, 0].legend(fontsize=8, loc="upper left")
    for axis in axes[-1]:
        axis.set_xlabel("final action a_1 (clipped)")
    figure.suptitle("Final samples: BC (grey) vs guided (blue); red dashed: a*", fontsize=10)
    figure.tight_layout()
    return figure


def _plot_error_vs_weight(toy: dict, plt):
    figure, axis = plt.subplots(figsize=(6.0, 3.8))
    bc = next(r for r in toy["results"] if r["estimator"] == "none")
    for estimator in _guided_estimators(toy):
        rows = [r for r in toy["results"] if r["estimator"] == estimator]
        axis.plot(
            [r["weight"] for r in rows], [r["mean_abs_error"] for r in rows], marker="o", label=estimator
        )
    axis.axhline(bc["mean_abs_error"], color="0.5", ls=":", label="BC (w = 0)")
    axis.set_xscale("log", base=2)
    weights = toy["config"]["weights"]
    axis.set_xticks(weights, labels=[f"{w:g}" for w in weights])
    axis.minorticks_off()
    axis.set_yscale("log")
    axis.set_xlabel("guidance weight w")
    axis.set_ylabel("mean |a_1 - a*|")
    axis.set_title("Distance of the final samples to a* (lower is better)", fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _plot_bptt_instability(toy: dict, plt):
    bptt = [r for r in toy["results"] if r["estimator"] == "bptt"]
    worst = max(bptt, key=lambda r: r["max_abs_trajectory"])["weight"]
    steps = toy["config"]["steps"]
    times = np.linspace(0.0, 1.0, steps + 1)
    figure, axes = plt.subplots(1, 2, figsize=(9.0, 3.6), sharey=True)
    for axis, estimator in zip(axes, ("bptt", "qgf"), strict=True):
        paths = toy["trajectories"].get((estimator, worst))
        if paths is None:
            axis.axis("off")
            continue
        excursion = np.max(np.abs(paths), axis=0)
        wildest = np.argsort(excursion)[-15:]
        rows = np.unique(np.concatenate([np.arange(45), wildest]))
        axis.plot(times, paths[:, rows], color="tab:blue", lw=0.6, alpha=0.6)
        _decorate(axis, toy)
        axis.set_yscale("symlog", linthresh=1.0)
        axis.set_title(f"{estimator}, w={worst:g}: max |a_t| = {excursion.max():.3g}", fontsize=10)
        axis.set_xlabel("flow time t")
    axes[0].set_ylabel("a_t (symlog)")
    figure.suptitle(
        "BPTT guidance is unstable: the gradient through the ODE explodes near the boundaries between "
        "modes", fontsize=10,
    )  # fmt: skip
    figure.tight_layout()
    return figure
