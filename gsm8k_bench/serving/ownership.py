"""Who a run is: the id its server must echo, the lock on its results, and the owner label of its
container, from which a later sweep can tell whether that run is gone (and never touches a live one)."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import BenchError, ConfigError

OWNER_LABEL = "gsm8k-bench.owner"


# Set by a runner that starts the session (a pack) to the id it chose: the session records it in its JSON,
# so the runner collects the JSON its own child wrote and no other run's.
RUN_ID_VARIABLE = "GSM8K_BENCH_RUN_ID"
RUN_ID = re.compile(r"[0-9a-f]{6}")


def new_run_id() -> str:
    """Six hex digits: the served model name `<model>-<id>` tells this run's server from any other."""
    return secrets.token_hex(3)


def run_id_from(environ: Mapping[str, str]) -> str:
    """The id a runner chose (RUN_ID_VARIABLE), else a new one."""
    given = environ.get(RUN_ID_VARIABLE)
    if given is None:
        return new_run_id()
    if not RUN_ID.fullmatch(given):
        raise ConfigError(f"{RUN_ID_VARIABLE}={given[:40]!r}: a run id is six lowercase hex digits (e.g. a1b2c3)")
    return given


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def process_start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: a pid reused later has another."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


@dataclass(frozen=True)
class Owner:
    host: str
    boot_id: str
    pid: int
    start_ticks: str

    def label(self) -> str:
        return f"{self.host}/{self.boot_id}/{self.pid}/{self.start_ticks}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        parts = text.split("/")
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), parts[3])

    def is_gone(self, here: Owner) -> bool:
        """True only when this host can prove it: same host, and another boot or a dead (or reused) pid.
        Another host's run is never judged gone."""
        if self.host != here.host:
            return False
        if self.boot_id != here.boot_id:
            return True
        return process_start_ticks(self.pid) != self.start_ticks


def current_owner() -> Owner:
    return Owner(socket.gethostname(), _boot_id(), os.getpid(), process_start_ticks(os.getpid()) or "0")


# --------------------------------------------------------------------------- results-dir lock


def usable_results_dir(results_dir: Path) -> Path:
    """The results folder, created; a file in its place or no write access is a clear error."""
    try:
        return results.output_folder(results_dir.expanduser().resolve(), "--results-dir")
    except BenchError as exc:
        raise ConfigError(str(exc)) from None


class SessionBusy(BenchError):
    """Another run of the same session is writing into the same results folder."""


class ResultsLock:
    """An flock on `<results-dir>/.<session>.lock` for the whole run.  The kernel releases it when the
    process ends, however it ends, so a crashed run never blocks the next one."""

    def __init__(self, results_dir: Path, session: str) -> None:
        self.path = usable_results_dir(results_dir) / f".{session}.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode("utf-8", "replace").strip() or "unknown holder"
            os.close(self._fd)
            raise SessionBusy(f"{session} is already running into {self.path.parent} ({holder}); wait for it "
                              "or use another --results-dir") from None
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock; the file stays (removing it would race a waiter)
            self._fd = -1

    def __enter__(self) -> ResultsLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
