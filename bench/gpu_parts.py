"""The measurements of the prepared GPU check (bench/gpu_check.py), one function per kind of part.

Every part function has the signature ``fn(scale, deadline, save, **args) -> dict``: `scale` is the
size table of bench/gpu_check.py (GPU or CPU smoke), `deadline` a `time.time()` value the part must
finish before (each function shortens its timing loops to fit and returns what it has), `save(dict)`
records partial results (a part killed at its hard limit still reports them). Matmul precision is
not set here: the driver runs each part under `jax.default_matmul_precision(...)`.

Imports: JAX, numpy, the public API of `qgf` (agents, presets, on-device chunk sampler, samplers)
and, through `qgf.benchmark.load_script`, bench/seeds.py (4 seeds as one vmapped program). No
ogbench, mujoco or gymnasium: the data is synthesised here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

OBS_DIM, ACTION_DIM = 28, 5  # cube-single's shapes (bench/training.py)
TRAJECTORY_LENGTH = 200
GOAL = 0.5  # the goal position in every controllable coordinate
SUCCESS_RADIUS = 0.3

# ----------------------------------------------------------------------------------------- data


def reach_dataset(num_trajectories: int, seed: int = 0) -> Any:
    """A synthetic offline dataset with something to learn, shaped like cube-single (obs 28, act 5),
    in bench/training.py's `SyntheticDataset` container.

    The first 5 observation coordinates are a position p that the action moves
    (p' = clip(p + 0.1 a, -1, 1)); the other 23 are a fixed random context per trajectory plus
    noise. Reward 0 within `SUCCESS_RADIUS` of the goal (0.5, ..., 0.5), -1 elsewhere (OGBench's
    sparse convention; masks stay 1, as in OGBench datasets). The behaviour policy steers towards
    the goal with Gaussian noise on 70% of the steps and acts uniformly at random on the rest, so
    the BC loss has structure to fit and the critic a value gradient to find."""
    rng = np.random.default_rng(seed)
    rows = num_trajectories * TRAJECTORY_LENGTH
    observations = np.empty((rows, OBS_DIM), np.float32)
    actions = np.empty((rows, ACTION_DIM), np.float32)
    rewards = np.empty(rows, np.float32)
    context = rng.normal(size=(num_trajectories, OBS_DIM - ACTION_DIM)).astype(np.float32)
    position = rng.uniform(-1, 1, size=(num_trajectories, ACTION_DIM)).astype(np.float32)
    for t in range(TRAJECTORY_LENGTH):
        index = np.arange(num_trajectories) * TRAJECTORY_LENGTH + t
        steer = np.clip(3.0 * (GOAL - position) + rng.normal(scale=0.3, size=position.shape), -1, 1)
        random = rng.uniform(-1, 1, size=position.shape)
        action = np.where(rng.random((num_trajectories, 1)) < 0.7, steer, random).astype(np.float32)
        noise = rng.normal(scale=0.05, size=context.shape).astype(np.float32)
        observations[index] = np.concatenate([position, context + noise], axis=1)
        actions[index] = action
        rewards[index] = np.where(np.linalg.norm(position - GOAL, axis=1) < SUCCESS_RADIUS, 0.0, -1.0)
        position = np.clip(position + 0.1 * action, -1, 1).astype(np.float32)
    terminals = np.zeros(rows, np.float32)
    terminals[TRAJECTORY_LENGTH - 1 :: TRAJECTORY_LENGTH] = 1.0
    from qgf.benchmark import load_script

    container = load_script("training").SyntheticDataset
    return container(observations, actions, rewards, np.ones(rows, np.float32), terminals)


_DEVICE_DATA: dict[int, Any] = {}


def device_data(scale: dict) -> Any:
    """The scale's reach dataset on the device, made once per process (parts run inline share it,
    so equal programs hit JAX's compilation cache)."""
    from qgf.data.chunks import to_device

    count = scale["trajectories"]
    if count not in _DEVICE_DATA:
        _DEVICE_DATA[count] = to_device(reach_dataset(count))
    return _DEVICE_DATA[count]


# ---------------------------------------------------------------------------------- helpers


def remaining(deadline: float) -> float:
    return deadline - time.time()


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Run the block under jax's matmul precision `precision` ('default': whatever jax has, its
    default or $JAX_DEFAULT_MATMUL_PRECISION; 'highest': full float32). Traced programs key their
    compilation on it, so both can be compiled in one process."""
    if precision == "default":
        yield
        return
    if hasattr(jax, "default_matmul_precision"):
        with jax.default_matmul_precision(precision):
            yield
        return
    before = current_precision()
    jax.config.update("jax_default_matmul_precision", precision)
    try:
        yield
    finally:
        jax.config.update("jax_default_matmul_precision", before)


def current_precision() -> str | None:
    """jax's `jax_default_matmul_precision` now (None: jax's default)."""
    try:
        value = jax.config.jax_default_matmul_precision
    except AttributeError:
        try:
            value = jax.config.read("jax_default_matmul_precision")
        except Exception:  # noqa: BLE001 - a newer jax may keep it elsewhere: report, don't fail
            return "unknown"
    return None if value is None else str(value)


def memory_stats() -> dict | None:
    """The first device's allocator statistics (bytes), where the backend keeps them (GPUs do;
    the CPU backend returns None)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if not stats:
        return None
    keys = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit", "largest_alloc_size")
    return {key: int(stats[key]) for key in keys if key in stats}


def load_config(preset: str, agent: str, overrides: dict | None):
    from qgf.config import load_preset

    values = {
        "agent": agent,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in (overrides or {}).items()},
    }
    return load_preset(preset, values, warn=False)


def create_agent(config):
    from qgf.agents import agent_class

    return agent_class(config.agent).create(config.seed, OBS_DIM, ACTION_DIM, config)


def describe(config, agent) -> dict:
    from qgf.nets import count_params

    return {
        "agent": config.agent,
        "critic": config.critic,
        "actor_hidden_dims": list(config.actor_hidden_dims),
        "critic_hidden_dims": list(config.critic_hidden_dims),
        "batch_size": config.batch_size,
        "num_critics": config.num_critics,
        "params": count_params(agent.params),
    }


# ------------------------------------------------------------------------------------- parts


def environment(scale: dict, deadline: float, save: Callable[[dict], None]) -> dict:
    """Device, versions, the matmul precision in force (detected from float32 products' error
    against float64), and the dense matmul rate under jax's default and 'highest' precision."""
    from qgf.versions import package_versions

    device = jax.devices()[0]
    result: dict[str, Any] = {
        "backend": jax.default_backend(),
        "device": str(device),
        "device_kind": getattr(device, "device_kind", None),
        "device_count": jax.device_count(),
        "versions": package_versions(),
        "jax_default_matmul_precision": current_precision(),
        "env": {
            name: os.environ.get(name)
            for name in ("JAX_DEFAULT_MATMUL_PRECISION", "NVIDIA_TF32_OVERRIDE", "XLA_FLAGS", "JAX_PLATFORMS")
        },
        "nvidia_smi": nvidia_smi(),
        "cpu_count": os.cpu_count(),
    }
    save(result)
    result["matmul"] = {}
    for precision in ("default", "highest"):
        with matmul_precision(precision):
            result["matmul"][precision] = {
                "relative_error_vs_float64": matmul_error(scale["check_matmul"]),
                "tflops": matmul_tflops(scale["rate_matmul"], repeats=5),
            }
        save(result)
    errors = {p: m["relative_error_vs_float64"] for p, m in result["matmul"].items()}
    result["default_is_reduced_precision"] = bool(errors["default"] > max(1e-5, 10 * errors["highest"]))
    return result


def nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = "--query-gpu=name,memory.total,driver_version,clocks.max.sm"
    try:
        done = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True, timeout=15
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"failed: {error}"
    return done.stdout.strip() or done.stderr.strip()


def matmul_error(size: int) -> float:
    """Relative Frobenius error of a jitted float32 (size x size) product against float64."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    product = np.asarray(jax.jit(jnp.dot)(a, b), np.float64)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    return float(np.linalg.norm(product - exact) / np.linalg.norm(exact))


def matmul_tflops(size: int, repeats: int) -> float:
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    product = jax.jit(jnp.dot)
    product(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e12


def training_speed(
    scale: dict,
    deadline: float,
    save: Callable[[dict], None],
    *,
    agent: str,
    preset: str,
    overrides: dict | None = None,
    time_target_s: float | None = None,
) -> dict:
    """Fused steps/s (`Agent.update_many`, batches sampled on the device) of one agent and preset:
    compile with one step, size the timed call from a short probe, best of two timed calls."""
    config = load_config(scale["presets"][preset], agent, overrides)
    state = create_agent(config)
    data = device_data(scale)
    result: dict[str, Any] = {"preset": scale["presets"][preset], "overrides": overrides or {}}
    result.update(describe(config, state))
    save(result)
    started = time.perf_counter()
    state, metrics = state.update_many(data, 1, donate=True)
    jax.block_until_ready(metrics)
    result["compile_and_first_step_s"] = round(time.perf_counter() - started, 3)
    result["compiled"] = True
    result["memory_after_first_step"] = memory_stats()
    save(result)
    probe_steps = scale["probe_steps"]
    started = time.perf_counter()
    state, metrics = state.update_many(data, probe_steps, donate=True)
    jax.block_until_ready(metrics)
    per_step = (time.perf_counter() - started) / probe_steps
    target = time_target_s if time_target_s is not None else scale["time_target_s"]
    target = min(target, max(remaining(deadline) / 3, per_step * probe_steps))
    steps = int(max(probe_steps, min(scale["max_timed_steps"], target / per_step)))
    best, timed = per_step, []  # the probe stands in if no timed call fits
    for _ in range(2):
        if remaining(deadline) < 1.5 * steps * best:
            break
        started = time.perf_counter()
        state, metrics = state.update_many(data, steps, donate=True)
        jax.block_until_ready(metrics)
        timed.append((time.perf_counter() - started) / steps)
        best = min(timed)
    result.update(
        timed_steps=steps if timed else probe_steps,
        timed_calls=len(timed),
        ms_per_step=round(1000.0 * best, 4),
        steps_per_s=round(1.0 / best, 2),
        memory=memory_stats(),
        finite=bool(all(np.isfinite(np.asarray(value)).all() for value in jax.device_get(metrics).values())),
    )
    return result


def compile_check(scale: dict, deadline: float, save: Callable[[dict], None], *, agents: list[str]) -> dict:
    """The paper preset of each agent built, compiled and stepped at its real size (one process,
    so the memory figure is the process's peak so far: an upper bound for each agent)."""
    result: dict[str, Any] = {"agents": {}}
    for name in agents:
        if remaining(deadline) < 5:
            result["agents"][name] = {"compiled": None, "error": "not reached: part budget spent"}
            continue
        try:
            case = training_speed(
                scale, deadline, lambda _: None, agent=name, preset="paper", time_target_s=0.5
            )
            result["agents"][name] = {
                key: case.get(key)
                for key in ("compiled", "compile_and_first_step_s", "ms_per_step", "params", "memory")
            }
        except Exception as error:  # noqa: BLE001 - each agent's failure is a row of the report
            result["agents"][name] = {"compiled": False, "error": f"{type(error).__name__}: {error}"[:500]}
        save(result)
    return result


def seeds(scale: dict, deadline: float, save: Callable[[dict], None], *, preset: str) -> dict:
    """S = 4 seeds as one vmapped program against one seed (bench/seeds.py's `seeds_case`)."""
    from qgf.benchmark import load_script

    name = scale["presets"][preset]
    steps = scale["seeds_steps"][preset]
    case = load_script("seeds").seeds_case(name, steps, device_data(scale), OBS_DIM, ACTION_DIM)
    case["memory"] = memory_stats()
    return case


def sampler_latency(scale: dict, deadline: float, save: Callable[[dict], None]) -> dict:
    """ms per call and per chunk of `Agent.sample_actions` for BC and three guided samplers, at each
    batch size, on a freshly initialised qgf agent at the paper preset (the network sizes are what
    matters: T Euler steps of the actor plus the estimator's critic and Jacobian passes)."""
    from qgf.guidance import SamplerSpec

    config = load_config(scale["presets"]["paper"], "qgf", None)
    agent = create_agent(config)
    result: dict[str, Any] = {"preset": scale["presets"]["paper"], "flow_steps": config.flow_steps}
    result.update(describe(config, agent))
    result["ms_per_call"], result["ms_per_chunk"] = {}, {}
    key, weight = jax.random.key(0), jnp.float32(0.05)
    for batch in scale["sampler_batches"]:
        observations = jax.random.normal(jax.random.key(batch), (batch, OBS_DIM))
        for estimator in scale["estimators"]:
            if remaining(deadline) < 2:
                break
            spec = SamplerSpec(estimator, steps=config.flow_steps)

            def call(spec=spec, observations=observations):
                return agent.sample_actions(observations, key, weight, spec)

            jax.block_until_ready(call())  # compiles
            times = []
            for _ in range(scale["sampler_repeats"]):
                started = time.perf_counter()
                jax.block_until_ready(call())
                times.append(time.perf_counter() - started)
                if remaining(deadline) < 1:
                    break
            ms = 1000.0 * statistics.median(times)
            result["ms_per_call"].setdefault(estimator, {})[str(batch)] = round(ms, 4)
            result["ms_per_chunk"].setdefault(estimator, {})[str(batch)] = round(ms / batch, 5)
            save(result)
    return result


def short_training(scale: dict, deadline: float, save: Callable[[dict], None]) -> dict:
    """A short qgf training on the reach dataset: the losses of every `log_every` steps (means over
    those steps) and the throughput, stopped early (and saying so) when the budget runs out."""
    spec = scale["training"]
    config = load_config(scale["presets"][spec["preset"]], "qgf", None)
    state = create_agent(config)
    data = device_data(scale)
    result: dict[str, Any] = {
        "jax_default_matmul_precision": current_precision(),
        "planned_steps": spec["steps"],
        "curve": {"step": []},
    }
    result.update(describe(config, state))
    step, seconds, last_chunk = 0, 0.0, 0.0
    while step < spec["steps"]:
        if step and remaining(deadline) < 2 * last_chunk + 1:
            result["stopped_early"] = "part budget spent"
            break
        started = time.perf_counter()
        state, metrics = state.update_many(data, spec["log_every"], donate=True)
        metrics = jax.device_get(metrics)
        last_chunk = time.perf_counter() - started
        if step:  # the first chunk includes compilation
            seconds += last_chunk
        step += spec["log_every"]
        result["curve"]["step"].append(step)
        for name in spec["metrics"]:
            result["curve"].setdefault(name, []).append(float(metrics[name]))
        save(result)
    result["steps"] = step
    timed = step - spec["log_every"]
    result["steps_per_s"] = round(timed / seconds, 2) if timed and seconds else None
    result["finite"] = bool(all(np.isfinite(v).all() for k, v in result["curve"].items() if k != "step"))
    return result


PART_FUNCTIONS: dict[str, Callable[..., dict]] = {
    "environment": environment,
    "training_speed": training_speed,
    "compile_check": compile_check,
    "seeds": seeds,
    "sampler_latency": sampler_latency,
    "short_training": short_training,
}
