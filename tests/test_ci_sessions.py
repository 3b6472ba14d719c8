"""ci/run_sessions.py (`nox -s ci`) on a noxfile of its own: the sessions in turn, one beside them at idle
CPU priority in its own temporary folder, every failure counted; a real SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from conftest import ROOT
from test_integration import wait_for

SCRIPT = ROOT / "ci" / "run_sessions.py"
NOXFILE = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    import nox

    OUT = Path(os.environ["CI_SESSIONS_OUT"])
    SLEEPER = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpgid(0))); time.sleep(float(sys.argv[2]))"

    @nox.session(venv_backend="none")
    def beside(session):
        (OUT / "beside.txt").write_text(f"{os.sched_getscheduler(0)} {os.environ['TMPDIR']}")
        session.run(sys.executable, "-c", SLEEPER, str(OUT / "beside.pgid"), os.environ["BESIDE_S"], external=True)
        print("beside: done")

    @nox.session(venv_backend="none")
    def ok(session):
        print("ok: ran")

    @nox.session(venv_backend="none")
    def fails(session):
        session.error("fails on purpose")

    @nox.session(venv_backend="none")
    def waits(session):
        session.run(sys.executable, "-c", SLEEPER, str(OUT / "waits.pgid"), "600", external=True)
''')


def run_sessions(tmp_path: Path, beside_s: str, *sessions: str) -> subprocess.Popen[str]:
    noxfile = tmp_path / "noxfile.py"
    noxfile.write_text(NOXFILE)
    env = {**os.environ, "CI_SESSIONS_OUT": str(tmp_path), "BESIDE_S": beside_s}
    return subprocess.Popen([sys.executable, str(SCRIPT), "--noxfile", str(noxfile), "--beside", "beside",
                             *sessions], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sessions_run_in_turn_beside_one_at_idle_priority_and_a_failure_fails_the_whole(tmp_path):
    proc = run_sessions(tmp_path, "1", "fails", "ok")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    # A failed session does not stop the next; the one beside is waited for and its output printed.
    assert "ok: ran" in output and "beside: done" in output
    assert output.index("* fails: failed (exit 1)") < output.index("* ok: success") < output.index(
        "* beside: success")
    policy, tmpdir = (tmp_path / "beside.txt").read_text().split()
    assert int(policy) == os.SCHED_IDLE
    assert Path(tmpdir).parent == Path(tempfile.gettempdir()) and not Path(tmpdir).exists()  # its own, removed


def test_a_sigterm_stops_the_running_session_and_the_one_beside(tmp_path):
    proc = run_sessions(tmp_path, "600", "ok", "waits")
    try:
        wait_for(lambda: (tmp_path / "waits.pgid").is_file() and (tmp_path / "beside.pgid").is_file(), 120,
                 "both sessions' sleepers")
        groups = [int((tmp_path / f"{name}.pgid").read_text()) for name in ("waits", "beside")]
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "ci: SIGTERM: stopping the sessions started" in output, output
    assert not [pgid for pgid in groups if group_alive(pgid)]
