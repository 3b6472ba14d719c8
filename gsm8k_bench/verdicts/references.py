"""References: a known-good run of a session, question by question, kept in the repository.

`references/<session>.json` is small enough to review in a pull request: no responses, one line per
question, `"<doc_id>:<hash of the question text and answer key>": "<strict><flexible>"`, each digit the
number of the reference's `runs` that answered it right (a changed question or answer key gives another id,
so a changed dataset is seen, not silently paired); `runs`, how many runs from separate server starts it
was built from (1 or 2: a two-run reference is judged with the exchangeable exact test, paired_stats); the
protocol record and its fingerprint, n, the accuracies (the mean over the runs), where the runs came from,
its lineage: n and accuracies of the references it replaced, oldest (the first) first; and `truncated`, the
questions whose answer hit the token limit, with the number of runs in which it did (absent in references
promoted before runs recorded it: the gate then does not check truncation).  Schema 1 and 2 files are one
run each (`truncated` a list); schema 1 files (ids of the question text alone, no fingerprint, no lineage)
still load.  `nox -s promote` writes them
(gsm8k_bench/verdicts/promote.py); the gate pairs a run with its session's reference (gate.judge).
Loading validates everything and names file and key, like matrix.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsm8k_bench.core import json_input, paths, results
from gsm8k_bench.core.errors import BenchError, ConfigError
from gsm8k_bench.core.yaml_reader import NodeChecker
from gsm8k_bench.verdicts import paired_stats
from gsm8k_bench.verdicts.paired_stats import CORRECT_FIELD as CORRECT
from gsm8k_bench.verdicts.protocol import FINGERPRINT_PARTS, METRICS, PROTOCOL_KEYS, REASONING_DEFAULTS

KIND = "gsm8k-bench reference"
MAX_FILE_BYTES = 16 * 1024 * 1024  # a full run's reference is about 40 kB
SCHEMA_VERSION = 3
READABLE_SCHEMAS = (1, 2, 3)  # 1: question ids of the question text alone; 1, 2: one run, `truncated` a list
MAX_RUNS = 2  # runs a reference combines (promote builds one from one or two)
QUESTIONS_FORMAT = ("doc_id:sha256(question NUL target)[:10] -> strict, flexible: the number of the reference's "
                    "runs that answered right")
QUESTION_ID = re.compile(r"^\d+:[0-9a-f]{10}$")
REQUIRED_KEYS = ("kind", "schema", "session", "n", "accuracy", "protocol", "provenance", "questions_format",
                 "questions")
TOP_KEYS = (*REQUIRED_KEYS, "fingerprint", "lineage", "truncated", "runs")
LINEAGE_KEYS = ("n", "accuracy", "git_commit", "date", "source")
PROVENANCE_KEYS = ("framework", "framework_version", "runner", "launcher", "image", "image_id", "image_digests",
                   "server_command", "checkpoint", "model_source", "precision", "concurrency", "dataset",
                   "lm_eval", "gsm8k_bench", "git_commit", "date", "source", "server_starts")

SERVER_START_KEYS = ("started_at", "run_id", "host", "git_commit", "ended_at")  # a run's, in provenance.server_starts


@dataclass(frozen=True)
class Reference:
    session: str
    path: Path
    n: int
    protocol: Mapping[str, Any]
    accuracy: Mapping[str, float]
    outcomes: Mapping[str, Mapping[str, bool]]  # metric -> question id -> right in every run
    provenance: Mapping[str, Any]
    ids_cover_target: bool = True  # False: a schema 1 file, ids of the question text alone
    fingerprint: Mapping[str, Any] | None = None  # None: written before fingerprints
    lineage: tuple[Mapping[str, Any], ...] = ()  # the references it replaced, oldest first
    truncated: Mapping[str, int] | None = None  # question id -> runs it hit the token limit in; None: not recorded
    runs: int = 1  # runs from separate server starts it was built from
    counts: Mapping[str, Mapping[str, int]] | None = None  # metric -> question id -> runs right; None: outcomes

    def right_counts(self, metric: str) -> Mapping[str, int]:
        """Question id -> the number of the reference's runs that answered it right under `metric`."""
        return self.counts[metric] if self.counts is not None else {q: int(v) for q, v in self.outcomes[metric].items()}

    def lineage_entry(self) -> dict[str, Any]:
        """This reference as a line of its successor's lineage."""
        return {"n": self.n, "accuracy": dict(self.accuracy), "git_commit": self.provenance.get("git_commit"),
                "date": self.provenance.get("date"), "source": self.provenance.get("source")}


def reference_path(directory: Path, session: str) -> Path:
    """`<directory>/<session>.json`; a name that is not a session name, or leads outside, is refused."""
    return results.result_path(directory, session)


def is_reference(document: Any) -> bool:
    return isinstance(document, dict) and document.get("kind") == KIND


def from_session(document: Mapping[str, Any], source: str = "") -> dict[str, Any]:
    """A passed session JSON -> the reference document (pure; the caller checks it passed)."""
    return from_sessions([document], [source])


def from_sessions(documents: list[Mapping[str, Any]], sources: list[str]) -> dict[str, Any]:
    """Passed session JSONs of one session, protocol and question set, from separate server starts (the
    caller checks all three) -> one reference: per question, how many of them answered right."""
    document, runs = documents[0], len(documents)
    config, environment = document["config"], document["environment"]
    server = config.get("server") or {}
    samples = sorted(document["samples"], key=lambda s: s["doc_id"])
    per_run = [{paired_stats.sample_id(s): s for s in d["samples"]} for d in documents]
    questions = {qid: "".join(str(sum(bool(run[qid][CORRECT[m]]) for run in per_run)) for m in METRICS)
                 for qid in (paired_stats.sample_id(s) for s in samples)}
    accuracy = {metric: round(sum(int(v[i]) for v in questions.values()) / (len(questions) * runs), 4)
                for i, metric in enumerate(METRICS)}
    source = " + ".join(sources)
    provenance = {
        "framework": config.get("framework"), "framework_version": environment.get("framework_version"),
        "runner": config.get("runner"), "launcher": config.get("launcher"), "image": config.get("image"),
        "image_id": server.get("image_id"), "image_digests": server.get("image_digests"),
        "server_command": config.get("server_command"), "checkpoint": config.get("checkpoint"),
        "model_source": config.get("model_source"), "precision": config.get("precision"),
        "concurrency": config.get("concurrency"), "dataset": config.get("dataset"),
        "lm_eval": environment.get("lm_eval"), "gsm8k_bench": environment.get("gsm8k_bench"),
        "git_commit": environment.get("git_commit"), "date": environment.get("ended_at"), "source": source,
        "server_starts": [{"source": name, **{k: d["environment"].get(k) for k in SERVER_START_KEYS}}
                          for name, d in zip(sources, documents, strict=True)],
    }
    reference = {"kind": KIND, "schema": SCHEMA_VERSION, "session": document["session"], "runs": runs,
                 "n": len(questions),
                 "accuracy": accuracy, "protocol": {k: config["protocol"].get(k) for k in PROTOCOL_KEYS},
                 "provenance": provenance, "fingerprint": config.get("fingerprint"), "lineage": [],
                 "questions_format": QUESTIONS_FORMAT, "questions": questions}
    if all(s.get("outcome") for d in documents for s in d["samples"]):  # runs before outcome labels cannot say
        truncated = {qid: sum(run[qid]["outcome"] == "truncated" for run in per_run) for qid in questions}
        reference["truncated"] = {qid: count for qid, count in truncated.items() if count}
    return reference


def with_lineage(document: Mapping[str, Any], replaced: Reference | None) -> dict[str, Any]:
    """The reference document to write over `replaced`: its lineage is the replaced one's plus it."""
    if replaced is None:
        return dict(document)
    return {**document, "lineage": [*replaced.lineage, replaced.lineage_entry()]}


def write(path: Path, document: Mapping[str, Any]) -> Path:
    return results.write_atomic(path, document)


def parse(document: Any, path: Path, session: str | None = None) -> Reference:
    """Validate a reference document; every problem is one ConfigError naming the file and key."""
    r = NodeChecker(path)
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise r.fail("kind", f"not a gsm8k-bench reference (expected kind {KIND!r})")
    schema = document.get("schema")
    if schema not in READABLE_SCHEMAS:
        age = "an older" if not isinstance(schema, int) or schema < SCHEMA_VERSION else "a newer"
        raise r.fail("schema", f"written by {age} gsm8k-bench (schema {schema!r}; this one reads "
                     f"{', '.join(map(str, READABLE_SCHEMAS))}): promote a run of "
                     f"{document.get('session', 'the session')} again "
                     "with nox -s promote -- results/<session>.json")
    r.mapping(document, "(top level)", TOP_KEYS, required=REQUIRED_KEYS)
    name = r.typed(document["session"], "session", str, document, "session")
    try:
        paths.check_session_name(name)
    except BenchError as exc:
        raise r.fail("session", str(exc)) from None
    if session is not None and name != session:
        raise r.fail("session", f"{name!r} does not match the file name (expected {session!r})")
    n = r.positive_int(document["n"], "n", document, "n")
    runs = r.positive_int(document.get("runs", 1), "runs", document, "runs")
    if runs > MAX_RUNS or (schema < 3 and runs != 1):
        raise r.fail("runs", f"expected 1{' or ' + str(MAX_RUNS) if schema >= 3 else ''} (runs a reference "
                     f"combines), got {runs}")
    # A reference written before the reasoning settings existed stands for a non-reasoning run.
    protocol = {**REASONING_DEFAULTS, **r.mapping(document["protocol"], "protocol", PROTOCOL_KEYS,
                                                   required=[k for k in PROTOCOL_KEYS if k not in REASONING_DEFAULTS])}
    provenance = r.mapping(document["provenance"], "provenance", PROVENANCE_KEYS)
    questions = r.typed(document["questions"], "questions", dict, document, "questions")
    digits = "".join(map(str, range(runs + 1)))
    for qid, outcome in questions.items():
        if not QUESTION_ID.match(qid):
            raise r.fail(f"questions.{qid}", "a question id is <doc_id>:<10 hex digits of the question's sha256>")
        if not isinstance(outcome, str) or len(outcome) != 2 or any(c not in digits for c in outcome):
            raise r.fail(f"questions.{qid}", f"expected two digits {'/'.join(digits)} (strict, flexible: runs of "
                         f"{runs} right), got {outcome!r}")
    if len(questions) != n:
        raise r.fail("n", f"is {n} but {len(questions)} questions are listed")
    counts = {metric: {q: int(v[i]) for q, v in questions.items()} for i, metric in enumerate(METRICS)}
    outcomes = {metric: {q: c == runs for q, c in counts[metric].items()} for metric in METRICS}
    accuracy = r.mapping(document["accuracy"], "accuracy", METRICS, required=METRICS)
    for metric in METRICS:
        value = r.typed(accuracy[metric], f"accuracy.{metric}", (int, float), accuracy, metric)
        if not 0 <= value <= 1:  # NaN too
            raise r.fail(f"accuracy.{metric}", f"expected a number from 0 to 1, got {value!r}")
        counted = sum(counts[metric].values()) / (n * runs)
        if abs(value - counted) > 1e-4:
            raise r.fail(f"accuracy.{metric}", f"is {value} but the questions give {counted:.4f} (edited by hand?)")
    truncated = None
    if "truncated" in document:
        kind: type = list if schema < 3 else dict  # schema 3: question id -> runs truncated
        listed: list[Any] | dict[str, Any] = r.typed(document["truncated"], "truncated", kind, document, "truncated")
        unknown = [q for q in listed if not isinstance(q, str) or q not in questions]
        if unknown:
            raise r.fail("truncated", f"expected question ids listed in questions, got {unknown[:5]}")
        truncated = dict.fromkeys(listed, 1) if isinstance(listed, list) else dict(listed)
        wrong = [q for q, c in truncated.items() if not isinstance(c, int) or isinstance(c, bool) or not 0 < c <= runs]
        if wrong:
            raise r.fail("truncated", f"expected a count of 1..{runs} runs per question, got "
                         f"{ {q: truncated[q] for q in wrong[:5]} }")
    return Reference(session=name, path=path, n=n, protocol=dict(protocol), accuracy=dict(accuracy),
                     outcomes=outcomes, provenance=dict(provenance), ids_cover_target=schema >= 2,
                     fingerprint=_fingerprint(r, document), lineage=_lineage(r, document),
                     truncated=truncated, runs=runs, counts=counts if runs > 1 else None)


def _fingerprint(r: NodeChecker, document: Mapping[str, Any]) -> dict[str, Any] | None:
    if document.get("fingerprint") is None:
        return None
    record = r.mapping(document["fingerprint"], "fingerprint", ("sha256", "n", "parts"), required=("sha256", "parts"))
    parts = r.mapping(record["parts"], "fingerprint.parts", FINGERPRINT_PARTS, required=FINGERPRINT_PARTS)
    return {**record, "parts": dict(parts)}


def _lineage(r: NodeChecker, document: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    entries = []
    for index, node in enumerate(r.typed(document.get("lineage", []), "lineage", list, document, "lineage")):
        key = f"lineage[{index}]"
        entry = r.mapping(node, key, LINEAGE_KEYS, required=("n", "accuracy"))
        r.positive_int(entry["n"], f"{key}.n", entry, "n")
        accuracy = r.mapping(entry["accuracy"], f"{key}.accuracy", METRICS, required=METRICS)
        for metric in METRICS:
            r.typed(accuracy[metric], f"{key}.accuracy.{metric}", (int, float), accuracy, metric)
        entries.append(dict(entry))
    return tuple(entries)


def load(path: Path, session: str | None = None) -> Reference:
    try:
        document = json_input.read(path, MAX_FILE_BYTES)
    except json_input.JsonInputError as exc:
        raise ConfigError(str(exc)) from None
    return parse(document, path, session)


def find(directory: Path, session: str) -> Reference | None:
    """The session's reference in directory, validated, or None when it has none."""
    path = reference_path(directory, session)
    return load(path, session) if path.is_file() else None
