"""Training speed of every registered agent: steps/s and the cost of a step against its own passes.

`run(quick) -> dict` for `qgf bench`; `python bench/agents.py [--quick] [--preset cpu]` prints it.

For each agent of `qgf.agents.AGENT_NAMES` (critic=iql, the paper's Fig. 5 setting; `--critic td`
for the other) at the `cpu` preset it measures, in one process:

- fused steps/s: `update_many` (batches sampled on the device, many steps per compiled call),
  the better of two timed calls after compilation;
- the cost of the agent's own network passes in isolation: one jitted `jax.grad` of the agent's
  losses on a fixed device batch (every forward and backward pass of every network, the policy
  samples a td critic backs up on and the ODEs a method integrates inside its loss included), the
  best of several calls;
- overhead = (seconds per fused step) / (seconds per isolated pass set): what batching, the
  optimisers, the EMA and the loop add. Target <= 1.3 for every agent (issue: "no agent may be
  slower than 1.3x the cost of its own network passes measured in isolation").

Data: the synthetic cube-single-shaped dataset of bench/training.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

from qgf.agents import AGENT_NAMES, agent_class
from qgf.benchmark import load_script
from qgf.config import load_preset
from qgf.data.chunks import sample_chunks, to_device

TARGET_OVERHEAD = 1.3


def best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def measure(name: str, preset: str, critic: str, device_data, steps: int, repeats: int) -> dict:
    training = load_script("training")
    config = load_preset(preset, {"agent": name, "critic": critic}, warn=False)
    agent = agent_class(name).create(0, training.OBS_DIM, training.ACTION_DIM, config)
    batch = sample_chunks(device_data, jax.random.key(0), config.batch_size, config.horizon, config.discount)
    # The batch is an argument, not a closed-over constant (XLA would constant-fold through it).
    passes = jax.jit(jax.grad(lambda params, batch, key: agent.losses(params, batch, key)[0]))
    key = jax.random.key(1)
    jax.block_until_ready(passes(agent.params, batch, key))  # compiles
    pass_seconds = best_seconds(lambda: passes(agent.params, batch, key), repeats=max(3, repeats * 3))

    state, _ = agent.update_many(device_data, steps)  # compiles
    jax.block_until_ready(state)
    step_seconds = best_seconds(lambda: state.update_many(device_data, steps)[1], repeats) / steps
    return {
        "preset": preset,
        "critic": critic,
        "fused_steps_per_s": 1.0 / step_seconds,
        "isolated_passes_per_s": 1.0 / pass_seconds,
        "overhead": step_seconds / pass_seconds,
    }


def run(quick: bool, preset: str = "cpu", critic: str = "iql", agents=AGENT_NAMES) -> dict:
    training = load_script("training")
    device_data = to_device(training.synthetic_dataset(num_trajectories=20))
    steps, repeats = (20, 2) if quick else (100, 3)
    results = {"preset": preset, "critic": critic, "steps_per_call": steps, "agents": {}}
    for name in agents:
        results["agents"][name] = measure(name, preset, critic, device_data, steps, repeats)
        print(f"{name:>10}: {json.dumps(results['agents'][name])}", flush=True)
    qgf_rate = results["agents"].get("qgf", {}).get("fused_steps_per_s")
    results["ratios"] = {}
    results["targets"] = {}
    results["at_most"] = {}
    for name, case in results["agents"].items():
        key = f"{name} step÷its network passes"
        results["ratios"][key] = case["overhead"]
        results["targets"][key] = TARGET_OVERHEAD
        results["at_most"][key] = True
        if qgf_rate and name != "qgf":
            results["ratios"][f"{name} steps/s÷qgf steps/s"] = case["fused_steps_per_s"] / qgf_rate
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps per measurement")
    parser.add_argument("--preset", default="cpu", help="scale preset (default: cpu)")
    parser.add_argument("--critic", default="iql", choices=("iql", "td"))
    parser.add_argument("--agent", action="append", help="only these agents (default: all registered)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = run(args.quick, args.preset, args.critic, tuple(args.agent or AGENT_NAMES))
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
