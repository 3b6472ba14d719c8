"""`nox -s history -- ingest PATH...`: session JSONs, results folders and downloaded artifacts
(`<folder>/<artifact>/<session>.json`, found by the report's own reader of results folders) into the history.

- Idempotent: a run is stored under its natural key (records.run_key); the same run again is skipped.
- All or nothing per run: one transaction per run (the run, its metrics, its outcomes); a killed ingest
  leaves the runs it committed and nothing of the one it was writing.
- Two ingests at once store each run once: the second to reach a run finds it (or loses the race on the
  unique key and finds it then).
- A malformed file is refused with its path and key; nothing of it is written; the others are stored and
  the command fails.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gsm8k_bench.core import folder_reader
from gsm8k_bench.reporting.history import records, store
from gsm8k_bench.reporting.history.schema import metrics, outcomes, runs
from gsm8k_bench.reporting.history.store import HistoryError
from gsm8k_bench.serving import procs

# Below this many files, reading them here is quicker than starting workers; more than this many workers
# only queue for the store.
PARALLEL_FROM = 8
MAX_READERS = 4


@dataclass
class Ingested:
    stored: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    refused: list[records.MalformedRun] = field(default_factory=list)
    not_sessions: list[Path] = field(default_factory=list)


def candidate_files(paths: Iterable[Path]) -> Iterator[tuple[Path, bool]]:
    """(file, named on the command line) for every session JSON to ingest."""
    for path in paths:
        if path.is_file():
            yield path, True
        elif path.is_dir():
            yield from ((found, False) for found in folder_reader.json_files(path))
        else:
            raise HistoryError(f"{path}: no such file or results folder")


def insert_many(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT many plain rows (ints, floats, strings, bools) in the connection's transaction, the fast way
    each database has: PostgreSQL's COPY (executemany costs it a statement per question: about twice the
    time of a run's store, measured); SQLite's executemany of the statement compiled once, without
    SQLAlchemy's per-row parameter processing (which was half of a run's store)."""
    if not rows:
        return
    names = list(rows[0])
    if connection.dialect.name == "postgresql":
        quoted = ", ".join(connection.dialect.identifier_preparer.quote(name) for name in names)
        cursor: Any = connection.connection.cursor()  # psycopg's, in this same transaction
        with cursor.copy(f"COPY {table.name} ({quoted}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[name] for name in names])
        return
    compiled = insert(table).compile(dialect=connection.dialect, column_keys=names)
    order = compiled.positiontup or names
    connection.exec_driver_sql(str(compiled), [tuple(row[name] for name in order) for row in rows])


def store_run(engine: Engine, rows: records.RunRows) -> bool:
    """Store one run in one transaction; False when it was there already."""
    with engine.connect().execution_options(writer=True) as connection:
        try:
            with connection.begin():
                if connection.execute(select(runs.c.id).where(runs.c.run_key == rows.key)).first():
                    return False
                key = connection.execute(insert(runs).values(rows.run)).inserted_primary_key
                assert key is not None  # an INSERT of one row always has one
                run_id = key[0]
                insert_many(connection, metrics, [{**row, "run": run_id} for row in rows.metrics])
                insert_many(connection, outcomes, [{**row, "run": run_id} for row in rows.outcomes])
        except IntegrityError:
            # Another ingest committed the same run between our look and our insert: its copy stands.
            with connection.begin():
                if connection.execute(select(runs.c.id).where(runs.c.run_key == rows.key)).first():
                    return False
            raise
    return True


def checked_rows(path: Path, workflow_run_id: str | None) -> records.RunRows | records.MalformedRun:
    """The file read, checked through the session JSON's model and made rows, or why it cannot be."""
    try:
        return records.rows_of(path, records.read(path), workflow_run_id=workflow_run_id)
    except records.MalformedRun as exc:
        return exc


def checked_in_order(files: Sequence[Path], workflow_run_id: str | None
                     ) -> Iterator[records.RunRows | records.MalformedRun]:
    """checked_rows of each file, in order.  Many files are read by worker processes (one per core, at
    most a few files ahead of the store) while this process stores: reading and checking a session JSON
    costs about as much CPU as storing it.  The workers die with this process (a killed ingest leaves none)."""
    workers = min(len(files), os.cpu_count() or 1, MAX_READERS)
    if workers < 2 or len(files) < PARALLEL_FROM:
        yield from (checked_rows(path, workflow_run_id) for path in files)
        return
    ahead: deque[Future[records.RunRows | records.MalformedRun]] = deque()
    pending = iter(files)
    context = multiprocessing.get_context("fork")  # workers start at once, from what is imported already
    with ProcessPoolExecutor(workers, mp_context=context, initializer=procs.die_with_parent(os.getpid())) as pool:
        for path in itertools.islice(pending, 2 * workers):
            ahead.append(pool.submit(checked_rows, path, workflow_run_id))
        while ahead:
            result = ahead.popleft().result()
            for path in itertools.islice(pending, 1):
                ahead.append(pool.submit(checked_rows, path, workflow_run_id))
            yield result


def ingest(engine: Engine, paths: Iterable[Path], log: Callable[[str], None] = print,
           workflow_run_id: str | None = None) -> Ingested:
    """Ingest every session JSON under `paths`, one run at a time."""
    done = Ingested()
    files = list(candidate_files(paths))
    for (path, named), rows in zip(files, checked_in_order([f for f, _ in files], workflow_run_id), strict=True):
        if isinstance(rows, records.MalformedRun):
            if not named and rows.key == "schema":
                done.not_sessions.append(path)  # another JSON beside the results, as the report skips them
                continue
            done.refused.append(rows)
            log(f"refused {rows}")
            continue
        if store_run(engine, rows):
            done.stored.append(rows.key)
            log(f"stored {rows.run['session']} ({rows.run['started_at']:%Y-%m-%d %H:%M} UTC, {path})")
        else:
            done.already.append(rows.key)
            log(f"already stored {rows.run['session']} ({path})")
    return done


def ingest_result(path: Path, url: str | None = None) -> str:
    """A session's own JSON into the configured history (`--history`): the line saying where it went, or a
    HistoryError saying why not (the password hidden) and how to catch up later."""
    engine: Engine | None = None
    where = "the history"
    try:
        engine = store.open_store(url)
        where = f"the history {store.shown(engine.url)}"
        rows = records.rows_of(path, records.read(path))
        return (f"history: stored {path} in {where}" if store_run(engine, rows)
                else f"history: {path} was already stored in {where}")
    except (HistoryError, records.MalformedRun, SQLAlchemyError, OSError) as exc:
        orig = getattr(exc, "orig", None)  # the driver's own error, under SQLAlchemy's
        reason = str(orig).strip().splitlines()[0] if orig else str(exc)
        raise HistoryError(f"{path} was not stored in {where}: {reason}; the session's result stands; "
                           f"store it later with: nox -s history -- ingest {path}") from None
    finally:
        if engine is not None:
            engine.dispose()
