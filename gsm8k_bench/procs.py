"""Child processes in their own process group, so stopping one also stops everything it spawned
(vLLM's engine core, lm-eval's workers)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

STOP_GRACE_S = 15.0


def start(argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, start_new_session=True)


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # the whole group has already ended


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Terminate the whole group, wait, then kill what is left; safe on a process that already ended."""
    _signal_group(proc, signal.SIGTERM)
    _signal_group(proc, signal.SIGCONT)  # a stopped (hung) group acts on the SIGTERM only once continued
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    # Children can outlive the leader (vLLM's engine core): kill whatever of the group remains.
    _signal_group(proc, signal.SIGKILL)
    proc.wait(timeout=10)


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
