"""GSM8k accuracy sessions generated from matrix.yaml, plus lint, tests and the CI helpers.

    nox -l                              list every session
    nox -s gsm8k-<combo> [-- --limit 20]  run one combination
    nox -k "h100 and vllm" / nox -t mi355x  select a slice
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

from gsm8k_bench import cli
from gsm8k_bench.errors import BenchError

ROOT = Path(__file__).parent
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

MATRIX = cli.load_or_exit(ROOT / "matrix.yaml")


@nox.session(tags=["ci"])
def lint(session: nox.Session) -> None:
    """Ruff over the package, tests and noxfile."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session(tags=["ci"])
def tests(session: nox.Session) -> None:
    """Unit and real-stack tests (builds the shared lm-eval and vLLM CPU environments once)."""
    session.install("-e", ".[test]")
    # The CLI-parser tests need SGLang (11 GB): they run in their own session.
    session.run("pytest", *(session.posargs or ["-m", "not cli"]),
                env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})


@nox.session(name="cli-parsers", tags=["ci"])
def cli_parsers(session: nox.Session) -> None:
    """Parse every generated server command with vLLM's and SGLang's own argument parsers."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "cli", *session.posargs)


@nox.session(venv_backend="none", default=False)
def setup(session: nox.Session) -> None:
    """Build the shared lm-eval and vLLM CPU environments and convert the CPU model (once)."""
    try:
        cli.prepare_cpu_default(MATRIX, session.log)
    except BenchError as exc:
        session.error(str(exc))


@nox.session(venv_backend="none", default=False)
def dataset(session: nox.Session) -> None:
    """Export GSM8K from the hub to DIR/{train,test}.jsonl, for --dataset-dir on air-gapped runners."""
    try:
        cli.export_dataset(session.posargs, session.log)
    except BenchError as exc:
        session.error(str(exc))


@nox.session(venv_backend="none", default=False)
def matrix(session: nox.Session) -> None:
    """Print the selected sessions as JSON for CI: -- [-k EXPR] [-t TAG ...] [--github-output]."""
    try:
        cli.print_matrix(MATRIX, session.posargs)
    except BenchError as exc:
        session.error(str(exc))


@nox.session(venv_backend="none", default=False)
def gsm8k(session: nox.Session) -> None:
    """One ad-hoc combination: -- --model M [--checkpoint C] --runner R --framework F --precision P --tp N."""
    try:
        cli.run_adhoc(MATRIX, session.posargs, session.log)
    except BenchError as exc:
        session.error(str(exc))


def _gsm8k_session(combo):
    def run(session: nox.Session) -> None:
        try:
            cli.run_combination(MATRIX, combo, session.posargs, session.log)
        except BenchError as exc:
            session.error(f"{exc}\n  rerun: nox -s {combo.name}")

    run.__doc__ = combo.description
    return run


for _combo in MATRIX.combinations:
    nox.session(name=_combo.name, tags=list(_combo.tags), default=False, venv_backend="none")(
        _gsm8k_session(_combo))

if __name__ == "__main__":
    sys.exit("run this file with nox: nox -l")
