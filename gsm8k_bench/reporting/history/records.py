"""A session JSON -> the rows the history stores for it: one run, its metrics per level, its outcomes
per question and level.  Everything is checked before anything is written: a file that does not fit is
refused with its path and the key at fault, and nothing of it is stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsm8k_bench.core import json_input, results
from gsm8k_bench.verdicts import paired_stats

# The JSON's numbers stored per level: lm-eval's metrics, then the server's.
LEVEL_NUMBERS = ("metrics", "server_metrics")


class MalformedRun(ValueError):
    """A file that is not a storable session JSON: `path: key: what is wrong`."""

    def __init__(self, path: Path, key: str, problem: str) -> None:
        self.path, self.key, self.problem = path, key, problem
        super().__init__(f"{path}: {key}: {problem}")

    def __reduce__(self) -> tuple[type[MalformedRun], tuple[Path, str, str]]:  # back from an ingest worker
        return MalformedRun, (self.path, self.key, self.problem)


@dataclass(frozen=True)
class RunRows:
    """One run, ready to insert: the run's columns, then the rows that refer to it."""

    run: dict[str, Any]
    metrics: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]

    @property
    def key(self) -> str:
        return str(self.run["run_key"])


def read(path: Path) -> dict[str, Any]:
    """The session JSON through its typed model, or MalformedRun naming the file and the key."""
    try:
        return results.read(path)
    except results.InvalidResult as exc:
        raise MalformedRun(path, ", ".join(exc.keys), str(exc).removeprefix(f"{path}: ")) from None
    except json_input.JsonInputError as exc:  # not JSON, not UTF-8, too large or too deep
        raise MalformedRun(path, "(the file)", str(exc).removeprefix(f"{path}: ")) from None
    except ValueError as exc:  # a JSON document, but no schema/session: not a session JSON
        raise MalformedRun(path, "schema", str(exc).removeprefix(f"{path}: ")) from None


def run_key(document: Mapping[str, Any]) -> str:
    """The natural key: session, run id, start and CI attempt.  A run that has neither run id nor start
    (a stub of a job that died early) is keyed by its content."""
    environment = document.get("environment") or {}
    run_id, started = environment.get("run_id"), environment.get("started_at")
    if not run_id and not started:
        digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]
        return f"{document['session']}|content:{digest}"
    return f"{document['session']}|{run_id or ''}|{started or ''}|{environment.get('ci_run_attempt') or 0}"


def _started_at(path: Path, document: Mapping[str, Any], fallback: dt.datetime | None) -> dt.datetime:
    """The run's start, UTC; a stub without one: `fallback`, else the file's modification time."""
    value = (document.get("environment") or {}).get("started_at")
    if not value:
        return fallback or dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).replace(tzinfo=None)
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise MalformedRun(path, "environment.started_at", f"{value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise MalformedRun(path, "environment.started_at", f"{value!r} has no time zone (UTC expected)")
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _numbers(block: Mapping[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (block or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def _outcome_rows(path: Path, key: str, samples: Sequence[Mapping[str, Any]], level: int) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for index, sample in enumerate(samples):
        for field in paired_stats.CORRECT_FIELD.values():
            if not isinstance(sample.get(field), bool):
                raise MalformedRun(path, f"{key}.{index}.{field}", "missing (true or false expected)")
        doc_id = sample["doc_id"]
        if doc_id in rows:
            raise MalformedRun(path, f"{key}.{index}.doc_id", f"question {doc_id} appears twice")
        qid = paired_stats.question_id(doc_id, sample.get("question"))
        rows[doc_id] = {"concurrency": level, "doc_id": doc_id, "question_hash": qid.split(":", 1)[1],
                        "strict": sample["strict_correct"], "flexible": sample["flexible_correct"]}
    return list(rows.values())


def rows_of(path: Path, document: Mapping[str, Any], *, workflow_run_id: str | None = None,
            fallback_time: dt.datetime | None = None) -> RunRows:
    """The rows of one session JSON (already read through its model)."""
    config = document.get("config") or {}
    environment = document.get("environment") or {}
    server = config.get("server") or {}
    gate = document.get("gate") or {}
    block = document.get("concurrency")
    gate_level = (block or {}).get("gate_level") or config.get("concurrency") or 1
    protocol = config.get("protocol")
    run = {
        "run_key": run_key(document), "session": document["session"], "model": config.get("model"),
        "runner": config.get("runner"), "framework": config.get("framework"),
        "precision": config.get("precision"), "tp": config.get("tp"), "status": document["status"],
        "verdict": gate.get("verdict"), "image": config.get("image"),
        "image_digest": next(iter(server.get("image_digests") or []), None) or server.get("image_id"),
        "framework_version": environment.get("framework_version"), "checkpoint": config.get("checkpoint"),
        "git_commit": environment.get("git_commit"), "run_id": environment.get("run_id"),
        "ci_run_attempt": environment.get("ci_run_attempt"), "workflow_run_id": workflow_run_id,
        "protocol": json.dumps(protocol, sort_keys=True) if protocol else None,
        "question_limit": config.get("limit"), "gate_concurrency": gate_level,
        "started_at": _started_at(path, document, fallback_time), "source": str(path),
    }
    levels: list[tuple[int, Mapping[str, Any], str, Sequence[Mapping[str, Any]]]] = []
    levels.append((gate_level, document, "samples", document.get("samples") or []))
    for index, record in enumerate((block or {}).get("runs") or []):
        if record["concurrency"] != gate_level:
            levels.append((record["concurrency"], record, f"concurrency.runs.{index}.samples",
                           record.get("samples") or []))
    metric_rows, outcome_rows = [], []
    for level, holder, samples_key, samples in levels:
        numbers: dict[str, float] = {}
        for name in LEVEL_NUMBERS:
            numbers.update(_numbers(holder.get(name)))
        metric_rows += [{"concurrency": level, "metric": metric, "value": value} for metric, value in numbers.items()]
        outcome_rows += _outcome_rows(path, samples_key, samples, level)
    return RunRows(run, metric_rows, outcome_rows)
