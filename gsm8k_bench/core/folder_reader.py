"""A results folder, read the one way the report, compare and promote all read it: as a session writes it
(`DIR/<session>.json`) or as the workflow's download-artifact lays it out (`DIR/<artifact>/<session>.json`,
one folder per artifact and job attempt); lm-eval's own files lie deeper and are not looked at.

One document per session: a rerun of a workflow uploads one artifact per attempt, and the newest attempt
(then the latest end time) stands; every file set aside is named, with why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.core.json_input import JsonInputError
from gsm8k_bench.core.paths import check_session_name
from gsm8k_bench.core.results import read
from gsm8k_bench.core.session_result import STATUSES, InvalidResult


@dataclass(frozen=True)
class ResultsFolder:
    documents: list[tuple[Path, dict[str, Any]]]  # one per session, sorted by session name
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # not a session JSON: the file, and why
    superseded: list[str] = field(default_factory=list)  # per session with several JSONs: which one stands


def json_files(folder: Path) -> list[Path]:
    """The folder's own JSON files and those one folder down (hidden files are not results)."""
    own, below = folder.glob("*.json"), (p for p in folder.glob("*/*.json") if not p.parent.name.startswith("."))
    return sorted(p for p in [*own, *below] if not p.name.startswith(".") and p.is_file())


def attempt(document: Mapping[str, Any]) -> int | None:
    value = (document.get("environment") or {}).get("ci_run_attempt")
    return value if isinstance(value, int) else None


def _rank(document: Mapping[str, Any]) -> tuple[int, str]:
    return attempt(document) or 0, str((document.get("environment") or {}).get("ended_at") or "")


def _describe(path: Path, document: Mapping[str, Any]) -> str:
    number, ended = _rank(document)
    when = ", ".join([*([f"attempt {number}"] if number else []), *([f"ended {ended}"] if ended else [])])
    return f"{path} ({document['status']}{', ' + when if when else ''})"


def newest_per_session(found: list[tuple[Path, dict[str, Any]]]) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """One file per session: the highest CI run attempt, then the latest end time; and, per session with
    more than one, a line saying which stands and which were set aside."""
    by_session: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, document in found:
        by_session.setdefault(document["session"], []).append((path, document))
    kept, superseded = [], []
    for session, files in sorted(by_session.items()):
        files.sort(key=lambda item: _rank(item[1]), reverse=True)  # stable: equal ranks keep path order
        kept.append(files[0])
        if len(files) > 1:
            superseded.append(f"{session}: {len(files)} JSONs; using {_describe(*files[0])}, not "
                              + ", ".join(_describe(*other) for other in files[1:]))
    return kept, superseded


def read_folder(folder: Path) -> ResultsFolder:
    """Every session JSON of the folder through the typed model, one per session; files that are not
    one (or whose `session` is not a session name: it would name files) are set aside with why."""
    found, skipped = [], []
    for path in json_files(folder):
        try:
            document = read(path)
            check_session_name(document["session"])
        except InvalidResult as exc:
            skipped.append((path, f"no 'session' name or no 'status' (one of {', '.join(STATUSES)})"
                            if {"session", "status"} & set(exc.keys) else str(exc).removeprefix(f"{path}: ")))
        except JsonInputError as exc:
            skipped.append((path, str(exc).removeprefix(f"{path}: ")))
        except BenchError as exc:
            skipped.append((path, f"session {exc}"))
        except ValueError:
            skipped.append((path, "not a session JSON"))
        else:
            found.append((path, document))
    documents, superseded = newest_per_session(found)
    return ResultsFolder(documents, skipped, superseded)
