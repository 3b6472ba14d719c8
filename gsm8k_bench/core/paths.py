"""Paths built from names that come from input (a downloaded JSON's `session`, a hub id made a model
name): the session-name grammar, and the check that a path stays inside its folder.  Imports nothing
beyond the standard library and core.errors: the matrix stage (and the runner scripts' system Python) use it."""

from __future__ import annotations

import re
from pathlib import Path

from gsm8k_bench.core.errors import BenchError, shorten

# What a session name may be (matrix/names.py builds them: gsm8k-<model>-<runner>-<framework>-<precision>-tp<N>).
# A name read from a file (a downloaded JSON's `session`) names files, so it must be one plain file name,
# short enough that `.<session>.json.<random>` and `.<session>.lock` stay under the common 255-byte limit.
SESSION_NAME = re.compile(r"^gsm8k-[a-z0-9][a-z0-9.-]*$")
MAX_NAME_CHARS = 200


def check_session_name(name: object) -> str:
    if not isinstance(name, str) or not SESSION_NAME.match(name):
        raise BenchError(f"{shorten(name)} is not a session name (gsm8k- followed by [a-z0-9.-], as "
                         "gsm8k-<model>-<runner>-<framework>-<precision>-tp<N>)")
    if len(name) > MAX_NAME_CHARS:
        raise BenchError(f"session name {shorten(name)} is longer than {MAX_NAME_CHARS} characters (it "
                         "names files); use a shorter model name")
    return name


def inside(folder: Path, name: str) -> Path:
    """folder/name, refused unless it resolves to a file directly in folder (no separator, `..`, absolute
    path or symlink leading elsewhere)."""
    path = folder / name
    if path.name != name or path.resolve().parent != folder.resolve():
        raise BenchError(f"{shorten(name)}: not a file name inside {folder}")
    return path
