"""What the noxfile's sessions call: load the matrix, print the CI matrix, run one combination."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from gsm8k_bench import session as session_mod
from gsm8k_bench.errors import BenchError, ConfigError
from gsm8k_bench.matrix import Combination, Matrix, load_matrix, select
from gsm8k_bench.options import parse_session_args

# GitHub refuses a matrix of more than 256 jobs; a larger selection must fail in `plan`, not half-run.
GITHUB_MAX_JOBS = 256


def load_or_exit(path: Path) -> Matrix:
    """The matrix, or one clear message and exit code 2 (never a traceback from `nox -l`)."""
    try:
        return load_matrix(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


class _MatrixParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise BenchError(f"{self.prog}: {message}\n{self.format_usage().rstrip()}")


def print_matrix(matrix: Matrix, argv: list[str], out=sys.stdout) -> list[dict]:
    parser = _MatrixParser(prog="nox -s matrix --")
    parser.add_argument("-k", dest="keywords", help="nox keyword expression, e.g. 'h100 and vllm'")
    parser.add_argument("-t", dest="tags", nargs="+", default=[], help="tags, e.g. mi355x fp8")
    parser.add_argument("-s", dest="names", nargs="+", default=[], help="session names")
    parser.add_argument("--github-output", action="store_true",
                        help="also append matrix=<json> to $GITHUB_OUTPUT")
    args = parser.parse_args(argv)
    rows = [c.summary() for c in select(matrix.combinations, args.keywords, args.tags, args.names)]
    if not rows:
        raise BenchError("the selection matches no session; list them with: nox -l")
    if len(rows) > GITHUB_MAX_JOBS:
        raise BenchError(f"the selection has {len(rows)} sessions, over GitHub's {GITHUB_MAX_JOBS}-job "
                         "matrix limit; narrow it with -k/-t or dispatch it in parts")
    text = json.dumps(rows, separators=(",", ":"))
    print(text, file=out)
    if args.github_output:
        target = os.environ.get("GITHUB_OUTPUT")
        if not target:
            raise BenchError("--github-output: GITHUB_OUTPUT is not set")
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(f"matrix={text}\n")
    return rows


def run_combination(matrix: Matrix, combo: Combination, argv: list[str],
                    log: Callable[[str], None] = print) -> dict | None:
    options = parse_session_args(combo.name, argv)
    plan = session_mod.plan_session(combo, options, matrix.defaults, os.environ)
    if options.dry_run:
        print(session_mod.dry_run_text(plan))
        return None
    document = session_mod.run_session(plan, log)
    metrics = document["metrics"]
    log(f"{combo.name}: passed; strict-match {metrics['strict_match']:.4f} "
        f"flexible-extract {metrics['flexible_extract']:.4f} n={metrics['n']} -> {plan.result_file}")
    return document
