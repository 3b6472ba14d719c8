"""A local session and the results history (`--history`): real sessions against the fake vLLM server
(tests/fakes/vllm) with the real lm-eval.  The environment variable alone stores nothing; `--history`
stores the written JSON; a database that cannot be reached is one warning line, and the session's JSON,
verdict and exit code stay its own, with the database's password nowhere."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_GSM8K, require, require_module
from test_faults import FAKE_SESSION, fake_argv, fake_env, read_json

require_module("sqlalchemy")  # the `history` extra (in `test` too)

from sqlalchemy import create_engine, text  # noqa: E402

PASSWORD = "hist0ry-s3cret-pw"


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then closed (a connection to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def session(results_dir: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fake_argv(results_dir, *extra), cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=fake_env(GSM8K_HISTORY_URL=url, FAKE_VLLM_READY_AFTER_S="1"))


def every_file_text(folder: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


@pytest.mark.integration
def test_history_flag_stores_the_json_and_an_unreachable_database_changes_nothing(tmp_path):
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    database = tmp_path / "history.sqlite"

    # The variable alone: the session passes and stores nothing.
    quiet = session(tmp_path / "a", f"sqlite:///{database}")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert not database.exists() and "history:" not in quiet.stdout + quiet.stderr

    # Asked: the written JSON is stored, its questions with it.
    asked = session(tmp_path / "b", f"sqlite:///{database}", "--history")
    assert asked.returncode == 0, asked.stderr[-3000:]
    assert f"history: stored {tmp_path / 'b' / FAKE_SESSION}.json" in asked.stdout + asked.stderr
    with create_engine(f"sqlite:///{database}").connect() as connection:
        stored = connection.execute(text("SELECT session, status, (SELECT count(*) FROM outcomes) FROM runs")).all()
    assert stored == [(FAKE_SESSION, "passed", 5)]

    # A PostgreSQL that refuses the connection: one warning, the session's result and exit code unchanged.
    url = f"postgresql://bench:{PASSWORD}@127.0.0.1:{closed_port()}/gsm8k"
    down = session(tmp_path / "c", url, "--history")
    output = down.stdout + down.stderr
    assert down.returncode == 0, output[-3000:]
    result = tmp_path / "c" / f"{FAKE_SESSION}.json"
    assert read_json(result)["status"] == "passed"
    warning = next(line for line in output.splitlines() if "warning: history:" in line)
    assert f"{result} was not stored in the history" in warning and "bench:***@127.0.0.1" in warning
    assert "refused" in warning.lower() and f"nox -s history -- ingest {result}" in warning
    assert PASSWORD not in output and PASSWORD not in every_file_text(tmp_path / "c")
