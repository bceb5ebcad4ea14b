"""The tuning protocol's choice (QGF App. J) from a sweep's finished tuning evaluations."""

from __future__ import annotations

import json
from pathlib import Path

from qgf.experiments.naming import domain_of
from qgf.experiments.spec import SweepSpec, method_name


def protocol_choices(spec: SweepSpec, groups, tune_jobs) -> dict:
    """The paper's choice (QGF App. J): per method and domain, the candidate (grid point, weight)
    with the highest success averaged over the tuning tasks and seeds; ties go to the earlier
    candidate (smaller weight, earlier grid point). Evidence: every candidate's mean per task."""
    from qgf.evaluation.results import read_results

    # A candidate is (group, the sampler's whole spec, weight): a label can be shared by samplers
    # that differ in a field it does not show (GradStep's K), and those must not be pooled.
    scores: dict[tuple[str, str], dict[tuple[str, str, float], dict[str, list[float]]]] = {}
    labels: dict[tuple[str, str, float], str] = {}
    for job in tune_jobs:
        results = read_results(Path(job.out) / "results.json")
        group = job.params["group"]
        agent = next(g.agent for g in groups if g.name == group)
        domain = domain_of(job.params["task"])
        for index, condition in enumerate(results.results):
            methods = job.params.get("methods")
            method = methods[index] if methods else method_name(agent, condition.label)
            sampler = job.params["conditions"][index]["spec"]
            candidate = (group, json.dumps(sampler, sort_keys=True), float(condition.weight))
            labels[candidate] = condition.label
            bucket = scores.setdefault((method, domain), {}).setdefault(candidate, {})
            bucket.setdefault(job.params["task"], []).append(condition.success_rate)
    choices = []
    for (method, domain), candidates in sorted(scores.items()):
        evidence = []
        for candidate, per_task in candidates.items():
            group, sampler, weight = candidate
            means = {task: sum(v) / len(v) for task, v in per_task.items()}
            evidence.append(
                {
                    "group": group,
                    "sampler": labels[candidate],
                    "spec": json.loads(sampler),
                    "point": next(g.point_label for g in groups if g.name == group),
                    "weight": weight,
                    "success_per_task": means,
                    "success": sum(means.values()) / len(means),
                }
            )
        best = max(evidence, key=lambda e: e["success"])  # max keeps the first of equals
        domain_tasks = [task for task in spec.tasks if domain_of(task) == domain]
        # A choice on the edge of its grid may lie beyond it (issue 20: grids wide enough that the
        # choice is interior): the report flags it.
        edge = []
        weights = sorted({e["weight"] for e in chosen_sampler(evidence, best)})
        if len(weights) > 1 and best["weight"] in (weights[0], weights[-1]):
            edge.append("weight")
        chosen = next(g for g in groups if g.name == best["group"])
        for key, values in chosen.agent.grid.items():
            if len(values) > 1 and chosen.point[key] in (min(values), max(values)):
                edge.append(key)
        choices.append(
            {
                "method": method,
                "domain": domain,
                "group": best["group"],
                "point": best["point"],
                "weight": best["weight"],
                "spec": best["spec"],
                "tune_success": best["success"],
                "on_grid_edge": edge,
                "tasks": domain_tasks,
                "evidence": evidence,
            }
        )
    return {
        "rule": "argmax over candidates of mean success on the tuning tasks (ties: first candidate)",
        "tune_tasks": spec.protocol["tune_tasks"],
        "tune_seed": spec.protocol["tune_seed"],
        "final_seed": spec.protocol["final_seed"],
        "tune_seeds": list(spec.protocol.get("tune_seeds", spec.seeds)),
        "choices": choices,
    }


def chosen_sampler(evidence: list[dict], choice: dict) -> list[dict]:
    """The evidence of `choice`'s run group and sampler at each of its weights (protocol.json
    written before evidence carried "spec" tells samplers apart by group alone)."""
    group, spec = choice["group"], choice.get("spec")
    return [e for e in evidence if e["group"] == group and e.get("spec", spec) == spec]
