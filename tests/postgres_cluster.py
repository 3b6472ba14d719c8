"""A private PostgreSQL cluster for the history's tests and benchmark: Debian's postgresql package,
`initdb` and `pg_ctl` run as the unprivileged `postgres` user in a fresh folder, listening on a Unix socket
in that folder only (no TCP), trust authentication for that socket.  Nothing of the machine's own
PostgreSQL (if any) is touched."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "postgres"


def binaries() -> Path | None:
    """The newest installed server's bin folder (/usr/lib/postgresql/<major>/bin), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def missing() -> str | None:
    """Why no private cluster can start here, or None."""
    if binaries() is None:
        return "PostgreSQL's server (Debian's postgresql package: /usr/lib/postgresql/*/bin/initdb)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"the {USER} user (Debian's postgresql package creates it)"
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != USER:
        return f"root or {USER}, to run initdb as {USER}"
    return None


def _as_postgres(argv: list[str]) -> list[str]:
    return argv if pwd.getpwuid(os.geteuid()).pw_name == USER else ["runuser", "-u", USER, "--", *argv]


def _free_port() -> int:
    with socket.socket() as probe:  # the port only names the socket file; a free TCP one avoids clashes
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gsm8k-history-pg."))
        account = pwd.getpwnam(USER)
        os.chown(self.dir, account.pw_uid, account.pw_gid)
        self.data = self.dir / "data"
        self.port = _free_port()
        self.bin = binaries()
        assert self.bin is not None
        subprocess.run(_as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
                                     "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                                     "-w", "-o", f"-k {self.dir} -p {self.port} -c listen_addresses=''", "start"]),
                       check=True, capture_output=True)
        self.databases = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@/{database}?host={self.dir}&port={self.port}"

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        self.databases += 1
        name = f"history{self.databases}"
        subprocess.run([str(self.bin / "psql"), "-h", str(self.dir), "-p", str(self.port), "-U", USER, "-d",
                        "postgres", "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
