"""The history's tables as they are at the newest migration (migrations/versions/ create them; queries
and inserts use these definitions).

- runs: one row per run of a session (a session JSON), keyed by `run_key` (session, run id, start and
  CI attempt): the same run ingested twice is one row.
- metrics: per run x concurrency level x metric, every number the JSON holds for that level.
- outcomes: per run x concurrency level x question, strict and flexible right or wrong.  The question is
  `doc_id` plus the hash of its text (paired_stats.question_id), so a changed dataset never pairs other
  questions.  Responses stay in the JSON.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_key", String(300), nullable=False, unique=True),
    Column("session", String(200), nullable=False),
    Column("model", String(100)),
    Column("runner", String(50)),
    Column("framework", String(50)),
    Column("precision", String(20)),
    Column("tp", Integer),
    Column("status", String(10), nullable=False),
    Column("verdict", String(20)),
    Column("image", String(300)),
    Column("image_digest", String(300)),
    Column("framework_version", String(100)),
    Column("checkpoint", String(300)),
    Column("git_commit", String(64)),
    Column("run_id", String(100)),
    Column("ci_run_attempt", Integer),
    Column("workflow_run_id", String(40)),
    Column("protocol", Text),  # the protocol record as canonical JSON
    Column("question_limit", Integer),
    Column("gate_concurrency", Integer),
    Column("started_at", DateTime, nullable=False),  # UTC
    Column("source", Text, nullable=False),  # the file it was ingested from
    Index("runs_by_session", "session", "started_at"),
    Index("runs_by_stack", "framework", "runner", "precision"),
)

metrics = Table(
    "metrics", metadata,
    Column("run", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("concurrency", Integer, primary_key=True),
    Column("metric", String(50), primary_key=True),
    Column("value", Float, nullable=False),
    sqlite_with_rowid=False,
)

outcomes = Table(
    "outcomes", metadata,
    Column("run", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("concurrency", Integer, primary_key=True),
    Column("doc_id", Integer, primary_key=True),
    Column("question_hash", String(10), nullable=False),
    Column("strict", Boolean, nullable=False),
    Column("flexible", Boolean, nullable=False),
    sqlite_with_rowid=False,
)
