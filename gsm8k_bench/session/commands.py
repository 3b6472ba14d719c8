"""The nox sessions' bodies (noxfile.py only wires them): load the matrix, print the CI matrix, run one
combination, prepare the CPU default, export the dataset, promote references."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import BenchError, ConfigError, RaisingArgumentParser
from gsm8k_bench.core.stubs import write_input_error
from gsm8k_bench.evaluation import harness
from gsm8k_bench.fleet import workflow_plan
from gsm8k_bench.matrix.combinations import adhoc_combination
from gsm8k_bench.matrix.loader import load_matrix
from gsm8k_bench.matrix.selection import select, selection_parser
from gsm8k_bench.matrix.types import Combination, Matrix
from gsm8k_bench.reporting import console_summary
from gsm8k_bench.serving import ownership, venvs
from gsm8k_bench.session import plan as session_plan
from gsm8k_bench.session import run as session_run
from gsm8k_bench.session.options import SessionOptions, parse_session_args
from gsm8k_bench.verdicts import gate, promote, references


def load_or_exit(path: Path) -> Matrix:
    """The matrix, or one clear message and exit code 2 (never a traceback from `nox -l`)."""
    try:
        return load_matrix(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def print_matrix(matrix: Matrix, argv: list[str], out: TextIO = sys.stdout) -> list[dict[str, Any]]:
    """`nox -s matrix`: the selected sessions as one JSON line, the benchmark job's strategy matrix."""
    parser = selection_parser("nox -s matrix --")
    parser.add_argument("--dispatch", action="store_true",
                        help="select from the workflow's INPUT_* variables instead (validated)")
    parser.add_argument("--github-output", action="store_true",
                        help="also append matrix=<json> and sessions=<count> to $GITHUB_OUTPUT")
    args = parser.parse_args(argv)
    if args.dispatch:
        rows = workflow_plan.job_rows(matrix, workflow_plan.read_inputs(os.environ))
    else:
        combos = select(matrix.combinations, args.keywords, args.tags, args.names)
        rows = workflow_plan.check_size([c.summary() for c in combos])
    text = json.dumps(rows, separators=(",", ":"))
    print(text, file=out)
    if args.github_output:
        target = os.environ.get("GITHUB_OUTPUT")
        if not target:
            raise BenchError("--github-output: GITHUB_OUTPUT is not set")
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(f"matrix={text}\nsessions={len(rows)}\n")  # the gate's family (summary's verdict)
    return rows


def export_dataset(argv: list[str], log: Callable[[str], None] = print) -> Path:
    if len(argv) != 1:
        raise BenchError("usage: nox -s dataset -- DIR")
    target = Path(argv[0]).expanduser().resolve()
    python = venvs.ensure_venv(venvs.LM_EVAL, log)  # it has `datasets`
    harness.export_hub_dataset(python, target)
    harness.validate_dataset_dir(target)
    log(f"wrote {target}/train.jsonl and test.jsonl; use --dataset-dir {target} or GSM8K_DATASET_DIR")
    return target


BASELINES_FILE = "baselines.yaml"
REFERENCES_DIR = "references"
CPU_DEFAULT = "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1"


def prepare_cpu_default(matrix: Matrix, log: Callable[[str], None] = print) -> None:
    """Everything the CPU default needs before its first run, so that run only serves and scores."""
    combo = matrix.get(CPU_DEFAULT)
    options = parse_session_args(combo.name, [])
    plan = session_plan.plan_session(combo, options, matrix.defaults, session_plan.host_facts(combo, options))
    session_run.prepare_environments(plan, log)
    session_run.prepare_model(plan)
    log(f"ready: nox -s {CPU_DEFAULT}")


def _plan(matrix: Matrix, combo: Combination, options: SessionOptions, run_id: str | None = None
          ) -> session_plan.Plan:
    """The session's plan, with the facts it needs read first: what the gate judges the run against
    (baselines.yaml and the session's reference, if any) and the host's (environment, caches, GPUs)."""
    baselines = gate.load_baselines(options.baselines or matrix.path.with_name(BASELINES_FILE))
    reference = references.find(options.references or matrix.path.with_name(REFERENCES_DIR), combo.name)
    settings = replace(baselines.settings, family=options.gate_family)  # the family comes from the dispatch
    return session_plan.plan_session(combo, options, matrix.defaults, session_plan.host_facts(combo, options),
                                    baselines=replace(baselines, settings=settings, reference=reference),
                                    run_id=run_id)


def run_combination(matrix: Matrix, combo: Combination, argv: list[str],
                    log: Callable[[str], None] = print) -> dict[str, Any] | None:
    options = parse_session_args(combo.name, argv)
    if options.dry_run:
        print(session_plan.dry_run_text(_plan(matrix, combo, options)))
        return None
    # Held for the whole run: a second run of this session into the same folder fails here, at once.
    with ownership.ResultsLock(options.results_dir, combo.name):
        try:
            plan = _plan(matrix, combo, options, run_id=ownership.run_id_from(os.environ))
        except ConfigError as exc:
            write_input_error(combo.name, options.results_dir, str(exc))
            raise
        try:
            return session_run.run_session(plan, log)
        finally:  # passed or not, the JSON is written: the last lines show what it measured
            if plan.result_file.is_file():
                for line in console_summary.lines(results.read(plan.result_file), plan.result_file):
                    log(line)
                if options.history:
                    log(results.mask(store_in_history(plan.result_file)))


def store_in_history(result_file: Path) -> str:
    """`--history`: the written JSON into the results history.  Whatever happens there is one line: the
    session's verdict, exit code and JSON are its own (a database down never fails a benchmark)."""
    try:
        from gsm8k_bench.reporting.history import ingest
    except ImportError as exc:  # the `history` extra is not installed
        return (f"warning: history: {result_file} was not stored: {exc}; install the history extra "
                "(pip install -e '.[history]') or run: nox -s history -- ingest " + str(result_file))
    try:
        return ingest.ingest_result(result_file)
    except BenchError as exc:
        return f"warning: history: {exc}"


def promote_runs(matrix: Matrix, argv: list[str], log: Callable[[str], None] = print) -> list[Path]:
    """`nox -s promote -- PATH...`, judged with baselines.yaml's confidence and tolerance."""
    settings = gate.load_baselines(matrix.path.with_name(BASELINES_FILE)).settings
    return promote.promote(argv, matrix.path.with_name(REFERENCES_DIR), settings, log)


def adhoc_parser() -> argparse.ArgumentParser:
    parser = RaisingArgumentParser(prog="nox -s gsm8k --", description="Run one combination, listed in "
                                   "matrix.yaml or not; the remaining arguments are the session's (--limit ...).")
    parser.add_argument("--model", required=True,
                        help="a short name (a matrix.yaml model keeps its settings) or a checkpoint (hub id "
                        "or path; the checkpoint of a matrix.yaml model at --precision runs as that model)")
    parser.add_argument("--checkpoint", help="checkpoint to serve (hub id or path) under a new short --model")
    parser.add_argument("--runner", required=True, help="runner name or its CI label (h100 or h100-cr)")
    parser.add_argument("--framework", required=True)
    parser.add_argument("--precision", required=True)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--protocol", help="completions or chat (default: the model's, else completions)")
    parser.add_argument("--image", help="serving image (needed where matrix.yaml has none for the runner)")
    return parser


def run_adhoc(matrix: Matrix, argv: list[str], log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """`nox -s gsm8k -- --model ... --runner ...`: the same code path as a matrix session."""
    args, rest = adhoc_parser().parse_known_args(argv)
    if args.image:  # the combination needs it (a runner may have no image of its own); so does the plan
        rest += ["--image", args.image]
    combo = adhoc_combination(matrix, model=args.model, runner=args.runner, framework=args.framework,
                              precision=args.precision, tp=args.tp, checkpoint=args.checkpoint,
                              protocol=args.protocol, image=args.image)
    return run_combination(matrix, combo, rest, log)
