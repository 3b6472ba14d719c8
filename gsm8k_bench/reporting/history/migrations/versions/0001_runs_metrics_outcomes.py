"""The first schema: runs, metrics per level, outcomes per question and level.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_key", sa.String(300), nullable=False, unique=True),
        sa.Column("session", sa.String(200), nullable=False),
        sa.Column("model", sa.String(100)),
        sa.Column("runner", sa.String(50)),
        sa.Column("framework", sa.String(50)),
        sa.Column("precision", sa.String(20)),
        sa.Column("tp", sa.Integer),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("verdict", sa.String(20)),
        sa.Column("image", sa.String(300)),
        sa.Column("image_digest", sa.String(300)),
        sa.Column("framework_version", sa.String(100)),
        sa.Column("checkpoint", sa.String(300)),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("run_id", sa.String(100)),
        sa.Column("ci_run_attempt", sa.Integer),
        sa.Column("protocol", sa.Text),
        sa.Column("question_limit", sa.Integer),
        sa.Column("gate_concurrency", sa.Integer),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
    )
    op.create_index("runs_by_session", "runs", ["session", "started_at"])
    op.create_table(
        "metrics",
        sa.Column("run", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("concurrency", sa.Integer, primary_key=True),
        sa.Column("metric", sa.String(50), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "outcomes",
        sa.Column("run", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("concurrency", sa.Integer, primary_key=True),
        sa.Column("doc_id", sa.Integer, primary_key=True),
        sa.Column("question_hash", sa.String(10), nullable=False),
        sa.Column("strict", sa.Boolean, nullable=False),
        sa.Column("flexible", sa.Boolean, nullable=False),
        sqlite_with_rowid=False,
    )
