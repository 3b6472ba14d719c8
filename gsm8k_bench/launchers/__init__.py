"""Launchers start a server, expose its address and state, and always stop it (context managers).

Both launchers (a plain process, a Docker container) yield a `Server`; `wait_ready` works on either.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Protocol

import requests

from gsm8k_bench.errors import ServerError

LAUNCHERS = ("process", "docker")
# nox turns on debug logging; a line per readiness poll would bury the server's progress.
for _noisy in ("urllib3", "docker"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)
LOG_TAIL_LINES = 50


class Server(Protocol):
    base_url: str

    def exit_status(self) -> str | None:
        """None while the server runs; else how it ended (e.g. 'exited with code 1')."""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str: ...

    def record(self) -> dict:
        """What the session JSON keeps about this server (command, image id, ...)."""


def pick_port(host: str, preferred: int) -> int:
    """The framework's usual port when free, else one the kernel hands out."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise ServerError(f"no free TCP port on {host}")


def _get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=5)
    except requests.RequestException:
        return None


def wait_ready(server: Server, served_name: str, timeout_s: float,
               progress: Callable[[str], None], interval_s: float = 0.25,
               progress_every_s: float = 10.0) -> float:
    """Poll /health, then /v1/models for the served name, while watching the server; seconds taken."""
    start = time.monotonic()
    last_report = start
    while True:
        elapsed = time.monotonic() - start
        status = server.exit_status()
        if status:
            raise ServerError(f"server {status} before it was ready ({elapsed:.0f} s)",
                              server.log_tail())
        health = _get(f"{server.base_url}/health")
        if health is not None and health.status_code == 200:
            models = _get(f"{server.base_url}/v1/models")
            if models is not None and models.status_code == 200:
                ids = [m.get("id") for m in models.json().get("data", [])]
                if served_name in ids:
                    return elapsed
                raise ServerError(f"server is up but serves {ids}, not {served_name!r}",
                                  server.log_tail())
        if elapsed > timeout_s:
            raise ServerError(f"server not ready after {timeout_s:.0f} s (--start-timeout)",
                              server.log_tail())
        if time.monotonic() - last_report >= progress_every_s:
            last_report = time.monotonic()
            latest = server.log_tail(1).strip()[-160:]
            progress(f"waiting for the server: {elapsed:.0f} s | {latest}")
        time.sleep(interval_s)
