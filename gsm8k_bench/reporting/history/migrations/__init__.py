"""Alembic migrations of the history's schema, oldest first (store.upgrade runs them)."""
