"""Child processes in their own process group, so stopping one also stops everything it spawned
(vLLM's engine core, lm-eval's workers).  The group dies with the session's process, even when that is
SIGKILLed: the child asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), and a small
guard process, which asks the same, kills the whole group then (grandchildren such as vLLM's engine core
never see their parent's death).  Cleanup is shielded from a second interrupt."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

STOP_GRACE_S = 15.0
# After SIGKILL: a process with gigabytes mapped unmaps them before it closes its files and exits, which
# on a loaded machine took longer than 10 s; stop() returns once the group is gone, so waiting costs nothing.
KILL_WAIT_S = 60.0
FINE_POLL_S, FINE_POLL_FOR_S = 0.02, 2.0
PR_SET_PDEATHSIG = 1
# Set by a SIGINT/SIGTERM that arrives while children are being stopped: skip the grace, still kill.
_hurry = threading.Event()


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn (or a worker's initializer): the kernel sends SIGKILL to the child when the thread that
    started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


# The guard: SIGTERM (its own parent-death signal) kills the group; it leaves once the group is gone.
_GUARD = """
import ctypes, os, signal, sys, time
group, parent = int(sys.argv[1]), int(sys.argv[2])
def kill_group(*_):
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os._exit(0)
signal.signal(signal.SIGTERM, kill_group)
ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != parent:
    kill_group()
while True:
    time.sleep(1)
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        os._exit(0)
"""
_guards: dict[int, subprocess.Popen[bytes]] = {}


def start(argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    linux = sys.platform == "linux"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, start_new_session=True,
                                preexec_fn=die_with_parent(os.getpid()) if linux else None)
    if linux:
        _guards[proc.pid] = subprocess.Popen([sys.executable, "-c", _GUARD, str(proc.pid), str(os.getpid())],
                                             stdin=subprocess.DEVNULL, start_new_session=True)
    return proc


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # the whole group has already ended


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """Ask the whole group to end without waiting for it: SIGTERM, and SIGCONT so that a stopped
    (SIGSTOPped) group can act on it."""
    _signal_group(proc, signal.SIGTERM)
    _signal_group(proc, signal.SIGCONT)


def stop(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S, terminated: bool = False) -> None:
    """Terminate the whole group (unless the caller already did: a server never sees a second SIGTERM in
    the middle of its own shutdown), wait, then kill what is left, and return once nothing of it runs;
    safe on a process that already ended."""
    with cleanup_shield():
        if not terminated:
            terminate(proc)
        _wait_for_group(proc, grace_s, cut_short_by_hurry=True)
        # Children can outlive the leader (vLLM's engine core): kill whatever of the group remains.
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=10)
        _wait_for_group(proc, KILL_WAIT_S)  # a killed process with gigabytes mapped takes a moment to exit
        guard = _guards.pop(proc.pid, None)
        if guard:
            guard.kill()
            guard.wait(timeout=10)


def _wait_for_group(proc: subprocess.Popen[bytes], timeout_s: float, cut_short_by_hurry: bool = False) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s and not (cut_short_by_hurry and _hurry.is_set()):
        proc.poll()  # reap the leader: our child
        if not live_members(proc.pid):
            return
        # A server usually ends within a second of SIGTERM (vLLM on CPU: 0.3 s): look often then, since
        # the session waits for exactly this; then every 0.1 s (each look reads /proc).
        time.sleep(FINE_POLL_S if time.monotonic() - start < FINE_POLL_FOR_S else 0.1)


@contextmanager
def interrupts_unwind_once() -> Iterator[None]:
    """The first SIGINT or SIGTERM (Ctrl-C, CI cancelling a job, `kill` of nox) unwinds like Ctrl-C, so
    cleanup runs; later ones (CI sends SIGTERM 7.5 s after SIGINT) only shorten the cleanup's grace
    periods, so they can never skip the final kill."""
    interrupted: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if interrupted:
            hurry()
            return
        interrupted.append(signum)
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def hurry() -> None:
    """A second interrupt: cleanup skips its grace periods (and still kills)."""
    _hurry.set()


def hurried() -> bool:
    return _hurry.is_set()


@contextmanager
def cleanup_shield() -> Iterator[None]:
    """While children are stopped, SIGINT/SIGTERM (a second Ctrl-C, CI's SIGTERM after its SIGINT) no
    longer unwind the cleanup, which would skip the final kill: they cut the grace periods short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: hurry())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _members(pgid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process in the group, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            found.append((int(entry.name), fields[0]))
    return found


def live_members(pgid: int) -> list[int]:
    """PIDs of the group that still run (a zombie waits only for its parent to read its status)."""
    return [pid for pid, state in _members(pgid) if state not in ("Z", "X")]


def stopped_members(pgid: int) -> list[int]:
    """PIDs of the process group that are stopped (SIGSTOP, a debugger): alive and answering nothing."""
    return [pid for pid, state in _members(pgid) if state in ("T", "t")]


def tail(path: Path, lines: int = 50) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
