"""The results history at the matrix's size, into SQLite and into PostgreSQL (a private cluster).

    python benchmarks/history_scale.py [--days 30] [--backends sqlite,postgresql]

1. One whole-matrix dispatch: every matrix.yaml session x 1,319 questions x 2 concurrency levels, written
   as downloaded artifacts (<folder>/<artifact>/<session>.json), then `ingest` (reading, checking and
   storing every file, as `nox -s history -- ingest` does).
2. A history of --days nightly dispatches of the whole matrix (365 is a year; on a shared machine a
   slice, the year extrapolated and labelled so), stored through the same per-run transactions; then
   `trend` and `first-bad` over one session, and the database's size.
Generated outcomes: tests/fakes/history_runs.py (known flip rate, an image bump with a drop on the last
day of the history for first-bad to find).
"""

from __future__ import annotations

import argparse
import json
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


def timed(action, repeat: int = 5) -> float:
    """The median of `repeat` runs, seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30, help="nightly dispatches in the history (365: a year)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    sessions = [c.name for c in load_matrix(ROOT / "matrix.yaml").combinations]
    nightly = {s: Nightly(s, args.days, levels=LEVELS, seed=i, bump_day=args.days - 1, drop=0.06)
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
            start = time.perf_counter()
            done = ingest.ingest(engine, [dispatch], log=lambda _line: None)
            dispatch_s = time.perf_counter() - start
            assert len(done.stored) == len(sessions)
            parse_s = timed(lambda: [records.rows_of(p, records.read(p)) for p in dispatch.rglob("*.json")], 1)
            print(f"\n{backend}: one dispatch ingested in {dispatch_s:.1f} s "
                  f"(reading and checking the JSONs alone: {parse_s:.1f} s; goal < 10 s)")
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
            with engine.connect() as connection:
                trend_s = timed(lambda s=session, c=connection: trend.trend(c, s, settings))
                bad_s = timed(lambda s=session, c=connection: first_bad.first_bad(c, s, settings), 1)
                found, walked = first_bad.first_bad(connection, session, settings)
            last_run = nightly[session].run_day(args.days - 1)["environment"]["run_id"]
            print(f"{backend}: trend {session} over {args.days} runs: {trend_s * 1000:.0f} ms (goal < 200 ms); "
                  f"first-bad walking {walked} runs: {bad_s:.2f} s "
                  f"({'found the bump on the last day' if found and found.bad.run_id == last_run else 'NOT found'})")
            engine.dispose()
    finally:
        if cluster:
            cluster.stop()


if __name__ == "__main__":
    main()
