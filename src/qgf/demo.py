"""`qgf demo`: the whole method end to end on one real OGBench task, sized for a 2-core CPU.

generate (or reuse cached) play data -> train the BC flow and the IQL critic (CPU preset) ->
evaluate BC (`none`), QGF and QFQL (`ood`) over a few guidance weights -> table, plot, results.json.
Every stage resumes: re-running the command after an interruption picks up where it stopped.
The settings below were chosen by measurement; docs/demo.md records the measurements.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from qgf.errors import QGFError

DEMO_CACHE_ENV_VAR = "QGF_DEMO_CACHE"


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """What the demo runs. Defaults are the measured 2-core CPU setting (docs/demo.md)."""

    env: str = "cube-single-play-singletask-task1-v0"
    data_episodes: int = 100  # train play episodes (+ 1/10 for validation)
    episode_length: int = 1001  # steps per play episode (OGBench's)
    preset: str = "cpu"
    train_steps: int = 10_000
    samplers: tuple[str, ...] = ("none", "qgf", "ood")
    weights: tuple[float, ...] = (0.03, 0.1, 0.3)
    eval_episodes: int = 40
    seed: int = 0  # data and training
    # The weights above were chosen on evaluation episodes of seed 0 (docs/demo.md); the demo reports
    # on other episodes, so its table is not a selection made on the episodes it shows.
    eval_seed: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


QUICK = DemoSettings(data_episodes=4, episode_length=200, train_steps=300, weights=(0.1,), eval_episodes=2)


def default_cache_dir() -> Path:
    """Where demo data is cached between runs: $QGF_DEMO_CACHE, else ~/.cache/qgf/demo-data.

    A dedicated folder rather than ~/.ogbench/data, so the demo's small play dataset never shadows
    (or is shadowed by) a full OGBench dataset of the same name."""
    return Path(os.environ.get(DEMO_CACHE_ENV_VAR, Path.home() / ".cache" / "qgf" / "demo-data"))


def run_demo(
    out_dir: str | os.PathLike = "qgf-demo",
    *,
    settings: DemoSettings = DemoSettings(),
    data_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    log=print,
):
    """Run the demo into `out_dir` (run/ holds the trained run, results.* the evaluation).

    Returns the `qgf.evaluation.results.EvaluationResults`."""
    from qgf.config import load_preset
    from qgf.data import generate
    from qgf.envs import parse_name
    from qgf.evaluation.results import markdown_table, write_all
    from qgf.evaluation.run import evaluate_run
    from qgf.training import train

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        # One cache entry per data recipe, so a --quick run never stands in for the full data.
        tag = f"{settings.data_episodes}x{settings.episode_length}-seed{settings.seed}"
        data_dir = default_cache_dir() / tag
    data_dir = Path(data_dir)
    timings: dict[str, float] = {}
    _write_json(out / "demo.json", {"settings": settings.to_dict(), "data_dir": str(data_dir)})

    name = parse_name(settings.env)
    log(f"[1/3] data: {name.train_filename} in {data_dir} ({settings.data_episodes} play episodes)")
    start = time.perf_counter()
    _ensure_data(generate, name.dataset_name, data_dir, settings, workers, progress, log)
    timings["data_s"] = time.perf_counter() - start

    log(f"[2/3] train: preset '{settings.preset}', {settings.train_steps} steps -> {out / 'run'}")
    start = time.perf_counter()
    config = load_preset(settings.preset, {"steps": settings.train_steps, "seed": settings.seed})
    train(config, out / "run", env=settings.env, data_dir=data_dir, progress=progress)
    timings["train_s"] = time.perf_counter() - start

    log(
        f"[3/3] evaluate: {', '.join(settings.samplers)} x weights "
        f"{', '.join(map(str, settings.weights))}, {settings.eval_episodes} episodes each"
    )
    start = time.perf_counter()
    results = evaluate_run(
        out / "run",
        samplers=settings.samplers,
        weights=settings.weights,
        episodes=settings.eval_episodes,
        seed=settings.eval_seed,
        workers=workers,
        progress=progress,
    )
    timings["evaluate_s"] = time.perf_counter() - start
    results.extra["demo_timings_s"] = timings
    paths = write_all(results, out)
    log("")
    log(markdown_table(results))
    log("")
    total = sum(timings.values())
    log(
        f"demo finished in {total / 60:.1f} min (data {timings['data_s']:.0f} s, "
        f"train {timings['train_s']:.0f} s, evaluate {timings['evaluate_s']:.0f} s)"
    )
    log("wrote " + ", ".join(str(p) for p in paths.values()))
    return results


def _ensure_data(generate, stem, data_dir, settings, workers, progress, log) -> None:
    train_file = data_dir / f"{stem}.npz"
    val_file = data_dir / f"{stem}-val.npz"
    if train_file.exists() and val_file.exists():
        from qgf.data import load_file

        try:
            load_file(train_file)
            load_file(val_file)
        except QGFError as exc:
            raise QGFError(
                f"the cached demo data is unusable ({exc}); delete {data_dir} and run `qgf demo` again"
            ) from exc
        log(f"      reusing cached {train_file}")
        return
    generate(
        stem,
        data_dir,
        episodes=settings.data_episodes,
        episode_length=settings.episode_length,
        seed=settings.seed,
        workers=workers,
        progress=progress,
    )


def _write_json(path: Path, obj: Any) -> None:
    from qgf.fileio import atomic_write_json

    atomic_write_json(path, json.loads(json.dumps(obj)))
