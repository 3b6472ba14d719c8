"""The GitHub workflow run a run belongs to, and an index for `noise`'s per-stack reads.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("runs", sa.Column("workflow_run_id", sa.String(40)))
    op.create_index("runs_by_stack", "runs", ["framework", "runner", "precision"])
