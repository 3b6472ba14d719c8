"""Live progress on the real stack: vLLM's CPU build serving SmolLM2, the real lm-eval.

One run with its output redirected (the CI case: plain lines at a cadence, no control characters,
numbers from the server's real /metrics), and one run on a pseudo-terminal (one line rewritten in
place) whose server is frozen with SIGSTOP during the evaluation: the session must call the stall,
fail with its JSON written, and leave no process behind.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_GSM8K, require
from test_integration import SESSION, env, nox_argv, processes_writing_to, wait_for

pytestmark = pytest.mark.integration
LINE = re.compile(rb"eval (\d+)/(\d+) answered \| (\d+) in flight \| ([\d.]+|\xe2\x80\x93) output tok/s \| "
                  rb"([^|\r\n]+) elapsed")
INTERVAL_S = 2.0
STALL_S = 15.0
# After the stall is called: one more /metrics timeout and poll, then lm-eval and the server are stopped
# (a SIGTERM each, a SIGKILL after procs.STOP_GRACE_S).
STALL_BOUND_S = STALL_S + 45.0


@pytest.fixture(scope="module")
def dataset() -> Path:
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    return SHARED_GSM8K


def test_redirected_output_gets_plain_progress_lines_from_the_servers_metrics(dataset, tmp_path):
    proc = subprocess.Popen(nox_argv(SESSION, "--dataset-dir", str(dataset), "--limit", "10", "--results-dir",
                                     str(tmp_path), "--progress-interval", str(INTERVAL_S)),
                            cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watchdog = threading.Timer(1500, proc.kill)
    watchdog.start()
    try:
        received = [(time.monotonic(), raw) for raw in proc.stdout]
        proc.wait()
    finally:
        watchdog.cancel()
    output = b"".join(raw for _, raw in received)
    assert proc.returncode == 0, output[-4000:].decode(errors="replace")
    assert b"\r" not in output and b"\x1b" not in output  # nothing a log viewer would garble

    progress = [(at, LINE.search(raw), raw) for at, raw in received if LINE.search(raw)]
    *periodic, (_, last, last_raw) = progress
    assert len(periodic) >= 3, output.decode(errors="replace")
    for _, match, raw in progress:
        assert all(ch.isprintable() for ch in raw.decode().rstrip("\n")), raw
        assert int(match.group(2)) == 10
    # Cadence: never more often than the interval (what arrives late may arrive together, so a margin).
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(periodic)]
    assert min(gaps) >= INTERVAL_S * 0.75, gaps
    answered = [int(m.group(1)) for _, m, _ in progress]
    assert answered == sorted(answered) and answered[-1] == 10 and last_raw.rstrip().endswith(b"| done")
    # Parsed from the real server while it worked: requests in flight and tokens flowing.
    assert any(int(m.group(3)) > 0 for _, m, _ in periodic)
    assert any(m.group(4) != b"\xe2\x80\x93" and float(m.group(4)) > 0 for _, m, _ in periodic)

    doc = json.loads((tmp_path / f"{SESSION}.json").read_text())
    assert doc["status"] == "passed" and doc["server_metrics"]["requests"] == 10
    assert float(last.group(4)) == pytest.approx(doc["server_metrics"]["output_tokens_per_s"], rel=0.3)
    # The last lines: the table, then nothing else from the session.
    text = output.decode()
    table = text[text.rindex(f"{SESSION}: passed"):]
    for needle in ("metric", "strict-match", "flexible-extract", "upper bound (95%)", "output tokens/s",
                   "time to ready", "eval time", f"result           {(tmp_path / SESSION).resolve()}.json"):
        assert needle in table, needle


def read_all(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer closed the terminal
            return
        if not chunk:
            return
        into.extend(chunk)


def test_a_hung_server_on_a_terminal_is_called_a_stall_and_cleaned_up(dataset, tmp_path):
    work = tmp_path / SESSION
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    screen = bytearray()
    proc = subprocess.Popen(nox_argv(SESSION, "--dataset-dir", str(dataset), "--limit", "20", "--results-dir",
                                     str(tmp_path), "--stall-timeout", str(STALL_S)),
                            cwd=ROOT, env=env(), stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    reader = threading.Thread(target=read_all, args=(master, screen), daemon=True)
    reader.start()
    group = None
    try:
        wait_for(lambda: re.search(rb"\reval [1-9]\d*/20 answered", screen), 900, "a first answer")
        group = os.getpgid(processes_writing_to(work / "server.log")[0])
        os.killpg(group, signal.SIGSTOP)  # the server hangs: alive, its port open, answering nothing
        stopped_at = time.monotonic()
        proc.wait(timeout=STALL_BOUND_S + 60)
        took = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if group is not None and processes_writing_to(work / "server.log"):
            os.killpg(group, signal.SIGCONT)  # what the session should have done; never leave it behind
            os.killpg(group, signal.SIGKILL)
        reader.join(timeout=10)
        os.close(master)
    assert proc.returncode != 0
    assert STALL_S - 5 <= took <= STALL_BOUND_S, took  # idle time may start just before the stop
    doc = json.loads((tmp_path / f"{SESSION}.json").read_text())
    assert doc["status"] == "failed"
    assert re.match(r"evaluation: no progress for \d+ s with \d+ requests in flight: the server looks hung",
                    doc["error"]["message"]), doc["error"]
    assert not processes_writing_to(work / "server.log")
    assert not processes_writing_to(work / "lm-eval.log")

    # The terminal form: one line rewritten in place (several updates between two newlines), then the
    # stall on it, then the table on lines of their own.
    lines = bytes(screen).split(b"\n")
    assert any(line.count(b"\reval ") >= 3 and b"\x1b[K" in line for line in lines)
    assert b"STALLED: no progress for" in screen
    assert f"{SESSION}: failed: evaluation: no progress for".encode() in screen
