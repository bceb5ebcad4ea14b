"""Fig. 6 of the QGF paper: test-time compute of every method.

Dense-layer FLOPs per action, three ways: the analytic formula of each estimator (its record in
`qgf.guidance.estimators`), a dense count of the traced program (jaxpr FLOP counting), and XLA's
cost analysis; and measured milliseconds per action.

Imports JAX, the estimator table and `qgf.analysis.methods` / `qgf.analysis.qvalues`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from qgf.analysis.methods import BACKWARD_TO_INPUT_FACTOR, Method, PolicyAndCritic
from qgf.analysis.qvalues import method_noise
from qgf.guidance.estimators import POLICY_SAMPLER, Costs, SamplerSpec, estimator

Array = jax.Array


def _dot_general_flops(eqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    rhs_free = [size for axis, size in enumerate(rhs) if axis not in (*rhs_contract, *rhs_batch)]
    return 2 * math.prod(lhs) * math.prod(rhs_free)


def _live_equations(jaxpr) -> list:
    """The equations whose results reach an output (a dead-code pass: jaxprs are not pruned)."""
    live = {v for v in jaxpr.outvars if isinstance(v, jax_core.Var)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars):
            kept.append(eqn)
            live.update(v for v in eqn.invars if isinstance(v, jax_core.Var))
    return kept[::-1]


def _jaxpr_dense_flops(jaxpr) -> int:
    total = 0
    for eqn in _live_equations(jaxpr):
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_general_flops(eqn)
        elif name == "cond":
            # Static count: the most expensive branch (an upper bound on what runs).
            total += max(_jaxpr_dense_flops(branch.jaxpr) for branch in eqn.params["branches"])
        elif name == "scan":
            total += eqn.params["length"] * _jaxpr_dense_flops(eqn.params["jaxpr"].jaxpr)
        else:  # jit, custom_jvp/vjp calls, while (trip count unknown: counted once), ...
            for sub in jax_core.jaxprs_in_params(eqn.params):
                total += _jaxpr_dense_flops(sub)
    return total


def addon_networks(model) -> dict[str, Callable]:
    """The add-on networks among a policy's extras, all (obs, a_t, t) -> ...; the critic's own
    heads (`q_heads`, for gated guidance) are the critic, which `critic_forward` counts."""
    return {name: extra for name, extra in model.extras.items() if name != "q_heads"}


def dense_flops(fn: Callable[..., Any], *args: Any) -> int:
    """Matrix-product FLOPs (2 per multiply-add) of ``fn(*args)``, counted on its traced program.

    Loops with a static trip count (`lax.scan`, `fori_loop` with int bounds) are multiplied out;
    `lax.cond` counts its most expensive branch; dead code is skipped. For an MLP this is
    sum over layers of 2 * in * out per row.
    """
    return _jaxpr_dense_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def xla_flops(stage) -> float | None:
    """XLA's FLOP estimate (all ops) for a `jax.stages.Lowered` or `Compiled` program, or None if the
    backend offers none. XLA counts the body of a loop once, whatever its trip count."""
    try:
        cost = stage.cost_analysis()
    except Exception:  # backends without cost analysis raise various errors
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def analytic_flops(
    spec: SamplerSpec,
    actor_flops: float,
    critic_flops: float,
    action_dim: int,
    backward: float = 1.0,
    extra_flops: Mapping[str, float] | None = None,
) -> float | None:
    """Dense FLOPs per action of a sampler, from F_v (one actor forward per row) and F_Q (one
    critic-ensemble forward per row). A backward pass to the inputs costs ``backward`` x forward.
    Add-on samplers also need the forward cost of their network per row, ``extra_flops[name]``
    (F_R robust_q, F_o optimal_velocity, F_d denoiser); without it they have no formula (None), nor
    has 'policy' (a trained method's own policy).

    Each estimator's formula is its record's `flops` in the estimator table
    (`qgf.guidance.estimators`), per denoising step k = 0 .. T - 1 (the velocity at a_t is shared by
    g and the Euler step): BC F_v; qgf and ood F_v + (1 + b) F_Q; qgf-jacobian and qgf-regularized
    (1 + b)(F_v + F_Q); qgf-jacobian-smooth (1 + K(1 + b)) F_v + (1 + b) F_Q; qgf-jacobian-ortho
    (2 + d) F_v + (1 + b) F_Q (d forward-mode passes; the SVD is not a dense layer and is not
    counted); qgf-chain (T - k) F_v + (1 + b) F_Q; bptt (1 + b)(T - k) F_v + (1 + b) F_Q. GradStep:
    T F_v + L (1 + b) F_Q. Add-ons: robustq F_v + (1 + b) F_R; cfgrl F_v + F_o; qgf-distill
    F_v + F_d + (1 + b) F_Q; qgf-jacobian-distill F_v + (1 + b) F_d + (1 + b) F_Q.
    Best-of-N: N x (the sampler + one critic forward to rank).
    """
    if spec.estimator == POLICY_SAMPLER:
        return None
    record = estimator(spec.estimator)
    extra = dict(extra_flops or {})
    if any(name not in extra for name in record.needs):
        return None
    costs = Costs(
        steps=spec.steps,
        actor=actor_flops,
        critic=critic_flops,
        backward=backward,
        action_dim=action_dim,
        smooth_k=spec.smooth_k,
        gradstep_steps=spec.gradstep_steps,
        extra=extra,
    )
    per_sampler = record.flops(costs)
    if spec.best_of_n == 1:
        return per_sampler
    return spec.best_of_n * (per_sampler + critic_flops)


def median_ms(fn: Callable[..., Any], args: Sequence[Any], repeats: int) -> float:
    """Median wall-clock milliseconds of ``fn(*args)`` over `repeats` calls, after one warm-up."""
    jax.block_until_ready(fn(*args))  # compile / warm up outside the timing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def network_costs(model: PolicyAndCritic, observation_row: Any) -> dict[str, Any]:
    """F_v, F_Q and the XLA cross-check of the single passes, for one row (batch 1)."""
    a = jnp.zeros((1, model.action_dim), jnp.float32)
    t = jnp.full((1,), 0.5, jnp.float32)

    def velocity(obs, a, t):
        return model.velocity_fn(obs, a, t)

    def critic(obs, a):
        return model.q_fn(obs, a)

    def critic_gradient(obs, a):
        return jax.grad(lambda a: jnp.sum(model.q_fn(obs, a)))(a)

    def velocity_pullback(obs, a, t):
        out, pullback = jax.vjp(lambda a: model.velocity_fn(obs, a, t), a)
        return pullback(out)[0]

    passes = {
        "actor_forward": (velocity, (observation_row, a, t)),
        "critic_forward": (critic, (observation_row, a)),
        "critic_forward_backward": (critic_gradient, (observation_row, a)),
        "actor_forward_backward": (velocity_pullback, (observation_row, a, t)),
    }
    for name, extra in addon_networks(model).items():
        passes[f"{name}_forward"] = (extra, (observation_row, a, t))
    report: dict[str, Any] = {}
    for name, (fn, args) in passes.items():
        report[name] = {
            "dense_flops": dense_flops(fn, *args),
            "xla_flops": xla_flops(jax.jit(fn).lower(*args)),  # lowered: no compile needed
        }
    # backward / forward, the factor b of `analytic_flops`, as both counts see it
    report["backward_factor"] = {
        network: {
            count: _ratio(
                report[f"{network}_forward_backward"][count], report[f"{network}_forward"][count], 1.0
            )
            for count in ("dense_flops", "xla_flops")
        }
        for network in ("actor", "critic")
    }
    return report


def _ratio(numerator: float | None, denominator: float | None, minus: float = 0.0) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator - minus


def compute_report(
    model: PolicyAndCritic,
    methods: Sequence[Method],
    samplers: Mapping[str, Callable],
    observations: Any,
    noise: Array,
    key: Array,
    repeats: int,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Fig. 6 numbers per method: FLOPs per action (analytic; dense count of the traced sampler;
    XLA's estimate) and median milliseconds per action at batch 1 and at the full batch."""
    batch = noise.shape[0]
    first_row = jax.tree.map(lambda x: x[:1], observations)
    networks = network_costs(model, first_row)
    actor_flops = networks["actor_forward"]["dense_flops"]
    critic_flops = networks["critic_forward"]["dense_flops"]
    extra_flops = {name: networks[f"{name}_forward"]["dense_flops"] for name in addon_networks(model)}
    methods_report = {}
    for method in methods:
        noise_batch = method_noise(method, noise)
        weight_batch = jnp.full((batch,), method.weight, jnp.float32)
        noise_one, weight_one = noise_batch[:1], weight_batch[:1]
        sampler = samplers[method.label]
        compiled_one = sampler.lower(first_row, noise_one, key, weight_one).compile()
        traced_flops = dense_flops(sampler, first_row, noise_one, key, weight_one)
        ms_one = median_ms(compiled_one, (first_row, noise_one, key, weight_one), repeats)
        ms_batch = median_ms(sampler, (observations, noise_batch, key, weight_batch), max(2, repeats // 4))
        methods_report[method.label] = {
            "sampler": method.spec.label,
            "weight": method.weight,
            "analytic_flops": analytic_flops(
                method.spec,
                actor_flops,
                critic_flops,
                model.action_dim,
                BACKWARD_TO_INPUT_FACTOR,
                extra_flops,
            ),
            "traced_dense_flops": traced_flops,
            "xla_flops_loop_bodies_once": xla_flops(compiled_one),
            "ms_per_action_batch_1": ms_one,
            f"ms_per_action_batch_{batch}": ms_batch / batch,
        }
        progress(f"compute: {method.label}")
    return {
        "flow_steps": model.base_spec.steps,
        "gradstep_steps": model.base_spec.gradstep_steps,
        "backward_to_input_factor": BACKWARD_TO_INPUT_FACTOR,
        "batch": batch,
        "notes": (
            "analytic_flops: the formula of qgf.analysis.compute.analytic_flops with F_v, F_Q = dense "
            "FLOPs of one actor / critic-ensemble forward pass per row (2 * in * out per layer). "
            "traced_dense_flops: the same dense count on the traced sampler, loops multiplied out, "
            "lax.cond counted at its most expensive branch (an upper bound for qgf-chain and bptt, which "
            "skip finished steps). xla_flops_loop_bodies_once: XLA's cost analysis of the compiled batch-1 "
            "sampler, all ops, but each loop body counted once whatever its trip count (XLA's convention). "
            "networks: single passes, where XLA's count is complete."
        ),
        "networks": networks,
        "methods": methods_report,
    }
