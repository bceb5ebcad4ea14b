"""`qgf check RUN`: can the critic be trusted to guide? Measured on dataset states:

- **action sensitivity**: the spread of Q over BC samples of one state (std over N samples, mean
  over states) against the spread of Q over states (std over states of the per-state mean); a
  small ratio means Q is nearly flat in the action, and guidance will do little;
- **ensemble disagreement** delta = std over the guidance critic's heads, on the dataset's own
  chunks, on BC samples and on the guided actions at each weight (the quantity gated guidance,
  `SamplerSpec.gate`, acts on); its median (`quantile`) on dataset chunks is the suggested
  gate kappa: the gate then leaves actions as uncertain as the data's typical one alone;
- **distance to the data**: each guided action's nearest-neighbour distance to dataset chunks
  (Fig. 17's measure, `qgf.analysis.distances`), against BC's;
- a one-line verdict per weight (the rules are `verdict`'s, docs/deploy.md).

Imports JAX (in the functions), numpy, `qgf.policy` and `qgf.analysis.distances`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FLAT_RATIO = 0.05  # action spread / state spread below this: "Q is nearly flat in the action"
LEAVES_DISTANCE = 2.0  # guided NN distance over BC's above this: "leaves the data"
LEAVES_DISAGREEMENT = 2.0  # guided median delta over the data's `quantile` above this: "leaves the data"


def _median(values: np.ndarray) -> float:
    return float(np.median(np.asarray(values, np.float64)))


def verdict(weight: float, ratio: float, distance_ratio: float, disagreement_ratio: float) -> str:
    """One line per weight from the three measured ratios (thresholds: the module's constants)."""
    if ratio < FLAT_RATIO:
        return (
            f"w={weight:g}: Q is nearly flat in the action (action/state spread {ratio:.3f}): "
            "guidance will do little"
        )
    if distance_ratio > LEAVES_DISTANCE or disagreement_ratio > LEAVES_DISAGREEMENT:
        return (
            f"w={weight:g}: guidance leaves the data (NN distance {distance_ratio:.2f}x BC's, ensemble "
            f"disagreement {disagreement_ratio:.2f}x the data's); trust the critic less here "
            "(gate, smaller w)"
        )
    return (
        f"w={weight:g}: guided actions stay near the data (NN distance {distance_ratio:.2f}x BC's, "
        f"disagreement {disagreement_ratio:.2f}x the data's)"
    )


def trust_report(
    run: Any,
    observations: Any,
    observation_chunks: np.ndarray,
    dataset_chunks: np.ndarray,
    weights: Sequence[float],
    *,
    estimator: str = "qgf",
    samples: int = 16,
    quantile: float = 0.5,
    gate: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """The measurements of the module docstring for a loaded run on (B, D) `observations` with
    their dataset chunks (B, d) and `dataset_chunks` (M, d) to search for nearest neighbours."""
    import jax

    from qgf.analysis.distances import nearest_neighbour_distances
    from qgf.guidance.estimators import SamplerSpec
    from qgf.policy import RunPolicy
    from qgf.precision import with_agent_precision

    agent = run.agent
    steps = run.config.flow_steps
    bc = SamplerSpec("none", steps=steps)
    guided = SamplerSpec(estimator, steps=steps, gate=gate)
    policy = RunPolicy.for_run(run, [bc, guided])
    heads = jax.jit(with_agent_precision(lambda agent, o, a: agent.q_heads_fn(o, a)))
    q = jax.jit(with_agent_precision(lambda agent, o, a: agent.q_fn(o, a)))

    def disagreement(obs, actions):
        return np.asarray(heads(agent, obs, actions)).std(axis=0)

    obs = np.asarray(observations, np.float32)
    batch = obs.shape[0]
    key = jax.random.key(seed)
    repeated = np.repeat(obs, samples, axis=0)
    bc_samples = np.asarray(policy.actions(repeated, key, 0.0, bc))
    q_bc = np.asarray(q(agent, repeated, bc_samples), np.float64).reshape(batch, samples)
    action_spread = float(q_bc.std(axis=1).mean())
    state_spread = float(q_bc.mean(axis=1).std())
    ratio = action_spread / max(state_spread, 1e-12)

    delta_data = disagreement(obs, np.asarray(observation_chunks, np.float32))
    data_level = float(np.quantile(delta_data, quantile))
    bc_actions = bc_samples.reshape(batch, samples, -1)[:, 0]
    bc_distance = _median(nearest_neighbour_distances(bc_actions, dataset_chunks))
    per_weight = []
    for weight in weights:
        actions = np.asarray(policy.actions(obs, key, float(weight), guided))
        distance = _median(nearest_neighbour_distances(actions, dataset_chunks))
        delta = _median(disagreement(obs, actions))
        distance_ratio = distance / max(bc_distance, 1e-12)
        disagreement_ratio = delta / max(data_level, 1e-12)
        per_weight.append(
            {
                "weight": float(weight),
                "nn_distance_median": distance,
                "disagreement_median": delta,
                "q_mean": float(np.mean(np.asarray(q(agent, obs, actions)))),
                "distance_over_bc": distance_ratio,
                "disagreement_over_data": disagreement_ratio,
                "verdict": verdict(float(weight), ratio, distance_ratio, disagreement_ratio),
            }
        )
    return {
        "sampler": guided.label,
        "observations": int(batch),
        "bc_samples_per_state": int(samples),
        "q_action_spread": action_spread,
        "q_state_spread": state_spread,
        "q_action_over_state": ratio,
        "disagreement_dataset_median": _median(delta_data),
        f"disagreement_dataset_q{int(round(quantile * 100))}": data_level,
        "disagreement_bc_median": _median(disagreement(repeated, bc_samples)),
        "bc_nn_distance_median": bc_distance,
        "suggested_gate": data_level,
        "suggested_gate_quantile": quantile,
        "weights": per_weight,
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"Q over BC samples of a state vs over states: std {report['q_action_spread']:.4g} vs "
        f"{report['q_state_spread']:.4g} (ratio {report['q_action_over_state']:.3f})",
        "ensemble disagreement (std of heads), median: dataset chunks "
        f"{report['disagreement_dataset_median']:.4g}, "
        f"BC samples {report['disagreement_bc_median']:.4g}; suggested --gate {report['suggested_gate']:.4g} "
        f"(its {report['suggested_gate_quantile']:.0%} quantile on dataset chunks)",
        f"BC's nearest-dataset-chunk distance, median: {report['bc_nn_distance_median']:.4g}",
        f"| {report['sampler']} weight | NN distance | disagreement | mean Q |",
        "|---|---|---|---|",
    ]
    for row in report["weights"]:
        lines.append(
            f"| {row['weight']:g} | {row['nn_distance_median']:.4g} | {row['disagreement_median']:.4g} "
            f"| {row['q_mean']:.4g} |"
        )
    lines += [row["verdict"] for row in report["weights"]]
    return "\n".join(lines)
