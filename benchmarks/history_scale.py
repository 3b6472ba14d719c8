"""The results history at the matrix's size, into SQLite and into PostgreSQL (a private cluster).

    python benchmarks/history_scale.py [--days 30] [--backends sqlite,postgresql] [--year-runs] [--year-slice N]

1. One whole-matrix dispatch: every matrix.yaml session x 1,319 questions x 2 concurrency levels, written
   as downloaded artifacts (<folder>/<artifact>/<session>.json), then `ingest` (reading, checking and
   storing every file, as `nox -s history -- ingest` does).
2. A history of --days nightly dispatches of the whole matrix (365 is a year; on a shared machine a
   slice, the year extrapolated and labelled so), stored through the same per-run transactions; then
   `trend` and `first-bad` over one session, and the database's size.
3. --year-slice N: a whole year (365 nightly runs, every outcome) of N sessions in a new database, its
   size measured; the full matrix's year is that per session x the matrix's sessions.
Generated outcomes: tests/fakes/history_runs.py (known flip rate, an image bump with a drop on the last
day of the history for first-bad to find).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import postgres_cluster  # noqa: E402
from fakes.history_runs import Nightly  # noqa: E402
from sqlalchemy import Engine, func, select, text  # noqa: E402

from gsm8k_bench.matrix.loader import load_matrix  # noqa: E402
from gsm8k_bench.reporting.history import first_bad, ingest, records, store, trend  # noqa: E402
from gsm8k_bench.reporting.history.schema import outcomes  # noqa: E402
from gsm8k_bench.verdicts import gate  # noqa: E402

LEVELS = (1, 64)
QUESTIONS = 1319


def size_bytes(engine: Engine, url: str) -> int:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            return int(connection.scalar(text("SELECT pg_database_size(current_database())")))
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return Path(url.removeprefix("sqlite:///")).stat().st_size


def server_cpu_s(cluster: postgres_cluster.Cluster | None) -> float:
    """CPU seconds the PostgreSQL server has used so far: the postmaster, its live children, and the
    children that exited (cutime/cstime).  0 for SQLite, which runs in the ingest's own process."""
    if cluster is None:
        return 0.0
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def ingest_cpu_s() -> float:
    """CPU seconds of this process and of its children that ended (the ingest's file-reading workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(action, repeat: int = 5) -> float:
    """The median of `repeat` runs, seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def year_of_runs(engine: Engine, nightly: dict[str, Nightly], sessions: list[str], full: str, start: int) -> None:
    """Days `start`..364 of every session: the run and its metrics (a copy of day 0's with that day's
    time and key); `full` with its generated outcomes too (its bump is on day 364)."""
    templates = {s: records.rows_of(Path(f"{s}.json"), nightly[s].run_day(0)) for s in sessions}
    for day in range(start, 365):
        for session in sessions:
            if session == full:
                rows = records.rows_of(Path(f"{session}.json"), nightly[session].run_day(day))
            else:
                template = templates[session]
                when = template.run["started_at"] + dt.timedelta(days=day)
                run = {**template.run, "started_at": when, "run_key": f"{session}|day{day}", "run_id": f"day{day}"}
                rows = records.RunRows(run, template.metrics, [])
            ingest.store_run(engine, rows)


def measured_year(backend: str, cluster: postgres_cluster.Cluster | None, work: Path, sessions: list[str],
                  count: int) -> None:
    """A year of `count` sessions spread over the matrix, every run with every outcome at both levels, stored
    run by run as ingest stores them, into an empty database; its size measured (SQLite: the file after a
    checkpoint; PostgreSQL: pg_database_size, less the empty database's).  The matrix's sessions store the
    same rows each (1,319 questions x 2 levels, 12 numbers per run), so the full matrix's year is this
    slice's per-session bytes x the matrix's sessions."""
    chosen = sessions[:: max(1, len(sessions) // count)][:count]
    url = cluster.new_database() if cluster else f"sqlite:///{work / 'year.sqlite'}"
    engine = store.open_store(url)
    empty = size_bytes(engine, url)
    start, cpu = time.perf_counter(), time.process_time()
    for index, session in enumerate(chosen):
        nightly = Nightly(session, 365, levels=LEVELS, seed=1000 + index, bump_day=300, drop=0.03)
        for day in range(365):
            ingest.store_run(engine, records.rows_of(Path(f"{session}.json"), nightly.run_day(day)))
    stored_s, stored_cpu = time.perf_counter() - start, time.process_time() - cpu
    with engine.connect() as connection:
        rows = connection.scalar(select(func.count()).select_from(outcomes))
        run_count = connection.scalar(text("SELECT count(*) FROM runs"))
    size = size_bytes(engine, url)
    engine.dispose()
    per_session = (size - empty) / len(chosen)
    print(f"{backend}: a year measured: {len(chosen)} sessions x 365 nightly runs = {run_count:,} runs, "
          f"{rows:,} outcome rows, stored in {stored_s:.0f} s wall ({stored_cpu:.0f} s CPU of the generator and "
          f"ingest); {size / 1e6:.1f} MB ({empty / 1e6:.1f} MB of it the empty database) = "
          f"{per_session / 1e6:.1f} MB per session-year, {(size - empty) / rows:.0f} bytes per outcome row")
    print(f"{backend}: the full matrix's year follows: {len(sessions)} sessions x {per_session / 1e6:.1f} MB "
          f"+ {empty / 1e6:.1f} MB = {(len(sessions) * per_session + empty) / 1e9:.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30, help="nightly dispatches in the history (365: a year)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--year-runs", action="store_true", help="then fill the rest of a year (see year_of_runs) "
                        "and time trend and first-bad over 365 runs")
    parser.add_argument("--year-slice", type=int, default=0, metavar="N",
                        help="then, in a new database, a whole year of N sessions (365 nightly runs each, every "
                        "outcome), and its size measured (see measured_year)")
    args = parser.parse_args()
    sessions = [c.name for c in load_matrix(ROOT / "matrix.yaml").combinations]
    bump_day = 364 if args.year_runs else args.days - 1  # the last day of the history
    nightly = {s: Nightly(s, args.days, levels=LEVELS, seed=i, bump_day=bump_day, drop=0.06)
               for i, s in enumerate(sessions)}
    settings = gate.GateSettings()
    work = Path(tempfile.mkdtemp(prefix="gsm8k-history-scale."))
    dispatch = work / "dispatch"
    for session in sessions:
        doc = nightly[session].run_day(0)
        artifact = dispatch / f"{session}-attempt1"
        artifact.mkdir(parents=True)
        (artifact / f"{session}.json").write_text(json.dumps(doc))
    json_mb = sum(p.stat().st_size for p in dispatch.rglob("*.json")) / 1e6
    print(f"matrix: {len(sessions)} sessions x {QUESTIONS} questions x {len(LEVELS)} levels "
          f"= {len(sessions) * QUESTIONS * len(LEVELS):,} outcome rows per dispatch ({json_mb:.0f} MB of JSON)")
    cluster = None
    try:
        for backend in args.backends.split(","):
            if backend == "postgresql":
                cluster = postgres_cluster.Cluster()
                url = cluster.new_database()
            else:
                url = f"sqlite:///{work / 'history.sqlite'}"
            engine = store.open_store(url)
            start, cpu, server = time.perf_counter(), ingest_cpu_s(), server_cpu_s(cluster)
            done = ingest.ingest(engine, [dispatch], log=lambda _line: None)
            dispatch_s, dispatch_cpu = time.perf_counter() - start, ingest_cpu_s() - cpu
            server = server_cpu_s(cluster) - server
            assert len(done.stored) == len(sessions)
            start, cpu = time.perf_counter(), time.process_time()
            for path in dispatch.rglob("*.json"):
                records.rows_of(path, records.read(path))
            parse_s, parse_cpu = time.perf_counter() - start, time.process_time() - cpu
            print(f"\n{backend}: one dispatch ingested in {dispatch_s:.1f} s wall, {dispatch_cpu:.1f} s CPU of the "
                  f"ingest's processes + {server:.1f} s of the server (goal < 10 s); reading and checking the JSONs "
                  f"alone, in one process: {parse_s:.1f} s wall, {parse_cpu:.1f} s CPU; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            start = time.perf_counter()
            for day in range(1, args.days):
                for session in sessions:
                    doc = nightly[session].run_day(day)
                    ingest.store_run(engine, records.rows_of(Path(f"{session}.json"), doc))
            history_s = time.perf_counter() - start
            with engine.connect() as connection:
                rows = connection.scalar(select(func.count()).select_from(outcomes))
            size = size_bytes(engine, url)
            per_row = size / rows
            year_gb = per_row * 365 * len(sessions) * QUESTIONS * len(LEVELS) / 1e9
            print(f"{backend}: {args.days} nightly dispatches stored ({history_s:.0f} s generating and storing), "
                  f"{rows:,} outcome rows, {size / 1e6:.0f} MB = {per_row:.0f} bytes per outcome row")
            print(f"{backend}: a year (365 dispatches), extrapolated from that: {year_gb:.1f} GB"
                  + (" (measured)" if args.days == 365 else ""))
            session = sessions[len(sessions) // 2]
            if args.year_runs:
                year_of_runs(engine, nightly, sessions, session, args.days)
                print(f"{backend}: then the rest of a year: 365 runs of every session (runs and metrics), and "
                      f"{session}'s outcomes for all 365 (other sessions' outcomes only for the first "
                      f"{args.days} days; generating every outcome of a year is hours on this machine)")
                days = 365
            else:
                days = args.days
            with engine.connect() as connection:
                trend_s = timed(lambda s=session, c=connection: trend.trend(c, s, settings))
                bad_s = timed(lambda s=session, c=connection: first_bad.first_bad(c, s, settings), 1)
                found, walked = first_bad.first_bad(connection, session, settings)
            last_run = nightly[session].run_day(days - 1)["environment"]["run_id"]
            print(f"{backend}: trend {session} over {days} runs: {trend_s * 1000:.0f} ms (goal < 200 ms); "
                  f"first-bad walking {walked} runs: {bad_s:.2f} s "
                  f"({'found the bump on the last day' if found and found.bad.run_id == last_run else 'NOT found'})")
            engine.dispose()
            if args.year_slice:
                measured_year(backend, cluster, work, sessions, args.year_slice)
    finally:
        if cluster:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
