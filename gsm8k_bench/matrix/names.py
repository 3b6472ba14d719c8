"""A session's name, `gsm8k-<model>-<runner>-<framework>-<precision>-tp<N>`, and the key it spells out.

The combination key (model, runner, framework, precision, tp) is what include/exclude rules and
baselines filter on; its parts' names are checked here so that a session name splits back unambiguously.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import NamedTuple

from gsm8k_bench.core.errors import ConfigError

# Runner, framework and precision names carry no dash, so a session name splits back unambiguously.
PART_NAME = re.compile(r"^[a-z0-9][a-z0-9.]*$")
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9.]*(-[a-z0-9.]+)*$")
# What a whole session name may be, and how long (it names files), is core.paths.check_session_name's:
# every reader of a results folder checks names read from files against it too.


class ComboKey(NamedTuple):
    """What tells one combination from another: the names of its parts and its tensor-parallel size."""

    model: str
    runner: str
    framework: str
    precision: str
    tp: int


COMBO_KEYS = ComboKey._fields  # ("model", "runner", "framework", "precision", "tp")


def session_name(key: ComboKey) -> str:
    return f"gsm8k-{key.model}-{key.runner}-{key.framework}-{key.precision}-tp{key.tp}"


def model_name_from(checkpoint: str) -> str:
    """A session-name-safe short name for a checkpoint in no matrix entry (its last path part)."""
    name = re.sub(r"[^a-z0-9.]+", "-", PurePath(checkpoint.rstrip("/")).name.lower()).strip("-")
    if not MODEL_NAME.match(name):
        raise ConfigError(f"cannot derive a session name from the checkpoint {checkpoint!r}; give a short "
                          "name as the model and the checkpoint separately")
    return name
