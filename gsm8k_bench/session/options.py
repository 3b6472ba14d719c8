"""The arguments a gsm8k session takes after `--`, parsed into one frozen object."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gsm8k_bench.core.errors import RaisingArgumentParser, shorten
from gsm8k_bench.serving.launchers import LAUNCHERS
from gsm8k_bench.serving.models import SOURCES

PULL_POLICIES = ("never", "missing", "always")
PROGRESS_INTERVAL_S = 30.0
# A GPU server generates tokens every few milliseconds while requests run; minutes without one is a hang.
STALL_TIMEOUT_S = 300.0
DEFAULT_LOOKS = 8  # sequential.Design's default: the design benchmarks/staged_power.py measures


@dataclass(frozen=True)
class SessionOptions:
    limit: int | None
    num_fewshot: int | None
    dataset_dir: str | None
    results_dir: Path
    launcher: str | None
    image: str | None
    pull: str
    dry_run: bool
    concurrency: tuple[int, ...] | None  # levels: the same questions at each, on one server start
    start_timeout_s: float | None
    request_timeout_s: float | None
    eval_timeout_s: float
    progress_interval_s: float
    stall_timeout_s: float
    max_gen_toks: int | None
    model_source: str
    baselines: Path | None
    references: Path | None
    gpus: str | None = None
    gate_concurrency: int | None = None
    gate_family: int = 1  # sessions judged together: the paired gate's level is (1 - confidence) / this
    history: bool = False  # store the JSON in the results history once written (docs/history.md)
    full: bool = False  # ask every question even with a reference (no staged stop)
    looks: int = DEFAULT_LOOKS  # a staged run's looks (stages)


N = TypeVar("N", int, float)


def _at_least(kind: type[N], minimum: N) -> Callable[[str], N]:
    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {shorten(text)}") from None
        if not math.isfinite(value):  # nan compares false with everything: it would disable a timeout
            raise argparse.ArgumentTypeError(f"expected a finite number, got {shorten(text)}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {shorten(text)}")
        return value
    return parse


def concurrency_levels(text: str) -> tuple[int, ...]:
    """`8` or `1,64,256`: distinct positive levels, in the order given."""
    parse = _at_least(int, 1)
    levels = tuple(parse(part.strip()) for part in text.split(","))
    if len(set(levels)) != len(levels):
        raise argparse.ArgumentTypeError(f"each level once, got {text!r}")
    return levels


def build_parser(session: str) -> argparse.ArgumentParser:
    parser = RaisingArgumentParser(prog=f"nox -s {session} --", description="Run GSM8k for this combination.",
                     add_help=True)
    parser.add_argument("--limit", type=_at_least(int, 1),
                        help="first N test questions only (a smoke run, not a baseline)")
    parser.add_argument("--num-fewshot", type=_at_least(int, 0), help="few-shot examples (default 5)")
    parser.add_argument("--dataset-dir", help="local folder with train.jsonl and test.jsonl "
                        "(default: env GSM8K_DATASET_DIR, else the hub dataset)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where the session JSON goes (default results/)")
    parser.add_argument("--launcher", choices=LAUNCHERS,
                        help="docker (default on GPU runners) or process (default on cpu)")
    parser.add_argument("--image", help="serving image instead of matrix.yaml's")
    parser.add_argument("--pull", choices=PULL_POLICIES, default="missing",
                        help="image pull policy for --launcher docker (default missing)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the server command, container spec and lm-eval command; start nothing")
    parser.add_argument("--concurrency", type=concurrency_levels,
                        help="parallel requests; a list (1,64,256) evaluates the same questions at each level "
                        "on one server start (default: runner's)")
    parser.add_argument("--gate-concurrency", type=_at_least(int, 1),
                        help="the level whose metrics are gated and reported at top level (default: the first)")
    parser.add_argument("--gate-family", type=_at_least(int, 1), default=1,
                        help="sessions judged together, e.g. a workflow dispatch's count: each is gated at "
                        "(1 - confidence) / N, so all N together report a false regression at most 1 - confidence "
                        "of the time (default 1: a session run alone)")
    parser.add_argument("--start-timeout", dest="start_timeout_s", type=_at_least(float, 1.0),
                        help="seconds for the server to become ready")
    parser.add_argument("--request-timeout", dest="request_timeout_s", type=_at_least(float, 1.0),
                        help="seconds per request before lm-eval retries it")
    parser.add_argument("--eval-timeout", dest="eval_timeout_s", type=_at_least(float, 1.0),
                        default=6 * 3600.0, help="wall-clock limit of the evaluation (default 6 h)")
    parser.add_argument("--progress-interval", dest="progress_interval_s", type=_at_least(float, 0.5),
                        default=PROGRESS_INTERVAL_S, help="seconds between progress lines when the output is not "
                        f"a terminal (default {PROGRESS_INTERVAL_S:.0f}; a terminal gets one line updated in place)")
    parser.add_argument("--stall-timeout", dest="stall_timeout_s", type=_at_least(float, 1.0),
                        default=STALL_TIMEOUT_S, help="fail the session when no request finishes and no token is "
                        f"generated for this many seconds while requests are in flight (default {STALL_TIMEOUT_S:.0f})")
    parser.add_argument("--max-gen-toks", type=_at_least(int, 1), help="generation token limit")
    parser.add_argument("--model-source", choices=SOURCES, default="auto",
                        help="hub, or a packaged copy where one exists (default auto)")
    parser.add_argument("--baselines", type=Path,
                        help="baselines file for the gate (default: baselines.yaml beside matrix.yaml)")
    parser.add_argument("--references", type=Path,
                        help="folder of per-question references for the paired gate (default: references/ "
                             "beside matrix.yaml)")
    parser.add_argument("--gpus", help="GPU indices to run on, e.g. 0,1 or 4-7; their count must be tp "
                        "(default: Slurm's allocation, else CUDA/ROCR_VISIBLE_DEVICES, else the first tp)")
    parser.add_argument("--history", action="store_true",
                        help="once the JSON is written, store it in the results history ($GSM8K_HISTORY_URL, "
                        "else the SQLite file in the cache); a failed store is a warning and leaves the "
                        "session's result and exit code as they are (docs/history.md)")
    parser.add_argument("--full", action="store_true",
                        help="ask every question even with a per-question reference (default: with one, ask in "
                        "stages and stop once the paired test decides; a run to promote must be --full)")
    parser.add_argument("--looks", type=_at_least(int, 2), default=DEFAULT_LOOKS,
                        help=f"stages of a staged run, equal shares of the questions (default {DEFAULT_LOOKS}); "
                        "with --limit N the first N questions are staged, in the seeded order; a set of fewer "
                        "than 20 questions per stage is asked whole")
    return parser


def parse_session_args(session: str, argv: list[str]) -> SessionOptions:
    args = build_parser(session).parse_args(argv)
    return SessionOptions(**vars(args))
