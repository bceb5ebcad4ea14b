"""Sampler latency: ms per call and per action for every estimator, best-of-N, and the cost ratios.

    python bench/inference.py [--quick] [--json PATH]

`run(quick)` returns a dict (used by `qgf bench`). The model is the paper's shape at CPU width: a
random 4 x 512 LayerNorm + GELU velocity field (`qgf.flow.VelocityField`) and a 2-member critic
ensemble (`qgf.critics.networks.QEnsemble`, min-aggregated), observation dim 37 (cube-double), action chunk
d = 25 (h = 5 steps of 5-D actions), T = 10 flow steps. Every sampler is compiled once and timed as
the median of several calls after warm-up (the machine may be shared: the load average at the start
is recorded).

Ratios, with their targets:

- ``qgf-jacobian / qgf`` at batch 64 (target <= 2): Jᵀ∇Q as one VJP costs one extra actor backward;
- ``none / actor passes`` (target <= 1.2): plain BC against T separately timed actor forwards;
- ``qgf / its passes`` at batch 1 (target <= 1.3): QGF against T x (actor forward + critic
  forward-and-backward), each timed alone — the sampler loop's own overhead;
- ``bptt / qgf``, ``bfn-4 / qgf``, ``bfn-16 / qgf``: what the alternatives cost (no target).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

OBS_DIM, CHUNK_DIM, HIDDEN, STEPS = 37, 25, (512, 512, 512, 512), 10


def _interleaved_median_ms(functions: dict, repeats: int) -> dict:
    """(median, min) wall time in ms of each zero-argument function, timed in interleaved rounds
    (one call of each per round) so that load from other processes drifts over all of them alike."""
    import jax

    for fn in functions.values():  # compile + warm-up
        jax.block_until_ready(fn())
        jax.block_until_ready(fn())
    times: dict = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {
        name: (1000.0 * statistics.median(values), 1000.0 * min(values)) for name, values in times.items()
    }


def build_model(seed: int = 0):
    """Random actor and critic as `qgf.guidance` callables, plus their raw pieces for timing."""
    import jax
    import jax.numpy as jnp

    from qgf.critics.networks import QEnsemble, aggregate_q
    from qgf.flow import VelocityField

    actor = VelocityField(HIDDEN, CHUNK_DIM)
    critic = QEnsemble(HIDDEN, num_critics=2)
    actor_key, critic_key = jax.random.split(jax.random.key(seed))
    obs, actions, times = jnp.zeros((1, OBS_DIM)), jnp.zeros((1, CHUNK_DIM)), jnp.zeros((1,))
    actor_params = actor.init(actor_key, obs, actions, times)
    critic_params = critic.init(critic_key, obs, actions)

    def velocity_fn(o, a, t):
        return actor.apply(actor_params, o, a, t)

    def q_fn(o, a):
        return aggregate_q(critic.apply(critic_params, o, a), "min")

    return velocity_fn, q_fn


def run(quick: bool = True) -> dict:
    import jax
    import jax.numpy as jnp

    from qgf.guidance import SamplerSpec, make_sampler
    from qgf.guidance.estimators import STANDALONE_ESTIMATORS
    from qgf.guidance.gradients import critic_gradient

    repeats = 7 if quick else 25
    velocity_fn, q_fn = build_model()
    specs = [SamplerSpec(e, steps=STEPS) for e in STANDALONE_ESTIMATORS]  # add-on ones need extras
    specs += [SamplerSpec("none", steps=STEPS, best_of_n=n) for n in (4, 16)]
    specs += [SamplerSpec("qgf", steps=STEPS, best_of_n=4)]
    batches = (1, 64)
    weight = 0.05
    results: dict = {
        "quick": quick,
        "model": {"obs_dim": OBS_DIM, "chunk_dim": CHUNK_DIM, "hidden": list(HIDDEN), "critics": 2},
        "steps": STEPS,
        "backend": jax.default_backend(),
        "load_average_at_start": os.getloadavg()[0],
        "ms_per_call": {},
        "ms_per_call_min": {},
        "ms_per_action": {},
    }
    key = jax.random.key(1)
    passes = {}
    for batch in batches:
        obs = jax.random.normal(jax.random.key(2), (batch, OBS_DIM))
        noisy = jax.random.normal(jax.random.key(3), (batch, CHUNK_DIM))
        times = jnp.full((batch,), 0.5)
        functions = {}
        for spec in specs:
            sampler = make_sampler(velocity_fn, q_fn, CHUNK_DIM, spec)
            functions[spec.label] = functools.partial(sampler, obs, key, weight)
        # Network passes alone, for the overhead ratios.
        actor_pass = jax.jit(velocity_fn)
        critic_grad_pass = jax.jit(lambda o, x: critic_gradient(q_fn, o, x))
        functions["actor_forward"] = functools.partial(actor_pass, obs, noisy, times)
        functions["critic_grad"] = functools.partial(critic_grad_pass, obs, noisy)
        ms = _interleaved_median_ms(functions, repeats)
        (actor_median, actor_min), (critic_median, critic_min) = (
            ms.pop("actor_forward"),
            ms.pop("critic_grad"),
        )
        passes[str(batch)] = {
            "actor_forward_ms": round(actor_median, 4),
            "critic_grad_ms": round(critic_median, 4),
            "actor_forward_min_ms": round(actor_min, 4),
            "critic_grad_min_ms": round(critic_min, 4),
        }
        for label, (median, fastest) in ms.items():
            results["ms_per_call"].setdefault(label, {})[str(batch)] = round(median, 3)
            results["ms_per_call_min"].setdefault(label, {})[str(batch)] = round(fastest, 3)
            results["ms_per_action"].setdefault(label, {})[str(batch)] = round(median / batch, 4)
    results["passes"] = passes

    call = results["ms_per_call"]
    one, big = passes["1"], passes["64"]
    results["ratios"] = {
        "qgf-jacobian/qgf@64": call["qgf-jacobian"]["64"] / call["qgf"]["64"],
        "qgf-jacobian/qgf@1": call["qgf-jacobian"]["1"] / call["qgf"]["1"],
        "bptt/qgf@64": call["bptt"]["64"] / call["qgf"]["64"],
        "bfn-4/qgf@64": call["bfn-4"]["64"] / call["qgf"]["64"],
        "bfn-16/qgf@64": call["bfn-16"]["64"] / call["qgf"]["64"],
        "none/actor_passes@1": call["none"]["1"] / (STEPS * one["actor_forward_ms"]),
        "none/actor_passes@64": call["none"]["64"] / (STEPS * big["actor_forward_ms"]),
        "qgf/its_passes@1": call["qgf"]["1"] / (STEPS * (one["actor_forward_ms"] + one["critic_grad_ms"])),
        "qgf/its_passes@64": call["qgf"]["64"] / (STEPS * (big["actor_forward_ms"] + big["critic_grad_ms"])),
    }
    results["ratios"] = {k: round(v, 3) for k, v in results["ratios"].items()}
    # The same overhead ratios from the fastest call of each: on a shared machine the minimum is the
    # least contended measurement, so it bounds what the code itself costs.
    fastest = results["ms_per_call_min"]
    results["ratios_from_min"] = {
        "qgf-jacobian/qgf@64": round(fastest["qgf-jacobian"]["64"] / fastest["qgf"]["64"], 3),
        "none/actor_passes@1": round(fastest["none"]["1"] / (STEPS * one["actor_forward_min_ms"]), 3),
        "qgf/its_passes@1": round(
            fastest["qgf"]["1"] / (STEPS * (one["actor_forward_min_ms"] + one["critic_grad_min_ms"])), 3
        ),
    }
    results["targets"] = {"qgf-jacobian/qgf@64": 2.0, "none/actor_passes@1": 1.2, "qgf/its_passes@1": 1.3}
    return results


def format_report(results: dict) -> str:
    lines = [
        f"sampler latency, {results['backend']}, T = {results['steps']}, 4x512 actor, 2x 4x512 critics, "
        f"d = {CHUNK_DIM} (load average at start {results['load_average_at_start']:.1f})",
        f"{'sampler':<24} {'ms @ B=1':>10} {'ms @ B=64':>10} {'ms/action @64':>14}",
    ]
    for label, by_batch in results["ms_per_call"].items():
        per_action = results["ms_per_action"][label]["64"]
        lines.append(f"{label:<24} {by_batch['1']:>10.2f} {by_batch['64']:>10.2f} {per_action:>14.3f}")
    for batch, passes in results["passes"].items():
        lines.append(
            f"passes alone @ B={batch}: actor forward {passes['actor_forward_ms']:.3f} ms, "
            f"critic forward+backward {passes['critic_grad_ms']:.3f} ms"
        )
    lines.append("ratios:")
    for name, value in results["ratios"].items():
        target = results["targets"].get(name)
        verdict = "" if target is None else f"  (target <= {target}: {'ok' if value <= target else 'MISSED'})"
        lines.append(f"  {name:<24} {value:6.2f}{verdict}")
    lines.append("ratios from the fastest call of each (least contended):")
    for name, value in results["ratios_from_min"].items():
        lines.append(f"  {name:<24} {value:6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    results = run(quick=args.quick)
    print(format_report(results))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
