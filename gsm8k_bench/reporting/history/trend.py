"""`history trend SESSION`: the session's accuracy per run over time, with its Wilson bounds at the gate's
confidence, each change of image, digest, framework version or checkpoint marked; a table and a PNG."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.reporting.history import queries
from gsm8k_bench.verdicts import gate, paired_stats


@dataclass(frozen=True)
class TrendPoint:
    run: queries.StoredRun
    lower: float | None  # Wilson bounds of strict-match accuracy, each one-sided at the gate's confidence
    upper: float | None
    changes: list[str]  # "image: a -> b", against the run before it


def changes(before: queries.StoredRun | None, run: queries.StoredRun) -> list[str]:
    if before is None:
        return []
    old, new = before.provenance(), run.provenance()
    return [f"{name}: {old[name]} -> {new[name]}" for name in queries.PROVENANCE if old[name] != new[name]]


def trend(connection: Connection, session: str, settings: gate.GateSettings) -> list[TrendPoint]:
    runs = queries.session_runs(connection, session)
    if not runs:
        known = queries.sessions(connection)
        raise BenchError(f"no run of {session} in the history ({len(known)} sessions stored"
                         + (f", e.g. {', '.join(known[:3])})" if known else ")"))
    return points(runs, settings)


def points(runs: Sequence[queries.StoredRun], settings: gate.GateSettings) -> list[TrendPoint]:
    """Each run (oldest first) with its bounds and what changed since the run before it."""
    z = paired_stats.z_one_sided(settings.confidence)
    found = []
    for index, run in enumerate(runs):
        lower, upper = (paired_stats.wilson_interval(run.strict_match, run.n, z)
                        if run.strict_match is not None and run.n else (None, None))
        found.append(TrendPoint(run, lower, upper, changes(runs[index - 1] if index else None, run)))
    return found


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def table(points: Sequence[TrendPoint], confidence: float) -> str:
    lines = [f"{'started (UTC)':16}  {'strict':>6}  {f'bounds ({confidence:.0%} each)':>17}  {'n':>5}  "
             f"{'status':8}  {'verdict':10}  changed"]
    for point in points:
        run = point.run
        bounds = f"[{_number(point.lower)}, {_number(point.upper)}]" if point.lower is not None else "–"
        lines.append(f"{run.started_at:%Y-%m-%d %H:%M}  {_number(run.strict_match):>6}  {bounds:>17}  "
                     f"{run.n or '–':>5}  {run.status:8}  {run.verdict or '–':10}  {'; '.join(point.changes)}")
    return "\n".join(lines)


def _days(moment: dt.datetime) -> float:
    """A UTC time as matplotlib's dates are: days since 1970-01-01."""
    return (moment - dt.datetime(1970, 1, 1)).total_seconds() / 86400


def plot(points: Sequence[TrendPoint], session: str, path: Path) -> Path:
    """Accuracy and its bounds over time; a dashed line at every provenance change, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [p for p in points if p.lower is not None and p.upper is not None]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    if scored:
        times = [_days(p.run.started_at) for p in scored]
        values = [p.run.strict_match or 0.0 for p in scored]
        ax.errorbar(times, values, yerr=[[v - (p.lower or 0.0) for v, p in zip(values, scored, strict=True)],
                                         [(p.upper or 0.0) - v for v, p in zip(values, scored, strict=True)]],
                    fmt="o-", markersize=3, capsize=2, linewidth=0.8, label="strict-match (Wilson bounds)")
    for point in points:
        if point.changes:
            ax.axvline(_days(point.run.started_at), color="tab:red", linestyle="--", linewidth=0.8)
            ax.annotate("\n".join(c.split(":")[0] for c in point.changes), (_days(point.run.started_at), 1.0),
                        xycoords=("data", "axes fraction"), fontsize=7, color="tab:red", va="top", rotation=90)
    ax.set_title(f"{session}: accuracy per run", loc="left")
    ax.set_ylabel("GSM8k accuracy")
    ax.xaxis_date()
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
