"""The results history: every run's JSON, ingested into a database, and the questions it answers over time
(`nox -s history -- ingest|trend|first-bad|noise`).  SQLite by default, PostgreSQL for a team, one code
path (SQLAlchemy Core, Alembic migrations); docs/history.md.

Imports: core, matrix, serving, evaluation, verdicts, reporting.
"""
