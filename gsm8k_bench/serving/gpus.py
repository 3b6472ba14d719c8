"""Which GPUs a session runs on: given (`--gpus 0,1`), inherited (Slurm, visible-devices variables) or the
first tp; their count must equal tp.  On AMD the host GPU indices become /dev/dri/renderD* nodes through
the KFD topology (facts read first, mapping pure).  A running session claims its GPUs host-wide
(`claim`), so two sessions (two packs, a pack and a plain run) never share one.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import socket
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from gsm8k_bench.core.errors import BenchError, ConfigError

# Where inherited ids come from, first match wins.  SLURM_JOB_GPUS holds the host's indices, which is
# what a container engine on that host needs; the visible-devices variables may be renumbered by a
# device cgroup, so they only count when Slurm did not say.
INHERITED = {
    "nvidia": ("SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"),
    "amd": ("SLURM_JOB_GPUS", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"),
}
# Set in an AMD container: it sees only its own render nodes, which ROCm numbers from 0.
AMD_VISIBLE_VARS = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
KFD_TOPOLOGY = Path("/sys/class/kfd/kfd/topology/nodes")
RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
# One lock file per GPU index, shared by every user's sessions on the host (the GPUs are the host's).
GPU_LOCK_DIR = Path(tempfile.gettempdir()) / "gsm8k-bench-gpus"


class GpuRecord(TypedDict):
    ids: list[int]
    source: str
    render_nodes: list[str]


@dataclass(frozen=True)
class GpuAssignment:
    ids: tuple[int, ...]  # host GPU indices
    source: str  # "--gpus", the variable they came from, or "default"
    render_nodes: tuple[str, ...] = ()  # AMD only: /dev/dri/renderD<minor> per id

    def record(self) -> GpuRecord:
        return {"ids": list(self.ids), "source": self.source, "render_nodes": list(self.render_nodes)}

    @property
    def text(self) -> str:
        return ",".join(map(str, self.ids))


@dataclass(frozen=True)
class KfdNode:
    """One node of /sys/class/kfd/kfd/topology/nodes: CPU nodes have gpu_id 0."""

    number: int
    gpu_id: int
    render_minor: int


def parse_ids(text: str, what: str) -> tuple[int, ...]:
    """'0,1', '0-7', '0-3,6': distinct indices in the order given."""
    ids: list[int] = []
    for part in text.replace(" ", "").split(","):
        match = RANGE.match(part)
        if not match:
            raise ConfigError(f"{what}: {text!r} is not a GPU list; expected indices and ranges like 0,1 or 0-7")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise ConfigError(f"{what}: range {part!r} runs backwards")
        ids += range(first, last + 1)
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{what}: {text!r} names a GPU twice")
    return tuple(ids)


def assign(option: str | None, environ: Mapping[str, str], vendor: str, tp: int,
           topology: Sequence[KfdNode] = ()) -> GpuAssignment | None:
    """The session's GPUs; None on cpu.  Raises ConfigError when their count is not tp."""
    if vendor == "cpu":
        if option:
            raise ConfigError(f"--gpus {option}: cpu sessions use no GPU")
        return None
    source, text = "--gpus", option
    if not text:
        source, text = next(((name, environ[name]) for name in INHERITED[vendor] if environ.get(name)),
                            ("default", None))
    ids = parse_ids(text, source) if text else tuple(range(tp))
    if len(ids) != tp:
        raise ConfigError(f"{source}={text}: {len(ids)} GPU(s) given but the session runs tensor parallel "
                          f"tp={tp}; give exactly {tp} (e.g. --gpus {','.join(map(str, range(tp)))})")
    render = amd_render_nodes(topology, ids) if vendor == "amd" and topology else ()
    return GpuAssignment(ids, source, render)


def amd_render_nodes(topology: Sequence[KfdNode], ids: Sequence[int]) -> tuple[str, ...]:
    """ROCm numbers GPUs in KFD topology node order, skipping CPU nodes (gpu_id 0); each GPU node names
    its DRM render minor."""
    gpus = [node for node in sorted(topology, key=lambda n: n.number) if node.gpu_id]
    missing = [i for i in ids if i >= len(gpus)]
    if missing:
        raise ConfigError(f"GPU index {missing[0]} does not exist: the KFD topology lists {len(gpus)} GPU(s)")
    return tuple(f"/dev/dri/renderD{gpus[i].render_minor}" for i in ids)


def read_kfd_topology(root: Path = KFD_TOPOLOGY) -> list[KfdNode]:
    """The facts amd_render_nodes needs; empty where there is no KFD (not an AMD GPU host)."""
    nodes = []
    for node_dir in sorted(root.glob("[0-9]*")) if root.is_dir() else ():
        try:
            props = dict(line.split(None, 1) for line in (node_dir / "properties").read_text().splitlines()
                         if " " in line)
            gpu_id = int((node_dir / "gpu_id").read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        nodes.append(KfdNode(int(node_dir.name), gpu_id, int(props.get("drm_render_minor", "0"))))
    return nodes


def facts_for(vendor: str) -> tuple[KfdNode, ...]:
    """What assign needs to know about this host: the KFD topology on AMD, nothing elsewhere."""
    return tuple(read_kfd_topology()) if vendor == "amd" else ()


# --------------------------------------------------------------------------- host-wide claims


class GpusBusy(BenchError):
    """A GPU given to this session is claimed by another running session on this host."""


class GpuClaim:
    """GPUs no other session on this host will run on while this object lives: an flock per GPU on
    `GPU_LOCK_DIR/<index>.lock`, which names its holder.  The kernel drops it when the process ends, however
    it ends, so a crashed session never blocks the next one."""

    def __init__(self, fds: list[int]) -> None:
        self._fds = fds

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing drops the flock; the file stays (removing it would race a waiter)
        self._fds = []


def _open_lock(gpu: int, lock_dir: Path) -> int:
    lock_dir.mkdir(parents=True, exist_ok=True)
    if lock_dir.stat().st_uid == os.getuid():
        # Sticky and open to all, like /tmp: every user's sessions claim the host's GPUs here, none can
        # remove another's file.  A symlink planted in its place is refused (O_NOFOLLOW), a non-file too.
        os.chmod(lock_dir, 0o1777)  # noqa: S103
    path = lock_dir / f"{gpu}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        raise GpusBusy(f"cannot claim GPU {gpu}: {path}: {exc.strerror} (a symlink or another user's file "
                       "in its place?)") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise GpusBusy(f"cannot claim GPU {gpu}: {path} is not a regular file")
    if info.st_uid == os.getuid():
        os.fchmod(fd, 0o666)  # the umask took write access from other users' sessions
    return fd


def claim(ids: Sequence[int], session: str, lock_dir: Path = GPU_LOCK_DIR) -> GpuClaim:
    """Claim `ids` for `session` until release(), all or none; a GPU held by another session raises
    GpusBusy at once, naming that session and its pid."""
    fds: list[int] = []
    try:
        for gpu in ids:
            fd = _open_lock(gpu, lock_dir)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "a session that has not said"
                os.close(fd)
                raise GpusBusy(f"GPU {gpu} is in use by {holder}; wait for it or give this session other GPUs "
                               f"(--gpus); claims are in {lock_dir}") from None
            fds.append(fd)
            started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"session {session} (pid {os.getpid()} on {socket.gethostname()}, started {started})\n"
                      .encode(), 0)
    except BaseException:
        GpuClaim(fds).release()
        raise
    return GpuClaim(fds)
