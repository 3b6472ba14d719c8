"""Alembic's entry point: store.upgrade hands it an open connection inside a transaction that holds the
store's migration lock, so two processes never migrate at once."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
