"""The text views of `qgf report`: CSV tables and report.md (success in %, with CIs).

Formats what `stats` and `weight_choice` computed; computes nothing itself. May import the
standard library only (no numpy, no plotting, nothing of this package).
"""

from __future__ import annotations

import csv
import io

# The thresholds shown in report.md's profile table.
PROFILE_TABLE_TAUS = (0.25, 0.5, 0.75)


def csv_text(rows: list[dict]) -> str:
    """`rows` (dicts with the same keys) as CSV with a header; '' for no rows."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def pct(value: float) -> str:
    """A success rate in [0, 1] as a percentage with one decimal."""
    return f"{100 * value:.1f}"


def markdown(
    numbers: dict,
    protocol: dict | None,
    figures: list[str],
    offline: dict | None = None,
    ignored: list[str] = (),
) -> str:
    """report.md: the tables of `numbers` (`stats.aggregate`), the protocol's choices, the offline
    weight choice (`weight_choice.offline_report`), links to `figures` and the `ignored`
    evaluations (results.json of no job of the sweep's spec)."""
    lines = [f"# Sweep report (stage: {numbers['stage']})", ""]
    lines += ["Success rates in %; 95% bootstrap CIs over seeds (rliable; across tasks: stratified).", ""]
    lines += [
        "## Across tasks",
        "",
        "| method | IQM | IQM 95% CI | mean | mean 95% CI |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(numbers["aggregate"], key=lambda r: -r["iqm"]):
        lines.append(
            f"| {row['method']} | {pct(row['iqm'])} | [{pct(row['iqm_low'])}, {pct(row['iqm_high'])}] "
            f"| {pct(row['mean'])} | [{pct(row['mean_low'])}, {pct(row['mean_high'])}] |"
        )
    if numbers["improvement"]:
        lines += [
            "",
            "## Probability of improvement",
            "",
            "| P(X > Y) | Y | P | 95% CI |",
            "|---|---|---|---|",
        ]
        for row in numbers["improvement"]:
            lines.append(
                f"| {row['method']} | {row['over']} | {row['probability']:.2f} | "
                f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}] |"
            )
    if numbers.get("profiles"):
        taus = [tau for tau in PROFILE_TABLE_TAUS if tau in {r["tau"] for r in numbers["profiles"]}]
        lines += [
            "",
            "## Performance profiles",
            "",
            "Fraction of runs (seeds x tasks) with success > tau, 95% stratified-bootstrap CIs "
            "(rliable); every tau in `performance_profiles.csv` and `performance_profiles.png`.",
            "",
            "| method | " + " | ".join(f"> {100 * tau:g}%" for tau in taus) + " |",
            "|---|" + "---|" * len(taus),
        ]
        by_key = {(r["method"], r["tau"]): r for r in numbers["profiles"]}
        for name in dict.fromkeys(r["method"] for r in numbers["profiles"]):
            cells = [by_key[(name, tau)] for tau in taus]
            lines.append(
                f"| {name} | "
                + " | ".join(f"{c['fraction']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]" for c in cells)
                + " |"
            )
    lines += [
        "",
        "## Per task (mean over seeds)",
        "",
        "| task | method | mean | 95% CI | seeds |",
        "|---|---|---|---|---|",
    ]
    for row in numbers["per_task"]:
        lines.append(
            f"| {row['task']} | {row['method']} | {pct(row['mean'])} | "
            f"[{pct(row['ci_low'])}, {pct(row['ci_high'])}] | {row['seeds']} |"
        )
    if numbers["incomplete"]:
        lines += [
            "",
            f"Left out (not evaluated on every task and seed yet): {', '.join(numbers['incomplete'])}",
        ]
    if protocol:
        rule = (
            f"Rule: {protocol['rule']}; tuning tasks {protocol['tune_tasks']} (evaluation seed "
            f"{protocol['tune_seed']}), final evaluation seed {protocol['final_seed']}."
        )
        lines += ["", "## Protocol choices (QGF App. J)", "", rule, ""]
        lines += [
            "| method | domain | chosen | weight | tuning success | on the grid's edge |",
            "|---|---|---|---|---|---|",
        ]
        for choice in protocol["choices"]:
            edge = ", ".join(choice.get("on_grid_edge", [])) or "no"
            lines.append(
                f"| {choice['method']} | {choice['domain']} | {choice['point']} | {choice['weight']:g} "
                f"| {pct(choice['tune_success'])} | {edge} |"
            )
        if protocol.get("pending"):
            lines += ["", f"Still tuning (no final runs yet): {', '.join(protocol['pending'])}."]
        if any(choice.get("on_grid_edge") for choice in protocol["choices"]):
            lines += [
                "",
                "A choice on its grid's edge may lie beyond the grid: widen the grid before trusting "
                "that method's row.",
            ]
    if offline is not None:
        lines += offline_markdown(offline)
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    if ignored:
        lines += ["", "## Ignored evaluations", ""]
        lines += [
            f"{len(ignored)} results.json under evals/ belong to no job of this sweep's spec.json (an "
            "earlier spec, or other evaluation settings) and are left out of every table:",
            "",
        ]
        lines += [f"- `{path}`" for path in ignored]
    return "\n".join(lines) + "\n"


def offline_markdown(offline: dict) -> list[str]:
    """The report.md section of the offline weight choice (`qgf.experiments.offline`)."""
    lines = ["", "## Offline choice of the guidance weight (no rollouts)", "", f"Rule: {offline['rule']}."]
    lines += [
        "Regret = tuning success at the rollout choice - tuning success at the offline choice "
        "(points of success in %); the final stage evaluates only the rollout choice, so its "
        "regret is known only where both choices agree.",
        "",
    ]
    if offline["rows"]:
        lines += [
            "| method | domain | rollout w | offline w | tuning success rollout | tuning success offline "
            "| regret (tune) | regret (final) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in offline["rows"]:
            final = (
                pct(row["final_regret"]) if row["final_regret"] is not None else f"n/a ({row['final_note']})"
            )
            flag = " (fallback: none admissible)" if row["fallback"] else ""
            lines.append(
                f"| {row['method']} | {row['domain']} | {row['rollout_weight']:g} | "
                f"{row['offline_weight']:g}{flag} | {pct(row['tune_success_rollout'])} | "
                f"{pct(row['tune_success_offline'])} | {pct(row['tune_regret'])} | {final} |"
            )
    else:
        lines.append("No method with a guidance-weight grid had tuning runs to measure.")
    if offline.get("notes"):
        lines += ["", "Left out: " + "; ".join(offline["notes"])]
    return lines
