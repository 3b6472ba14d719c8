"""Launchers start a server, expose its address and state, and always stop it (context managers).

Both launchers (a plain process, a Docker container) yield a `Server`; `wait_ready` works on either.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import requests

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import ServerError

LAUNCHERS = ("process", "docker", "pyxis")
CONTAINER_LAUNCHERS = ("docker", "pyxis")  # these run the plan's container spec
# nox turns on debug logging; a line per readiness poll would bury the server's progress.
for _noisy in ("urllib3", "docker"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)
LOG_TAIL_LINES = 50
# A server that answered /health and then stays silent this long is hung, not loading.
SILENT_AFTER_HEALTH_S = 30.0


class Server(Protocol):
    base_url: str

    def exit_status(self) -> str | None:
        """None while the server runs; else how it ended (e.g. 'exited with code 1')."""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str: ...

    def hang_status(self) -> str | None:
        """None unless the server is provably hung (e.g. its process is stopped)."""

    def record(self) -> Mapping[str, object]:
        """What the session JSON keeps about this server (command, image id, ...)."""

    def begin_stop(self) -> None:
        """Ask the server to shut down and return at once: it is no longer needed (every answer is in)
        and its shutdown can overlap lm-eval's scoring.  Leaving the launcher's block still waits for
        it to end and removes what is left."""


PORT_LOCK_DIR = Path(tempfile.gettempdir()) / f"gsm8k-bench-ports-{os.getuid()}"
PORT_SPAN = 100  # ports tried above the framework's usual one before asking the kernel


class PortClaim:
    """A port no other session on this host will pick while this object lives: an flock on a file
    per port (released by the kernel when the process ends), taken before the port is probed."""

    def __init__(self, port: int, fd: int) -> None:
        self.port, self._fd = port, fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _claim(port: int) -> PortClaim | None:
    PORT_LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(PORT_LOCK_DIR / f"{port}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return PortClaim(port, fd)


def _bindable(host: str, port: int) -> int | None:
    """The port if a server could listen on it now.  SO_REUSEADDR as servers set it: a port whose
    last connections are in TIME_WAIT (about 60 s after every run) is free, not busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return None
        address: tuple[str, int] = sock.getsockname()  # an AF_INET socket's (host, port)
        return address[1]


def reserve_port(host: str, preferred: int) -> PortClaim:
    """The framework's usual port when free and unclaimed, else the next such one above it, else one the
    kernel hands out; claimed for this session until release()."""
    for port in range(preferred, min(preferred + PORT_SPAN, 65536)):
        claim = _claim(port)
        if claim is None:
            continue  # another session on this host holds it
        if _bindable(host, port):
            return claim
        claim.release()
    for _ in range(10):
        given = _bindable(host, 0)
        claim = _claim(given) if given else None
        if claim:
            return claim
    raise ServerError(f"no free TCP port on {host}")


def _get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=5)
    except requests.RequestException:
        return None


def _served_ids(response: requests.Response) -> list[object]:
    try:
        return [m.get("id") for m in response.json().get("data", []) if isinstance(m, dict)]
    except (ValueError, AttributeError):
        return []


def wait_ready(server: Server, served_name: str, timeout_s: float,
               progress: Callable[[str], None], interval_s: float = 0.25,
               progress_every_s: float = 10.0, silent_after_health_s: float = SILENT_AFTER_HEALTH_S) -> float:
    """Poll /health, then /v1/models for this run's served name, while watching the server; seconds taken.

    A slow load is waited for (up to timeout_s); a hang is not: a stopped server process fails at the
    next poll, and a server that answered /health once and then nothing for silent_after_health_s
    fails then.  A server that answers with other models is another session's: fail, never score it."""
    start = time.monotonic()
    last_report = start
    last_health = None
    while True:
        elapsed = time.monotonic() - start
        status = server.exit_status()
        if status:
            raise ServerError(f"server {status} before it was ready ({elapsed:.0f} s)",
                              server.log_tail())
        hung = server.hang_status()
        if hung:
            raise ServerError(f"server hung before it was ready ({elapsed:.0f} s): {hung}", server.log_tail())
        health = _get(f"{server.base_url}/health")
        if health is not None and health.status_code == 200:
            last_health = time.monotonic()
            models = _get(f"{server.base_url}/v1/models")
            if models is not None and models.status_code == 200:
                ids = _served_ids(models)
                if served_name in ids:
                    return elapsed
                raise ServerError(f"{server.base_url} answers for {ids}, not this run's {served_name!r}: "
                                  "another server holds the port; this session will not score it",
                                  server.log_tail())
        elif last_health is not None and time.monotonic() - last_health > silent_after_health_s:
            raise ServerError(f"server hung before it was ready: it answered /health, then nothing for "
                              f"{silent_after_health_s:.0f} s", server.log_tail())
        if elapsed > timeout_s:
            raise ServerError(f"server not ready after {timeout_s:.0f} s (--start-timeout)",
                              server.log_tail())
        if time.monotonic() - last_report >= progress_every_s:
            last_report = time.monotonic()
            # Masked before it is cut: a cut can split a secret's encoded form and leave part of it.
            latest = results.mask(server.log_tail(1).strip())[-160:]
            progress(f"waiting for the server: {elapsed:.0f} s | {latest}")
        time.sleep(interval_s)
