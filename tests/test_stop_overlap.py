"""The end of the eval phase, with real processes and signals: once lm-eval has every answer, the session
reads the server's counters and, after the last concurrency level, asks the server to stop while lm-eval
still scores and writes, so the two overlap; after an earlier level the server keeps running.  And a
server asked to stop sees one SIGTERM, however it is stopped afterwards.

The server is tests/fakes/vllm (a real HTTP server found on PATH); lm-eval is a stand-in that keeps the
driver's contract at its edges (--start-when, --answered-file) and then reports whether the server went
away before it exited."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from gsm8k_bench.core.errors import EvalError
from gsm8k_bench.matrix.combinations import adhoc_combination
from gsm8k_bench.serving import procs
from gsm8k_bench.serving.launchers import reserve_port
from gsm8k_bench.serving.launchers.process import process_server
from gsm8k_bench.session import plan as session_plan
from gsm8k_bench.session import run as session_run
from gsm8k_bench.session.options import parse_session_args

FAKES = Path(__file__).resolve().parent / "fakes"
STAND_IN = """
import os, sys, time, urllib.request
args = sys.argv[1:]
go, answered = args[args.index("--start-when") + 1], args[args.index("--answered-file") + 1]
while not os.path.exists(go):
    time.sleep(0.01)
open(answered, "w").close()  # every answer is in; what follows is scoring and writing
deadline = time.monotonic() + float(os.environ["STAND_IN_WAIT_S"])
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(os.environ["STAND_IN_SERVER"] + "/health", timeout=1)
    except OSError:
        print("the server was gone before lm-eval exited", flush=True)
        sys.exit(0)
    time.sleep(0.05)
print("the server still ran", flush=True)
sys.exit(3)
"""


@pytest.fixture
def plan(matrix, tmp_path, monkeypatch):
    """An ad-hoc h100 session on the process launcher, its lm-eval replaced by the stand-in."""
    combo = adhoc_combination(matrix, model="smollm2-135m", runner="h100", framework="vllm", precision="fp16", tp=1)
    options = parse_session_args(combo.name, ["--launcher", "process", "--limit", "2", "--results-dir", str(tmp_path)])
    claim = reserve_port(session_plan.HOST, combo.framework.port)
    planned = session_plan.plan_session(combo, options, matrix.defaults, session_plan.host_facts(combo, options, {}),
                                   port=claim.port)
    planned.work_dir.mkdir(parents=True)
    monkeypatch.setenv("STAND_IN_SERVER", planned.base_url)
    yield replace(planned, lm_eval_argv=[sys.executable, "-c", STAND_IN])
    claim.release()


def fake_server(plan):
    return process_server(plan.server_argv, base_url=plan.base_url, log_path=plan.work_dir / "server.log",
                          env={**os.environ, "PATH": f"{FAKES}:{os.environ['PATH']}", **plan.server_env})


def test_after_the_last_level_the_server_stops_while_lm_eval_still_runs(plan, monkeypatch):
    monkeypatch.setenv("STAND_IN_WAIT_S", "30")
    lines = []
    with fake_server(plan) as server:
        session_run.wait_ready(server, plan.served_name, 30, lines.append)
        run = session_run._eval_level(plan, server, None, lines.append, last=True)
        assert server.exit_status() == f"exited with code {-signal.SIGTERM}"
    assert "the server was gone before lm-eval exited" in (plan.work_dir / "lm-eval.log").read_text()
    assert run.concurrency == plan.settings.concurrency and run.eval_s > 0
    assert lines[-1] == f"concurrency {plan.settings.concurrency}: evaluated in {run.eval_s:.1f} s"
    assert not any((plan.work_dir / marker).exists() for marker in (session_run.GO_FILE, session_run.ANSWERED_FILE))


def test_after_an_earlier_level_the_server_keeps_running(plan, monkeypatch):
    monkeypatch.setenv("STAND_IN_WAIT_S", "2")
    with fake_server(plan) as server:
        session_run.wait_ready(server, plan.served_name, 30, lambda line: None)
        with pytest.raises(EvalError, match=r"^lm-eval exited with code 3$"):
            session_run._eval_level(plan, server, None, lambda line: None, last=False)
        assert server.exit_status() is None
    assert "the server still ran" in (plan.work_dir / "lm-eval.log").read_text()


TERM_COUNTER = """
import signal, sys, time
terms = []
signal.signal(signal.SIGTERM, lambda *_: terms.append(time.monotonic()) or print("TERM", flush=True))
print("ready", flush=True)
while not terms or time.monotonic() - terms[0] < 0.5:  # a shutdown that takes a while
    time.sleep(0.01)
sys.exit(0)
"""


@pytest.mark.parametrize("stop_begun", [True, False])
def test_a_server_sees_one_sigterm(tmp_path, stop_begun):
    log = tmp_path / "term.log"
    with process_server([sys.executable, "-c", TERM_COUNTER], base_url="http://unused", env=os.environ,
                        log_path=log) as server:
        deadline = time.monotonic() + 30
        while "ready" not in log.read_text():
            assert time.monotonic() < deadline and server.exit_status() is None, log.read_text()
            time.sleep(0.01)
        if stop_begun:
            server.begin_stop()
            server.begin_stop()
    assert log.read_text().split() == ["ready", "TERM"]
    assert server.proc.returncode == 0 and procs.live_members(server.proc.pid) == []
