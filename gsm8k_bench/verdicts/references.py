"""References: a known-good run of a session, question by question, kept in the repository.

`references/<session>.json` is small enough to review in a pull request: no responses, one line per
question, `"<doc_id>:<hash of the question text>": "<strict><flexible>"` with 1 for right and 0 for
wrong (a changed question text gives another id, so a changed dataset is seen, not silently paired);
the protocol record, n, the accuracies and where the run came from; and `truncated`, the questions whose
answer hit the token limit (absent in references promoted before runs recorded it: the gate then does
not check truncation).  `nox -s promote` writes them
(gsm8k_bench/verdicts/promote.py); the gate pairs a run with its session's reference (gate.judge).
Loading validates everything and names file and key, like matrix.yaml.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import ConfigError
from gsm8k_bench.core.yaml_reader import NodeChecker
from gsm8k_bench.verdicts import paired_stats
from gsm8k_bench.verdicts.protocol import METRICS, PROTOCOL_KEYS, REASONING_DEFAULTS

KIND = "gsm8k-bench reference"
SCHEMA_VERSION = 1
QUESTIONS_FORMAT = "doc_id:sha256(question)[:10] -> strict, flexible (1 right, 0 wrong)"
QUESTION_ID = re.compile(r"^\d+:[0-9a-f]{10}$")
OUTCOME = re.compile(r"^[01]{2}$")
REQUIRED_KEYS = ("kind", "schema", "session", "n", "accuracy", "protocol", "provenance", "questions_format",
                 "questions")
TOP_KEYS = (*REQUIRED_KEYS, "truncated")
PROVENANCE_KEYS = ("framework", "framework_version", "runner", "launcher", "image", "image_id", "image_digests",
                   "server_command", "checkpoint", "model_source", "precision", "concurrency", "dataset",
                   "lm_eval", "gsm8k_bench", "git_commit", "date", "source")


@dataclass(frozen=True)
class Reference:
    session: str
    path: Path
    n: int
    protocol: Mapping[str, Any]
    accuracy: Mapping[str, float]
    outcomes: Mapping[str, Mapping[str, bool]]  # metric -> question id -> right
    provenance: Mapping[str, Any]
    truncated: frozenset[str] | None = None  # question ids that hit the token limit; None: not recorded


def reference_path(directory: Path, session: str) -> Path:
    return directory / f"{session}.json"


def is_reference(document: Any) -> bool:
    return isinstance(document, dict) and document.get("kind") == KIND


def from_session(document: Mapping[str, Any], source: str = "") -> dict[str, Any]:
    """A passed session JSON -> the reference document (pure; the caller checks it passed)."""
    config, environment = document["config"], document["environment"]
    server = config.get("server") or {}
    samples = sorted(document["samples"], key=lambda s: s["doc_id"])
    questions = {paired_stats.question_id(s["doc_id"], s.get("question")):
                 f"{int(bool(s['strict_correct']))}{int(bool(s['flexible_correct']))}" for s in samples}
    accuracy = {metric: round(sum(v[i] == "1" for v in questions.values()) / len(questions), 4)
                for i, metric in enumerate(METRICS)}
    provenance = {
        "framework": config["framework"], "framework_version": environment.get("framework_version"),
        "runner": config["runner"], "launcher": config["launcher"], "image": config.get("image"),
        "image_id": server.get("image_id"), "image_digests": server.get("image_digests"),
        "server_command": config["server_command"], "checkpoint": config["checkpoint"],
        "model_source": config.get("model_source"), "precision": config["precision"],
        "concurrency": config.get("concurrency"), "dataset": config.get("dataset"),
        "lm_eval": environment.get("lm_eval"), "gsm8k_bench": environment.get("gsm8k_bench"),
        "git_commit": environment.get("git_commit"), "date": environment.get("ended_at"), "source": source,
    }
    reference = {"kind": KIND, "schema": SCHEMA_VERSION, "session": document["session"], "n": len(questions),
                 "accuracy": accuracy, "protocol": {k: config["protocol"].get(k) for k in PROTOCOL_KEYS},
                 "provenance": provenance, "questions_format": QUESTIONS_FORMAT, "questions": questions}
    if all(s.get("outcome") for s in samples):  # a run recorded before outcome labels cannot say
        reference["truncated"] = [paired_stats.question_id(s["doc_id"], s.get("question"))
                                  for s in samples if s["outcome"] == "truncated"]
    return reference


def write(path: Path, document: Mapping[str, Any]) -> Path:
    return results.write_atomic(path, document)


def parse(document: Any, path: Path, session: str | None = None) -> Reference:
    """Validate a reference document; every problem is one ConfigError naming the file and key."""
    r = NodeChecker(path)
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise r.fail("kind", f"not a gsm8k-bench reference (expected kind {KIND!r})")
    schema = document.get("schema")
    if schema != SCHEMA_VERSION:
        age = "an older" if not isinstance(schema, int) or schema < SCHEMA_VERSION else "a newer"
        raise r.fail("schema", f"written by {age} gsm8k-bench (schema {schema!r}; this one reads "
                     f"{SCHEMA_VERSION}): promote a run of {document.get('session', 'the session')} again "
                     "with nox -s promote -- results/<session>.json")
    r.mapping(document, "(top level)", TOP_KEYS, required=REQUIRED_KEYS)
    name = r.typed(document["session"], "session", str, document, "session")
    if session is not None and name != session:
        raise r.fail("session", f"{name!r} does not match the file name (expected {session!r})")
    n = r.positive_int(document["n"], "n", document, "n")
    # A reference written before the reasoning settings existed stands for a non-reasoning run.
    protocol = {**REASONING_DEFAULTS, **r.mapping(document["protocol"], "protocol", PROTOCOL_KEYS,
                                                   required=[k for k in PROTOCOL_KEYS if k not in REASONING_DEFAULTS])}
    provenance = r.mapping(document["provenance"], "provenance", PROVENANCE_KEYS)
    questions = r.typed(document["questions"], "questions", dict, document, "questions")
    for qid, outcome in questions.items():
        if not QUESTION_ID.match(qid):
            raise r.fail(f"questions.{qid}", "a question id is <doc_id>:<10 hex digits of the question's sha256>")
        if not isinstance(outcome, str) or not OUTCOME.match(outcome):
            raise r.fail(f"questions.{qid}", f"expected two digits 0/1 (strict, flexible), got {outcome!r}")
    if len(questions) != n:
        raise r.fail("n", f"is {n} but {len(questions)} questions are listed")
    outcomes = {metric: {q: v[i] == "1" for q, v in questions.items()} for i, metric in enumerate(METRICS)}
    accuracy = r.mapping(document["accuracy"], "accuracy", METRICS, required=METRICS)
    for metric in METRICS:
        value = r.typed(accuracy[metric], f"accuracy.{metric}", (int, float), accuracy, metric)
        counted = sum(outcomes[metric].values()) / n
        if abs(value - counted) > 1e-4:
            raise r.fail(f"accuracy.{metric}", f"is {value} but the questions give {counted:.4f} (edited by hand?)")
    truncated = None
    if "truncated" in document:
        listed = r.typed(document["truncated"], "truncated", list, document, "truncated")
        unknown = [q for q in listed if not isinstance(q, str) or q not in questions]
        if unknown:
            raise r.fail("truncated", f"expected question ids listed in questions, got {unknown[:5]}")
        truncated = frozenset(listed)
    return Reference(session=name, path=path, n=n, protocol=dict(protocol), accuracy=dict(accuracy),
                     outcomes=outcomes, provenance=dict(provenance), truncated=truncated)


def load(path: Path, session: str | None = None) -> Reference:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: JSON syntax error: {exc}") from None
    return parse(document, path, session)


def find(directory: Path, session: str) -> Reference | None:
    """The session's reference in directory, validated, or None when it has none."""
    path = reference_path(directory, session)
    return load(path, session) if path.is_file() else None
