"""`nox -s history -- COMMAND` (python -m gsm8k_bench.reporting.history COMMAND):

    ingest PATH... [--workflow-run ID]   session JSONs, results folders, downloaded artifacts
    trend SESSION [--out DIR]            accuracy per run over time, provenance changes marked (+ PNG)
    first-bad SESSION                    the first run a paired comparison calls a regression
    noise [-k EXPR] [--window N]         each stack's flip rate between healthy runs, and an alarm

The database: --url, else GSM8K_HISTORY_URL, else the SQLite file in the cache (store.default_path).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.reporting.history import first_bad, ingest, noise, store, trend
from gsm8k_bench.verdicts import run_comparison


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="nox -s history --", description="The results history.")
    top.add_argument("--url", help=f"the database (default: ${store.URL_VARIABLE}, else {store.default_path()})")
    commands = top.add_subparsers(dest="command", required=True)
    add = commands.add_parser("ingest", help="store runs (idempotent)")
    add.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add.add_argument("--workflow-run", help="the GitHub workflow run the JSONs came from (GITHUB_RUN_ID)")
    show = commands.add_parser("trend", help="accuracy per run over time")
    show.add_argument("session")
    show.add_argument("--out", type=Path, default=Path("."), help="where the PNG goes (default: here)")
    bad = commands.add_parser("first-bad", help="the first run called a regression")
    bad.add_argument("session")
    floor = commands.add_parser("noise", help="each stack's flip rate between healthy runs")
    floor.add_argument("-k", dest="keywords", help="nox keyword expression over session, model, runner, "
                                                   "framework, precision")
    floor.add_argument("--window", type=int, default=7, help="recent pairs the alarm compares (default 7)")
    return top


def run(args: argparse.Namespace, out: TextIO) -> int:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    settings = run_comparison.gate_settings()
    engine = store.open_store(args.url)
    try:
        if args.command == "ingest":
            done = ingest.ingest(engine, args.paths, say, args.workflow_run)
            say(f"history {store.shown(engine.url)}: {len(done.stored)} stored, {len(done.already)} already "
                f"there, {len(done.refused)} refused" + (f", {len(done.not_sessions)} other JSON files skipped"
                                                         if done.not_sessions else ""))
            return 1 if done.refused else 0
        with engine.connect() as connection:
            if args.command == "trend":
                points = trend.trend(connection, args.session, settings)
                say(trend.table(points, settings.confidence))
                args.out.mkdir(parents=True, exist_ok=True)
                say(f"plot: {trend.plot(points, args.session, args.out / f'trend-{args.session}.png')}")
            elif args.command == "first-bad":
                found, walked = first_bad.first_bad(connection, args.session, settings)
                say(first_bad.describe(found, args.session, walked))
            else:
                say(noise.table(noise.noise(connection, settings, args.keywords, args.window), settings))
        return 0
    finally:
        engine.dispose()


def main(argv: list[str], out: TextIO = sys.stdout) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args, out)
    except BenchError as exc:
        print(f"error: {results.mask(str(exc))}", file=sys.stderr)
        return 2
