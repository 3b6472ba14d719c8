"""report.html's history section, when a history is configured: per session of the report, its last
runs' strict-match accuracy from the history (provenance changes marked), the flip rate between those of
them that are consecutive healthy runs with identical provenance (the recent A/A noise, as `noise`
counts it), and the command that finds the first bad run when the newest run is not healthy.

Configured means GSM8K_HISTORY_URL is set, or the default SQLite file exists: the report never creates a
database (opening one brings its schema up to date, as every history command does).
"""

from __future__ import annotations

import html
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from gsm8k_bench.reporting.history import noise, queries, store, trend
from gsm8k_bench.verdicts import gate, paired_stats

RECENT_RUNS = 10


def configured_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The history the report reads, or None when none is configured."""
    environ = os.environ if environ is None else environ
    if environ.get(store.URL_VARIABLE):
        return environ[store.URL_VARIABLE]
    return f"sqlite:///{store.default_path()}" if store.default_path().is_file() else None


@dataclass(frozen=True)
class SessionHistory:
    session: str
    stored_runs: int  # every run of the session in the history
    recent: list[trend.TrendPoint]  # the last RECENT_RUNS, oldest first
    flipped: int  # over the recent consecutive healthy pairs with identical provenance
    common: int
    pairs: int


def collect(url: str, sessions: Sequence[str], settings: gate.GateSettings) -> list[SessionHistory]:
    """The sessions' recent history (sessions the history has no run of are left out)."""
    engine = store.open_store(url)
    try:
        with engine.connect() as connection:
            recent = {}
            for session in sessions:
                runs = queries.session_runs(connection, session)
                if runs:
                    recent[session] = (len(runs), runs[-RECENT_RUNS - 1:])  # one more: the first shown's changes
            pairs = {session: [(a, b) for a, b in itertools.pairwise(runs[-RECENT_RUNS:])
                               if noise.healthy(a) and noise.healthy(b) and noise.same_provenance(a, b)]
                     for session, (_, runs) in recent.items()}
            flips = iter(queries.strict_flips(connection, [p for session in recent for p in pairs[session]]))
            found = []
            for session, (stored, runs) in recent.items():
                counted = [next(flips) for _ in pairs[session]]
                points = trend.points(runs, settings)[-RECENT_RUNS:]
                found.append(SessionHistory(session, stored, points, sum(f for _, f in counted),
                                            sum(c for c, _ in counted), sum(1 for c, _ in counted if c)))
            return found
    finally:
        engine.dispose()


def _accuracy(point: trend.TrendPoint) -> str:
    run = point.run
    value = "–" if run.strict_match is None else f"{run.strict_match:.3f}"
    title = f"{run.started_at:%Y-%m-%d %H:%M} UTC, {run.status}" + (f", {run.verdict}" if run.verdict else "")
    if point.changes:
        title += "; " + "; ".join(point.changes)
    marked = " class='bad'" if not noise.healthy(run) else ""
    change = "<sup title='provenance changed'>▲</sup>" if point.changes else ""
    return f"<td{marked} title='{html.escape(title, quote=True)}'>{value}{change}</td>"


def section_html(histories: Sequence[SessionHistory], shown_url: str, settings: gate.GateSettings) -> str:
    """The section's HTML: a table, one row per session, its last runs oldest to newest."""
    intro = (f"<p>From the history {html.escape(shown_url)}: each session's last {RECENT_RUNS} runs' strict-match "
             "accuracy, oldest first (hover for the date, status and what changed; ▲ marks a change of image, "
             "digest, framework version or checkpoint; red: not a healthy run); the flip rate between its "
             "consecutive healthy runs with identical provenance among them (the recent A/A noise, with "
             f"Wilson bounds at {settings.confidence:.0%} each side); and, when the newest run is not healthy, "
             "the command that finds the first bad run. docs/history.md has the rest.</p>")
    if not histories:
        return intro + "<p>No session of this report has a run in the history yet.</p>"
    z = paired_stats.z_one_sided(settings.confidence)
    rows = []
    for entry in histories:
        cells = "<td></td>" * (RECENT_RUNS - len(entry.recent)) + "".join(_accuracy(p) for p in entry.recent)
        if entry.common:
            lower, upper = paired_stats.wilson_interval(entry.flipped / entry.common, entry.common, z)
            flips = (f"{entry.flipped / entry.common:.4f} [{lower:.4f}, {upper:.4f}] over {entry.pairs} "
                     f"pair{'s' if entry.pairs != 1 else ''}")
        else:
            flips = "– (no two consecutive healthy runs with identical provenance)"
        newest = entry.recent[-1].run
        pointer = ("" if noise.healthy(newest)
                   else f"<code>nox -s history -- first-bad {html.escape(entry.session)}</code>")
        rows.append(f"<tr><td>{html.escape(entry.session)}</td><td>{entry.stored_runs}</td>{cells}"
                    f"<td>{flips}</td><td>{pointer}</td></tr>")
    head = ("<tr><th>session</th><th>runs stored</th>"
            + "".join(f"<th>{'newest' if i == RECENT_RUNS else i}</th>" for i in range(1, RECENT_RUNS + 1))
            + "<th>flip rate (recent)</th><th>newest not healthy</th></tr>")
    return intro + f"<table id='history'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def section(sessions: Sequence[str], settings: gate.GateSettings, environ: Mapping[str, str] | None = None
            ) -> str | None:
    """The section for report.html, or None when no history is configured; a HistoryError when the
    configured one cannot be read."""
    url = configured_url(environ)
    if url is None:
        return None
    shown = store.shown(store.parse_url(url))
    try:
        histories = collect(url, sessions, settings)
    except SQLAlchemyError as exc:  # opened, then a read failed (a server gone mid-way)
        orig = getattr(exc, "orig", None)
        raise store.HistoryError(f"cannot read the history {shown}: "
                                 f"{str(orig or exc).strip().splitlines()[0]}") from None
    return section_html(histories, shown, settings)
