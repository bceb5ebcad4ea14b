"""Learning curves: evaluation during training, stored inside the run.

    RUN/curve.json   {"version": 1,
                      "settings": {"eval_every", "episodes", "seed", "conditions": [labels],
                                   "max_episode_steps" (optional: null = the env's own limit)},
                      "points": [{"step", "env_steps" (online runs; null offline),
                                  "train_seconds" (training wall-clock so far),
                                  "results": [{"label", "estimator", "weight", "best_of_n",
                                               "success_rate", "ci_low", "ci_high", "episodes",
                                               "return_mean"}]}]}
    RUN/curve.csv    the same points, one row per (step, condition)

`append_point` and `read_curve` are the format (shared with any phase that writes curves, e.g. an
online one); `CurveEvaluator` is the `qgf.training.loop.CurveHook` that `qgf train --eval-every`
and the sweep's train jobs hand to `qgf.training.train` / `train_seeds`: at every multiple of
`eval_every` and at the last step the loop saves a pinned checkpoint (never pruned by
keep_checkpoints, so other samplers can be evaluated there later: `qgf evaluate RUN --step S`) and
the evaluator appends one point per run. On resume, `catch_up` first evaluates the points at or
before the resumed step that are missing but have a checkpoint (a run killed during an evaluation,
or trained without a curve until now), so a killed and re-run training ends with exactly the
points of an uninterrupted one. The curve's settings are fixed once its first point is written:
resuming with other settings is a one-line error (move curve.json aside to start a new curve).

Evaluation seeds: the curve's own (default `DEFAULT_CURVE_SEED` = 3000), never one a study chooses
on (`CHOOSING_SEEDS`: the protocol's tune_seed 1000 and final_seed 2000, the sweep evaluation's
default 1000), so a choice made on a curve's evidence is not scored on the same episodes.

Imports: the standard library, `qgf.errors`, `qgf.fileio`, `qgf.evaluation.conditions`; `qgf.checkpoint`
and `qgf.evaluation.run` inside the evaluator (JAX).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qgf.errors import QGFError
from qgf.evaluation.conditions import Condition
from qgf.fileio import atomic_write_json, atomic_write_text

CURVE_FILE = "curve.json"
CURVE_CSV = "curve.csv"
CURVE_VERSION = 1
DEFAULT_CURVE_SEED = 3000
# Evaluation seeds on which studies choose (qgf.experiments.spec defaults): a curve never uses them.
CHOOSING_SEEDS = {
    1000: "the protocol's tune_seed and the sweep evaluation's default seed",
    2000: "the protocol's final_seed",
}
# Episodes per condition and point by default: 10 points of 5 episodes cost 2.5% of a cpu-preset run
# and 96% of a cpu-small one (bench/curves.py, docs/performance.md).
DEFAULT_CURVE_EPISODES = 5
SETTING_KEYS = ("eval_every", "episodes", "seed", "conditions")
RESULT_KEYS = ("label", "estimator", "weight", "best_of_n", "success_rate", "ci_low", "ci_high")
RESULT_KEYS += ("episodes", "return_mean")
CSV_COLUMNS = ("step", "env_steps", "train_seconds", *RESULT_KEYS)


def condition_label(condition: Condition) -> str:
    """A condition's name on a curve: the sampler's label, with the weight where it uses one."""
    label = condition.spec.label
    return f"{label}@{condition.weight:g}" if condition.spec.uses_weight else label


def check_curve_seed(seed: Any, taken: dict[int, str] | None = None) -> int:
    """`seed` if it is an integer >= 0 that no choosing evaluation uses (`CHOOSING_SEEDS` and
    `taken`: {seed: what uses it}), else a one-line QGFError."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise QGFError(f"the curve's evaluation seed must be an integer >= 0, got {seed!r}")
    used = {**CHOOSING_SEEDS, **(taken or {})}
    if seed in used:
        raise QGFError(
            f"curve evaluation seed {seed} is {used[seed]}: a curve must use seeds disjoint from those "
            f"a choice is made on; pick another (default {DEFAULT_CURVE_SEED})"
        )
    return seed


def curve_settings(eval_every: int, episodes: int, seed: int, labels: Sequence[str], max_episode_steps=None):
    """The settings record of a curve (checked: every >= 1, episodes >= 1, a disjoint seed)."""
    for name, value in (("eval_every", eval_every), ("episodes", episodes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise QGFError(f"the curve's {name} must be an integer >= 1, got {value!r}")
    check_curve_seed(seed)
    return {
        "eval_every": eval_every,
        "episodes": episodes,
        "seed": seed,
        "conditions": list(labels),
        "max_episode_steps": max_episode_steps,
    }


# ------------------------------------------------------------------ the file format


def read_curve(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's curve ({"version", "settings", "points"} sorted by step), or None without one; a
    malformed file is a one-line QGFError."""
    path = Path(run_dir) / CURVE_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise QGFError(f"{path} is not readable JSON ({exc}); delete it to start the curve afresh") from None
    if not isinstance(document, dict) or document.get("version") != CURVE_VERSION:
        raise QGFError(f"{path}: not a version-{CURVE_VERSION} curve file")
    settings, points = document.get("settings"), document.get("points")
    if not isinstance(settings, dict) or any(key not in settings for key in SETTING_KEYS):
        raise QGFError(f"{path}: settings must hold {', '.join(SETTING_KEYS)}")
    if not isinstance(points, list):
        raise QGFError(f"{path}: points must be a list")
    for point in points:
        _check_point(point, str(path))
    document["points"] = sorted(points, key=lambda point: point["step"])
    return document


def _check_point(point: Any, source: str) -> None:
    if not isinstance(point, dict) or not isinstance(point.get("step"), int) or point["step"] < 0:
        raise QGFError(f"{source}: every point needs an integer step >= 0, got {point!r:.80}")
    if not isinstance(point.get("results"), list) or not all(
        isinstance(result, dict) and all(key in result for key in RESULT_KEYS) for result in point["results"]
    ):
        raise QGFError(f"{source}: point at step {point['step']} needs results with {', '.join(RESULT_KEYS)}")
    for key in ("env_steps", "train_seconds"):
        value = point.get(key)
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value)):
            raise QGFError(f"{source}: point at step {point['step']} has a bad {key}: {value!r}")


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with each sampler spec in full: a field SamplerSpec gained after the curve was
    written (qgf.guidance.estimators.LATER_SPEC_DEFAULTS, e.g. gate) reads as its default, so a run
    started before it resumes its curve."""
    from qgf.guidance import SamplerSpec

    specs = settings.get("specs")
    if not isinstance(specs, list) or not all(isinstance(item, dict) and "spec" in item for item in specs):
        return settings
    full = [{**item, "spec": dataclasses.asdict(SamplerSpec(**item["spec"]))} for item in specs]
    return {**settings, "specs": full}


def start_curve(run_dir: str | os.PathLike, settings: dict[str, Any]) -> dict[str, Any]:
    """Create the run's curve with `settings`, or check that its existing one has them (another
    setting is a one-line error: a curve's points are comparable only under one setting)."""
    existing = read_curve(run_dir)
    if existing is None:
        document = {"version": CURVE_VERSION, "settings": settings, "points": []}
        _write(Path(run_dir), document)
        return document
    stored, wanted = _comparable(existing["settings"]), _comparable(settings)
    differs = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if differs:
        said = "; ".join(f"{k} {stored.get(k)!r} -> {wanted.get(k)!r}" for k in differs)
        raise QGFError(
            f"{Path(run_dir) / CURVE_FILE} was written with other settings ({said}); resume with the "
            f"curve's own settings, or move {CURVE_FILE} aside to start a new curve"
        )
    return existing


def append_point(
    run_dir: str | os.PathLike, point: dict[str, Any], settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Add one point to the run's curve and rewrite curve.json and curve.csv atomically. The curve
    must exist (`start_curve`) unless `settings` are given (then checked, or the curve started). A
    point at a step the curve already has replaces it (an evaluation repeated after a kill lands
    once)."""
    run_dir = Path(run_dir)
    if settings is not None:
        start_curve(run_dir, settings)
    document = read_curve(run_dir)
    if document is None:
        raise QGFError(f"{run_dir} has no {CURVE_FILE}; start the curve (start_curve) before adding points")
    _check_point(point, f"point for {run_dir / CURVE_FILE}")
    points = [old for old in document["points"] if old["step"] != point["step"]] + [point]
    document["points"] = sorted(points, key=lambda p: p["step"])
    _write(run_dir, document)
    return document


def _write(run_dir: Path, document: dict[str, Any]) -> None:
    atomic_write_json(run_dir / CURVE_FILE, document, indent=1)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for point in document["points"]:
        for result in point["results"]:
            head = [point["step"], point.get("env_steps"), point.get("train_seconds")]
            writer.writerow(["" if v is None else v for v in head + [result[k] for k in RESULT_KEYS]])
    atomic_write_text(run_dir / CURVE_CSV, buffer.getvalue())


def curve_steps(every: int, upto: int, total: int) -> list[int]:
    """The steps at which a curve has points, up to `upto`: multiples of `every` and `total`."""
    steps = list(range(every, min(upto, total) + 1, every))
    if upto >= total and (not steps or steps[-1] != total):
        steps.append(total)
    return steps


def point_from_results(step: int, results: Any, train_seconds: float | None, env_steps=None) -> dict:
    """A curve point from an `EvaluationResults` (one entry per condition)."""
    return {
        "step": int(step),
        "env_steps": env_steps,
        "train_seconds": None if train_seconds is None else round(float(train_seconds), 3),
        "results": [
            {
                "label": condition.label,
                "estimator": condition.sampler,
                "weight": float(condition.weight),
                "best_of_n": int(condition.bfn),
                "success_rate": float(condition.success_rate),
                "ci_low": float(condition.ci_low),
                "ci_high": float(condition.ci_high),
                "episodes": int(condition.episodes),
                "return_mean": float(condition.return_mean),
            }
            for condition in results.results
        ],
    }


# ------------------------------------------------------------------ evaluation during training


@dataclasses.dataclass
class CurveEvaluator:
    """Evaluates runs during training (`qgf.training.loop.CurveHook`).

    conditions: what each point evaluates (None: `samplers` x `weights`, default the run's own
    method, `qgf.evaluation.conditions.default_samplers`). workers / num_envs: the env layout
    (default 0 = the envs in the training process; training waits meanwhile, so the cores are
    free for env workers when workers > 0)."""

    every: int
    episodes: int = DEFAULT_CURVE_EPISODES
    seed: int = DEFAULT_CURVE_SEED
    conditions: Sequence[Condition] | None = None
    samplers: Sequence[Any] | None = None
    weights: Sequence[float] = (0.0,)
    max_episode_steps: int | None = None
    workers: int | None = 0
    num_envs: int | None = None
    final: int | None = None
    # wall-clock of each point evaluated by this evaluator, in order (bench/curves.py)
    timings: list[float] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        curve_settings(self.every, self.episodes, self.seed, [], self.max_episode_steps)

    def until(self, final: int) -> CurveEvaluator:
        """The same curve for a training that stops early at `final` (whose last point is the
        run's own last step, not `final`)."""
        return dataclasses.replace(self, final=final, timings=self.timings)

    def condition_list(self, run: Any) -> list[Condition]:
        from qgf.evaluation.conditions import default_samplers, sweep_conditions

        if self.conditions is not None:
            return list(self.conditions)
        samplers = self.samplers or default_samplers(run)
        return sweep_conditions(samplers, self.weights, [1], run.config.flow_steps)

    def settings(self, run: Any) -> dict[str, Any]:
        conditions = self.condition_list(run)
        labels = [condition_label(c) for c in conditions]
        settings = curve_settings(self.every, self.episodes, self.seed, labels, self.max_episode_steps)
        # the conditions in full, so that a plain resume continues the curve (`stored_evaluator`)
        settings["specs"] = [
            {"spec": dataclasses.asdict(c.spec), "weight": float(c.weight)} for c in conditions
        ]
        return settings

    @classmethod
    def stored(cls, run_dir: str | os.PathLike, **layout: Any) -> CurveEvaluator | None:
        """The evaluator that continues the run's curve with its own settings (None: no curve, or
        one written elsewhere, without the conditions in full)."""
        from qgf.guidance import SamplerSpec

        document = read_curve(run_dir)
        if document is None or not isinstance(document["settings"].get("specs"), list):
            return None
        settings = document["settings"]
        conditions = [
            Condition(SamplerSpec(**item["spec"]), float(item["weight"])) for item in settings["specs"]
        ]
        return cls(
            every=settings["eval_every"],
            episodes=settings["episodes"],
            seed=settings["seed"],
            conditions=conditions,
            max_episode_steps=settings.get("max_episode_steps"),
            **layout,
        )

    def catch_up(self, directories: Sequence[Path], step: int, total: int) -> None:
        from qgf import checkpoint as ckpt

        for directory in directories:
            if not ckpt.is_run_dir(directory) or ckpt.latest_step(directory) is None:
                continue
            run = ckpt.load_run(directory)
            start_curve(directory, self.settings(run))
            have = {point["step"] for point in read_curve(directory)["points"]}
            stored = dict(ckpt.list_checkpoints(directory))
            for point_step in curve_steps(self.every, step, total):
                if point_step not in have and point_step in stored:
                    ckpt.pin_checkpoint(directory, point_step)
                    self._evaluate(
                        ckpt.load_run(directory, step=point_step),
                        ckpt.train_seconds_at(directory, point_step),
                    )

    def __call__(self, directories, step, states, seconds) -> None:
        from qgf import checkpoint as ckpt

        for directory, agent, spent in zip(directories, states, seconds, strict=True):
            config, meta = ckpt.read_config(directory), ckpt.read_meta(directory)
            self._evaluate(
                ckpt.Run(path=Path(directory), agent=agent, config=config, meta=meta, step=step), spent
            )

    def _evaluate(self, run: Any, train_seconds: float | None) -> None:
        import time

        from qgf.evaluation.run import evaluate_run

        started = time.perf_counter()
        start_curve(run.path, self.settings(run))
        results = evaluate_run(
            run,
            conditions=self.condition_list(run),
            episodes=self.episodes,
            seed=self.seed,
            workers=self.workers,
            num_envs=self.num_envs,
            max_episode_steps=self.max_episode_steps,
            keep_envs=True,
        )
        append_point(run.path, point_from_results(run.step, results, train_seconds))
        self.timings.append(time.perf_counter() - started)
