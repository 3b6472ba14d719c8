"""Reads of the history: a session's runs in time order with their gating level's accuracy, and a run's
per-question outcomes.  Every question the history answers starts here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Column, Connection, Integer, MetaData, Table, and_, cast, func, insert, select
from sqlalchemy.sql import ColumnElement

from gsm8k_bench.reporting.history.schema import metrics, outcomes, runs
from gsm8k_bench.verdicts import paired_stats

# What a run ran on: a change of any of these between two runs is marked (trend) and shown (first-bad).
PROVENANCE = ("image", "image_digest", "framework_version", "checkpoint")


@dataclass(frozen=True)
class StoredRun:
    id: int
    session: str
    started_at: dt.datetime
    status: str
    verdict: str | None
    model: str | None
    runner: str | None
    framework: str | None
    precision: str | None
    image: str | None
    image_digest: str | None
    framework_version: str | None
    checkpoint: str | None
    git_commit: str | None
    run_id: str | None
    ci_run_attempt: int | None
    workflow_run_id: str | None
    protocol: str | None
    question_limit: int | None
    gate_concurrency: int
    strict_match: float | None
    flexible_extract: float | None
    n: int | None

    @property
    def scored(self) -> bool:
        return self.strict_match is not None and bool(self.n)

    def provenance(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in PROVENANCE}

    @property
    def stack(self) -> tuple[str, str, str]:
        return (self.framework or "?", self.runner or "?", self.precision or "?")


def _gate_metric(name: str) -> ColumnElement[float]:
    """The gating level's value of one metric, as a scalar subquery per run."""
    return (select(metrics.c.value)
            .where(and_(metrics.c.run == runs.c.id, metrics.c.concurrency == runs.c.gate_concurrency,
                        metrics.c.metric == name))
            .scalar_subquery().label(name))


def _columns() -> list[ColumnElement[object]]:
    names = [f.name for f in StoredRun.__dataclass_fields__.values()][:-3]
    return [*(runs.c[name] for name in names), _gate_metric("strict_match"), _gate_metric("flexible_extract"),
            _gate_metric("n")]


def _stored(row: object) -> StoredRun:
    values = dict(row._mapping)  # type: ignore[attr-defined]
    values["n"] = int(values["n"]) if values["n"] is not None else None
    return StoredRun(**values)


def session_runs(connection: Connection, session: str) -> list[StoredRun]:
    """Every run of the session, oldest first."""
    query = select(*_columns()).where(runs.c.session == session).order_by(runs.c.started_at, runs.c.id)
    return [_stored(row) for row in connection.execute(query)]


def all_runs(connection: Connection) -> list[StoredRun]:
    """Every run, by session, oldest first."""
    query = select(*_columns()).order_by(runs.c.session, runs.c.started_at, runs.c.id)
    return [_stored(row) for row in connection.execute(query)]


def sessions(connection: Connection) -> list[str]:
    return list(connection.scalars(select(runs.c.session).distinct().order_by(runs.c.session)))


def run_outcomes(connection: Connection, run: StoredRun) -> dict[str, dict[str, bool]]:
    """metric -> question id (paired_stats.question_id) -> right, at the run's gating level."""
    query = (select(outcomes.c.doc_id, outcomes.c.question_hash, outcomes.c.strict, outcomes.c.flexible)
             .where(outcomes.c.run == run.id, outcomes.c.concurrency == run.gate_concurrency))
    by_metric: dict[str, dict[str, bool]] = {metric: {} for metric in paired_stats.CORRECT_FIELD}
    for doc_id, question_hash, strict, flexible in connection.execute(query):
        qid = f"{doc_id}:{question_hash}"
        by_metric["strict_match"][qid] = bool(strict)
        by_metric["flexible_extract"][qid] = bool(flexible)
    return by_metric


def strict_flips(connection: Connection, pairs: Sequence[tuple[StoredRun, StoredRun]]) -> list[tuple[int, int]]:
    """Per pair of runs (earlier, later), at each one's gating level: (questions both answered, questions
    whose strict outcome differs).  One query for them all: the pairs go into a temporary table of this
    connection, joined to both runs' outcomes and counted per pair by the database."""
    if not pairs:
        return []
    pair_table = Table("flip_pairs", MetaData(), Column("pair", Integer, primary_key=True),
                       Column("a_run", Integer), Column("a_level", Integer),
                       Column("b_run", Integer), Column("b_level", Integer), prefixes=["TEMPORARY"])
    pair_table.create(connection)
    try:
        connection.execute(insert(pair_table), [
            {"pair": index, "a_run": a.id, "a_level": a.gate_concurrency, "b_run": b.id, "b_level": b.gate_concurrency}
            for index, (a, b) in enumerate(pairs)])
        a, b = outcomes.alias("a"), outcomes.alias("b")
        query = (select(pair_table.c.pair, func.count(), func.sum(cast(a.c.strict != b.c.strict, Integer)))
                 .select_from(pair_table
                              .join(a, and_(a.c.run == pair_table.c.a_run, a.c.concurrency == pair_table.c.a_level))
                              .join(b, and_(b.c.run == pair_table.c.b_run, b.c.concurrency == pair_table.c.b_level,
                                            b.c.doc_id == a.c.doc_id, b.c.question_hash == a.c.question_hash)))
                 .group_by(pair_table.c.pair))
        counted = {pair: (int(common), int(flipped or 0)) for pair, common, flipped in connection.execute(query)}
    finally:
        pair_table.drop(connection)
    return [counted.get(index, (0, 0)) for index in range(len(pairs))]
