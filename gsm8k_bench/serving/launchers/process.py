"""The server as a plain child process: for CPU runners and machines without Docker."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from gsm8k_bench.serving import procs
from gsm8k_bench.serving.launchers import LOG_TAIL_LINES


class ProcessRecord(TypedDict):
    launcher: str
    pid: int
    log: str


@dataclass
class ProcessServer:
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]
    stop_begun: bool = False

    def exit_status(self) -> str | None:
        code = self.proc.poll()
        return None if code is None else f"exited with code {code}"

    def hang_status(self) -> str | None:
        stopped = procs.stopped_members(self.proc.pid)
        return f"process(es) {', '.join(map(str, stopped))} stopped (SIGSTOP?)" if stopped else None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return procs.tail(self.log_path, lines)

    def record(self) -> ProcessRecord:
        return {"launcher": "process", "pid": self.proc.pid, "log": str(self.log_path)}

    def begin_stop(self) -> None:
        if not self.stop_begun:
            self.stop_begun = True
            procs.terminate(self.proc)


@contextmanager
def process_server(argv: list[str], *, base_url: str, env: Mapping[str, str],
                   log_path: Path) -> Iterator[ProcessServer]:
    """Start the server; whatever happens inside the block, stop it and everything it spawned."""
    server = ProcessServer(base_url, procs.start(argv, log_path, env), log_path, argv)
    try:
        yield server
    finally:
        procs.stop(server.proc, terminated=server.stop_begun)
