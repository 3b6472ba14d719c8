"""GSM8k accuracy sessions generated from matrix.yaml, plus lint, tests and the CI helpers.

    nox -l                              list every session
    nox -s gsm8k-<combo> [-- --limit 20]  run one combination
    nox -k "h100 and vllm" / nox -t mi355x  select a slice
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent


def _load_checkout_package() -> None:
    """Import gsm8k_bench from this checkout, even when another checkout is pip-installed (editable
    installs hook the import system ahead of sys.path): `nox` here must run the code here."""
    spec = importlib.machinery.PathFinder.find_spec("gsm8k_bench", [str(ROOT)])
    if spec is None:
        return  # a noxfile without its package beside it uses the installed one
    module = importlib.util.module_from_spec(spec)
    sys.modules["gsm8k_bench"] = module
    spec.loader.exec_module(module)


_load_checkout_package()

from gsm8k_bench.core import results  # noqa: E402
from gsm8k_bench.core.errors import BenchError  # noqa: E402
from gsm8k_bench.session import commands  # noqa: E402

# The oldest nox with every feature used here (sessions with default=False); pyproject's nox pin agrees.
nox.needs_version = ">=2024.4.15"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

# GSM8K_MATRIX points at another matrix file, e.g. to try a candidate before committing it.
MATRIX = commands.load_or_exit(Path(os.environ.get("GSM8K_MATRIX", ROOT / "matrix.yaml")))


def _or_error(session: nox.Session, action, rerun: str | None = None) -> None:
    """A failure the user can act on ends the session with its message, not a traceback."""
    try:
        action()
    except BenchError as exc:
        message = results.mask(str(exc))  # a message can quote a server's or a file's text
        session.error(f"{message}\n  rerun: nox -s {rerun}" if rerun else message)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff over the package, tests and noxfile; mypy --strict over the package ([tool.mypy])."""
    session.install("ruff", "mypy", "types-PyYAML", "types-requests", "-e", ".[history]")
    session.run("ruff", "check", ".")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and real-stack tests (builds the shared lm-eval and vLLM CPU environments once)."""
    session.install("-e", ".[test]")
    # The CLI-parser tests need SGLang (11 GB): they run in their own session.
    session.run("pytest", *(session.posargs or ["-m", "not cli", "--durations=30"]),
                env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation score of the pure core (mutmut; modules and tests in pyproject's [tool.mutmut]): >= 90% killed."""
    session.install("-e", ".[test]", "mutmut==3.8.1")
    session.run("python", "tests/mutation_score.py", *session.posargs,
                env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})


@nox.session(name="cli-parsers")
def cli_parsers(session: nox.Session) -> None:
    """Parse every generated server command with vLLM's and SGLang's own argument parsers."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "cli", *session.posargs)


@nox.session(venv_backend="none", default=False)
def ci(session: nox.Session) -> None:
    """Everything CI runs: lint, tests and cli-parsers, with mutation beside them at idle CPU priority."""
    # Stopped, the script stops its sessions first (each a process group): nox must not kill it meanwhile.
    session.run(sys.executable, "ci/run_sessions.py", external=True, interrupt_timeout=180,
                terminate_timeout=30)


@nox.session(venv_backend="none", default=False)
def setup(session: nox.Session) -> None:
    """Build the shared lm-eval and vLLM CPU environments and convert the CPU model (once)."""
    _or_error(session, lambda: commands.prepare_cpu_default(MATRIX, session.log))


@nox.session(venv_backend="none", default=False)
def dataset(session: nox.Session) -> None:
    """Export GSM8K from the hub to DIR/{train,test}.jsonl, for --dataset-dir on air-gapped runners."""
    _or_error(session, lambda: commands.export_dataset(session.posargs, session.log))


@nox.session(default=False)
def report(session: nox.Session) -> None:
    """report.md, report.png and the CI step summary from session JSONs: -- [RESULTS_DIR] [OUT_DIR]."""
    session.install("-e", ".", "matplotlib")
    session.run("python", "-m", "gsm8k_bench.reporting.report", *session.posargs)


@nox.session(default=False)
def history(session: nox.Session) -> None:
    """The results history: -- ingest PATH... | trend SESSION | first-bad SESSION | noise [-k EXPR]."""
    session.install("-e", ".[history]")
    session.run("python", "-m", "gsm8k_bench.reporting.history", *session.posargs)


@nox.session(venv_backend="none", default=False)
def compare(session: nox.Session) -> None:
    """B against A, question by question: -- A B [--out DIR] (session JSONs or results folders)."""
    from gsm8k_bench.reporting import compare as compare_mod

    code = compare_mod.main(session.posargs)
    if code:
        session.error("a session regressed" if code == 1 else "compare: bad input (see above)")


@nox.session(venv_backend="none", default=False)
def matrix(session: nox.Session) -> None:
    """Print the selected sessions as JSON for CI: -- [-k EXPR] [-t TAG ...] [--github-output]."""
    _or_error(session, lambda: commands.print_matrix(MATRIX, session.posargs))


@nox.session(venv_backend="none", default=False)
def promote(session: nox.Session) -> None:
    """Make passed runs their sessions' references: -- PATH... [--force] (session JSONs or results dirs)."""
    _or_error(session, lambda: commands.promote_runs(MATRIX, session.posargs, session.log))


@nox.session(venv_backend="none", default=False)
def pack(session: nox.Session) -> None:
    """Run the selected sessions at once on one node, packed on free GPUs: -- [-k EXPR] [-t TAG] --gpus 0-7."""
    from gsm8k_bench.fleet import pack as pack_mod

    _or_error(session, lambda: pack_mod.run(MATRIX, session.posargs, session.log))


@nox.session(venv_backend="none", default=False)
def slurm(session: nox.Session) -> None:
    """One Slurm job per selected session: -- [-k EXPR] [-t TAG] --partition P [--container pyxis|docker|none]."""
    from gsm8k_bench.fleet import slurm as slurm_mod

    _or_error(session, lambda: slurm_mod.run(MATRIX, session.posargs, session.log))


@nox.session(venv_backend="none", default=False)
def gsm8k(session: nox.Session) -> None:
    """One ad-hoc combination: -- --model M [--checkpoint C] --runner R --framework F --precision P --tp N."""
    _or_error(session, lambda: commands.run_adhoc(MATRIX, session.posargs, session.log))


def _gsm8k_session(combo):
    def run(session: nox.Session) -> None:
        _or_error(session, lambda: commands.run_combination(MATRIX, combo, session.posargs, session.log),
                  rerun=combo.name)

    run.__doc__ = combo.description
    return run


for _combo in MATRIX.combinations:
    nox.session(name=_combo.name, tags=list(_combo.tags), default=False, venv_backend="none")(
        _gsm8k_session(_combo))

if __name__ == "__main__":
    sys.exit("run this file with nox: nox -l")
