"""`nox -s ci`: every session CI runs, with the mutation score beside the others.

The real-stack tests leave about one of two cores idle (servers loading, lm-eval starting, faults waited
out); the mutation score is pure CPU.  So `mutation` starts first, at idle CPU priority (SCHED_IDLE: it
runs only when nothing else wants a core, so no test waits for it), in a temporary folder of its own (GPU
claims and pytest's folders live in the temporary folder), its output kept in .nox/mutation.log and
printed when it ends.  A mutant's tests are bounded by CPU time, not the wall clock, so a wait for a core
is never taken for a hang (tests/conftest.py).  Beside it, in turn: `lint`, `tests`, `cli-parsers`.
Every session runs whatever an earlier one did; the exit code is 1 if any failed.  Ctrl-C or SIGTERM
stops the sessions started, each as a whole process group.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 60  # a session stopping its servers and containers


class Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def _idle_priority() -> None:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def start(nox: list[str], session: str) -> subprocess.Popen[bytes]:
    print(f"ci: nox -s {session}", flush=True)
    return subprocess.Popen([*nox, "-s", session], cwd=ROOT, start_new_session=True)


def start_beside(nox: list[str], session: str, log: Path, tmp: Path) -> subprocess.Popen[bytes]:
    print(f"ci: nox -s {session} beside the others, at idle CPU priority; its output: {log}", flush=True)
    with log.open("wb") as out:
        return subprocess.Popen([*nox, "-s", session], cwd=ROOT, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=_idle_priority,
                                env={**os.environ, "TMPDIR": str(tmp)})


def stop(proc: subprocess.Popen[bytes]) -> None:
    """The session's whole process group, as Ctrl-C would: nox and pytest stop their servers first."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sessions", nargs="*", default=["lint", "tests", "cli-parsers"])
    parser.add_argument("--beside", default="mutation")
    parser.add_argument("--noxfile", type=Path, default=ROOT / "noxfile.py")
    args = parser.parse_args(argv)
    nox = [sys.executable, "-m", "nox", "--no-color", "-f", str(args.noxfile)]
    log = args.noxfile.parent / ".nox" / f"{args.beside}.log"
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_stopped)
    started = time.monotonic()
    codes: dict[str, int] = {}
    tmp = Path(tempfile.mkdtemp(prefix=f"gsm8k-ci-{args.beside}-"))
    log.parent.mkdir(exist_ok=True)
    running: list[subprocess.Popen[bytes]] = []
    try:
        beside = start_beside(nox, args.beside, log, tmp)
        running.append(beside)
        for session in args.sessions:
            running.append(start(nox, session))
            codes[session] = running[-1].wait()
        if beside.poll() is None:
            print(f"ci: waiting for {args.beside}", flush=True)
        codes[args.beside] = beside.wait()
        print(log.read_text(errors="replace"), end="", flush=True)
    except Stopped as stopped:
        for signum in (signal.SIGINT, signal.SIGTERM):  # nox passes Ctrl-C on too: stop once
            signal.signal(signum, signal.SIG_IGN)
        print(f"ci: {stopped}: stopping the sessions started", file=sys.stderr, flush=True)
        for proc in running:
            stop(proc)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"ci: {len(codes)} sessions in {(time.monotonic() - started) / 60:.0f} minutes")
    for session, code in codes.items():
        print(f"* {session}: {'success' if code == 0 else f'failed (exit {code})'}")
    return 1 if any(codes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
