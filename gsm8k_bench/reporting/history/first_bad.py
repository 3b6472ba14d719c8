"""`history first-bad SESSION`: walking the session's runs in time order, the first one that a paired
comparison with the last healthy run before it calls a regression (the gate's statistics and settings:
run_comparison, paired_stats) — with both runs' provenance side by side and the questions it lost.

A run is healthy when it scored and was not called a regression by this walk.  Runs of another protocol
(a changed protocol record) are never compared: the walk starts again from the first run of the new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from gsm8k_bench.reporting.history import queries
from gsm8k_bench.verdicts import gate, paired_stats, run_comparison


@dataclass(frozen=True)
class FirstBad:
    healthy: queries.StoredRun
    bad: queries.StoredRun
    numbers: dict[str, run_comparison.MetricNumbers]
    lost: dict[str, list[int]]  # metric -> doc_ids right in the healthy run, wrong in the bad one
    compared_runs: int  # runs walked before the bad one was found


def compare_runs(reference: dict[str, dict[str, bool]], run: dict[str, dict[str, bool]],
                 settings: gate.GateSettings) -> tuple[dict[str, run_comparison.MetricNumbers], dict[str, list[int]]]:
    """Paired numbers per metric over the questions both answered, and the questions lost per metric."""
    numbers, lost = {}, {}
    for metric in run_comparison.METRICS:
        ids, before, now = paired_stats.align(reference[metric], run[metric])
        if not ids:
            return {}, {}
        numbers[metric] = run_comparison.metric_numbers(paired_stats.compare(before, now, settings.confidence),
                                                        settings.tolerance)
        lost[metric] = paired_stats.discordant(ids, before, now)[0]
    return numbers, lost


def first_bad(connection: Connection, session: str, settings: gate.GateSettings) -> tuple[FirstBad | None, int]:
    """The first regression in the session's history (None when there is none) and the runs walked."""
    healthy: queries.StoredRun | None = None
    healthy_outcomes: dict[str, dict[str, bool]] = {}
    walked = 0
    for run in queries.session_runs(connection, session):
        if not run.scored:
            continue
        walked += 1
        outcomes = queries.run_outcomes(connection, run)
        if healthy is not None and healthy.protocol == run.protocol:
            numbers, lost = compare_runs(healthy_outcomes, outcomes, settings)
            if numbers and run_comparison.verdict(numbers) == run_comparison.REGRESSION:
                return FirstBad(healthy, run, numbers, lost, walked), walked
        healthy, healthy_outcomes = run, outcomes
    return None, walked


def describe(found: FirstBad | None, session: str, walked: int) -> str:
    if found is None:
        return f"{session}: no regression in {walked} scored runs"
    healthy, bad = found.healthy, found.bad
    fields = ("started_at", *queries.PROVENANCE, "git_commit", "run_id", "workflow_run_id", "ci_run_attempt",
              "status", "verdict")
    width = max(len(f) for f in fields)
    lines = [f"{session}: the first bad run is {bad.started_at:%Y-%m-%d %H:%M} UTC (run {bad.run_id}), "
             f"run {found.compared_runs} of the history, against the healthy run before it:", "",
             f"  {'':{width}}  {'last healthy':40}  first bad"]
    for name in fields:
        a, b = getattr(healthy, name), getattr(bad, name)
        lines.append(f"{'*' if a != b and name != 'started_at' else ' '} {name:{width}}  {a!s:40}  {b}")
    lines.append("")
    for metric, numbers in found.numbers.items():
        lines.append(f"  {metric}: {numbers['reference']:.4f} -> {numbers['run']:.4f} "
                     f"({numbers['difference']:+.4f}, upper bound {numbers['upper']:+.4f}, "
                     f"McNemar p={numbers['mcnemar_p']:.3g}, -{numbers['lost']} +{numbers['gained']})")
    for metric, doc_ids in found.lost.items():
        lines.append(f"  lost under {metric} ({len(doc_ids)}): {', '.join(map(str, doc_ids))}")
    return "\n".join(lines)
