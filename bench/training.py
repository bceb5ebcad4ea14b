"""Training throughput: fused multi-step updates vs a naive loop, and FLOP utilisation.

`run(quick)` returns the raw numbers plus `ratios` / `targets` / `at_most` for `qgf bench`.

    python bench/training.py            # full: every preset, more steps
    python bench/training.py --quick    # a minute or two on 2 cores

For each configuration it measures

- fused steps/s: `QGFAgent.update_many` (batches sampled on the device, many steps per compiled
  call), timed on a second call after compilation;
- naive steps/s (CPU presets): one jitted `update` per step on batches sampled on the host with
  numpy and copied to the device, the way a straightforward training loop is written;
- FLOP utilisation: 6 * trained_params * batch * steps/s (forward 2, backward 4 FLOPs per parameter
  and example over actor, K critics and value) divided by the dense fp32 matmul rate measured in
  the same run with a large `jnp.dot` (the better of the measurements just before and just after
  each case, as the machine may be shared). The extra forward passes (target critic, V(s')) are not
  counted, so this understates the work done by about a fifth.

Data: a synthetic device dataset shaped like cube-single (obs 28, action 5, 1001-step trajectories).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from qgf.agents.qgf import QGFAgent
from qgf.config import load_preset
from qgf.data.chunks import to_device
from qgf.nets import count_params

OBS_DIM, ACTION_DIM, TRAJECTORY_LENGTH = 28, 5, 1001


@dataclass
class SyntheticDataset:
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    masks: np.ndarray
    terminals: np.ndarray

    @property
    def size(self) -> int:
        return len(self.observations)


def synthetic_dataset(num_trajectories: int = 50, seed: int = 0) -> SyntheticDataset:
    rng = np.random.default_rng(seed)
    size = num_trajectories * TRAJECTORY_LENGTH
    return SyntheticDataset(
        observations=rng.normal(size=(size, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(size, ACTION_DIM)).astype(np.float32),
        rewards=-(rng.random(size) < 0.9).astype(np.float32),
        masks=np.ones(size, np.float32),
        terminals=np.tile(np.arange(TRAJECTORY_LENGTH) == TRAJECTORY_LENGTH - 1, num_trajectories).astype(
            np.float32
        ),
    )


def matmul_flops_per_second(size: int = 2048, repeats: int = 10) -> float:
    """Dense fp32 matmul rate: the best of several timed runs of a jitted size^3 product."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    product = jax.jit(jnp.dot)
    product(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def trained_params(agent: QGFAgent) -> int:
    return count_params(agent.params)


def fused_steps_per_second(agent: QGFAgent, device_data, steps: int, repeats: int) -> float:
    agent, _ = agent.update_many(device_data, steps, donate=True)  # compiles
    jax.block_until_ready(agent)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        agent, metrics = agent.update_many(device_data, steps, donate=True)
        jax.block_until_ready(metrics)
        best = min(best, time.perf_counter() - start)
    return steps / best


def host_batch(
    dataset: SyntheticDataset, rng: np.random.Generator, batch_size: int, horizon: int, discount: float
):
    """A numpy version of qgf.data.chunks.sample_chunks for the naive baseline."""
    end = (np.arange(dataset.size) // TRAJECTORY_LENGTH + 1) * TRAJECTORY_LENGTH - 1
    starts = rng.integers(0, dataset.size, batch_size)
    starts = np.where(starts == end[starts], starts - 1, starts)
    rows = starts[:, None] + np.arange(horizon)[None]
    valid = rows < end[starts][:, None]
    clamped = np.minimum(rows, end[starts][:, None] - 1)
    discounts = discount ** np.arange(horizon)
    return {
        "observations": dataset.observations[starts],
        "actions": dataset.actions[clamped].reshape(batch_size, -1),
        "rewards": np.sum(np.where(valid, dataset.rewards[clamped], 0.0) * discounts, axis=1).astype(
            np.float32
        ),
        "masks": np.min(np.where(valid, dataset.masks[clamped], 1.0), axis=1).astype(np.float32),
        "valid": valid.astype(np.float32),
        "next_observations": dataset.observations[np.minimum(starts + horizon, end[starts])],
    }


def naive_steps_per_second(agent: QGFAgent, dataset: SyntheticDataset, steps: int) -> float:
    config = agent.config
    rng = np.random.default_rng(0)

    def batch():
        host = host_batch(dataset, rng, config.batch_size, config.horizon, config.discount)
        return jax.device_put(host)

    agent, metrics = agent.update(batch())  # compiles
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        agent, metrics = agent.update(batch())
    jax.block_until_ready(metrics)
    return steps / (time.perf_counter() - start)


CASES = {
    # name: (preset, overrides, fused steps per call (full, quick), naive steps (full, quick))
    "tiny": ("tiny", {}, (2000, 500), (500, 100)),
    "cpu-small": ("cpu-small", {}, (500, 100), (200, 50)),
    "cpu": ("cpu", {}, (200, 50), (100, 25)),
    "width512-batch1024": (
        "cpu",
        {"actor_hidden_dims": (512,) * 4, "critic_hidden_dims": (512,) * 4, "batch_size": 1024},
        (20, 5),
        (0, 0),
    ),
    "paper": ("paper", {}, (5, 2), (0, 0)),
}


def run(quick: bool) -> dict:
    """Measure every case; returns a JSON-ready dict (also printed by the script)."""
    dataset = synthetic_dataset()
    device_data = to_device(dataset)
    peaks = [matmul_flops_per_second()]
    results = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "quick": quick,
        "cases": {},
    }
    for name, (preset, overrides, fused_steps, naive_steps) in CASES.items():
        config = load_preset(preset, overrides, warn=False)
        steps = fused_steps[1] if quick else fused_steps[0]
        agent = QGFAgent.create(0, OBS_DIM, ACTION_DIM, config)
        params = trained_params(agent)
        forward_only = count_params((agent.target_params, agent.params["value"]))
        fused = fused_steps_per_second(agent, device_data, steps, repeats=1 if name == "paper" else 2)
        # The machine is shared: take the matmul rate right before and after this case and use the
        # better one, so a load spike during the peak measurement cannot inflate the utilisation.
        peaks.append(matmul_flops_per_second())
        peak = max(peaks[-2:])
        case = {
            "preset": preset,
            "overrides": {
                key: list(value) if isinstance(value, tuple) else value for key, value in overrides.items()
            },
            "batch_size": config.batch_size,
            "trained_params": params,
            "fused_steps_per_s": fused,
            "matmul_gflops": peak / 1e9,
            "flop_utilisation": 6.0 * params * config.batch_size * fused / peak,
            # The same with the forward-only passes counted (target critic on (s, a), V on s').
            "executed_flop_utilisation": (6.0 * params + 2.0 * forward_only)
            * config.batch_size
            * fused
            / peak,
        }
        naive = naive_steps[1] if quick else naive_steps[0]
        if naive:
            case["naive_steps_per_s"] = naive_steps_per_second(
                QGFAgent.create(0, OBS_DIM, ACTION_DIM, config), dataset, naive
            )
            case["fused_speedup"] = fused / case["naive_steps_per_s"]
        results["cases"][name] = case
        print(f"{name:>20}: {json.dumps(case)}", flush=True)
    results["matmul_gflops_measurements"] = [peak / 1e9 for peak in peaks]
    cases = results["cases"]
    results["ratios"] = {
        "FLOP utilisation @ width 512, batch 1024": cases["width512-batch1024"]["flop_utilisation"],
        "FLOP utilisation @ paper (4x1024, batch 1024)": cases["paper"]["flop_utilisation"],
        **{
            f"fused÷naive steps/s ({name})": cases[name]["fused_speedup"]
            for name in ("tiny", "cpu-small", "cpu")
        },
    }
    results["targets"] = {"FLOP utilisation @ width 512, batch 1024": 0.7}
    results["at_most"] = {name: False for name in results["ratios"]}
    return results


if __name__ == "__main__":
    from qgf.benchmark import script_main

    script_main(run, __doc__)
