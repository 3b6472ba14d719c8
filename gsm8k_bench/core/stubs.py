"""The JSON of a session that never got to write its own: stopped by bad input before it planned anything,
or a job that died (Slurm, a packed subprocess) before its session wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gsm8k_bench
from gsm8k_bench.core.results import result_path, write_atomic
from gsm8k_bench.core.session_result import (
    SCHEMA_VERSION,
    Config,
    Environment,
    ErrorRecord,
    SessionResult,
    Status,
    Timings,
    utc_now,
)


def write_input_error(session: str, results_dir: Path, message: str) -> Path | None:
    """The JSON of a session stopped by bad input before it could plan anything; None when an earlier
    run's JSON is there: a rerun that never started a server does not destroy a result."""
    if result_path(results_dir.expanduser().resolve(), session).exists():
        return None
    return write_stub(session, results_dir, "error", f"input: {message}")


def stub_document(session: str, status: Status, message: str, log_tail: str = "", config: Config | None = None,
                  timings: Timings | None = None, **runner: Any) -> dict[str, Any]:
    """The document of a session that never got to write its own JSON; `runner`: what ran it (`slurm`,
    `pack`)."""
    now = utc_now()
    stub = SessionResult(schema=SCHEMA_VERSION, session=session, status=status,
                         error=ErrorRecord(message=message, log_tail=log_tail), config=config, metrics=None,
                         gate=None, server_metrics=None, samples=[], timings=timings or Timings(),
                         environment=Environment(gsm8k_bench=gsm8k_bench.__version__, started_at=now, ended_at=now),
                         **runner)
    return stub.document()


def write_stub(session: str, results_dir: Path, status: Status, message: str, log_tail: str = "",
               config: Config | None = None, timings: Timings | None = None, **runner: Any) -> Path:
    """stub_document, written as the session's JSON (bad input, a Slurm job that died)."""
    return write_atomic(result_path(results_dir.expanduser().resolve(), session),
                        stub_document(session, status, message, log_tail, config, timings, **runner))
