"""`nox -s promote -- PATH...`: make passed runs the references their sessions are gated against.

PATH is a session JSON, a results directory (its `<session>.json` files, or one folder per artifact as the
workflow downloads them: core/results_folder.py) or a candidate reference (the summary job's artifact).
A run is refused when it did not pass, has no per-question samples, would drop questions from the current
reference, or (unless --force) is a regression against the current reference; the others are written to
references/ and the `git add` line to commit them is printed.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsm8k_bench.core import json_input, results, results_folder, session_result
from gsm8k_bench.core.errors import BenchError, ConfigError, RaisingArgumentParser
from gsm8k_bench.verdicts import gate, protocol, references


def build_parser(default_dir: Path) -> argparse.ArgumentParser:
    parser = RaisingArgumentParser(prog="nox -s promote --", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="session JSON, results directory or candidate reference")
    parser.add_argument("--force", action="store_true",
                        help="promote even a run the current reference judges a regression, or one with fewer "
                             "questions")
    parser.add_argument("--references-dir", type=Path, default=default_dir,
                        help=f"where references live (default {default_dir})")
    parser.add_argument("--passed-only", action="store_true",
                        help="skip runs that did not pass instead of refusing them (the CI summary's candidates)")
    return parser


@dataclass(frozen=True)
class Candidate:
    source: Path
    session: str
    document: dict[str, Any] | None  # the reference to write; None when refused
    problem: str = ""  # why it cannot be promoted
    skippable: bool = False  # it did not pass (a --passed-only run skips it)


def read_candidates(paths: list[Path], log: Callable[[str], None]) -> Iterator[Candidate]:
    for path in paths:
        if path.is_dir():  # a results folder, or the workflow's download: one folder per artifact
            folder = results_folder.read_folder(path)
            if not folder.documents and not folder.skipped:
                raise BenchError(f"{path}: no session JSON in this directory or the folders in it")
            for line in folder.superseded:
                log(line)
            found: list[tuple[Path, dict[str, Any] | None]] = [*folder.documents]
            found += [(file, None) for file, _ in folder.skipped]  # candidate references, or foreign files
            for file, document in sorted(found, key=lambda item: item[0]):
                yield _candidate(file, in_directory=True) if document is None else _from_session(file, document)
        elif path.is_file():
            yield _candidate(path, in_directory=False)
        else:
            raise BenchError(f"{path}: no such file or directory")


def _candidate(path: Path, in_directory: bool) -> Candidate:
    try:
        document = json_input.read(path, session_result.MAX_FILE_BYTES)
        if references.is_reference(document):
            return Candidate(path, str(document.get("session")), document)
        return _from_session(path, results.read(path))
    except ValueError as exc:
        if in_directory:  # e.g. a report beside the session JSONs, or a broken download
            return Candidate(path, path.stem, None, f"skipped: {exc}", skippable=True)
        raise BenchError(str(exc)) from None


def _unpromotable(document: Mapping[str, Any]) -> str:
    """Why a passed session JSON cannot become a reference ('' if it can)."""
    config, environment = document.get("config"), document.get("environment")
    if not isinstance(config, dict) or not isinstance(environment, dict) or not isinstance(
            config.get("protocol"), dict):
        return "no config, environment or config.protocol record (a session writes all three)"
    if not document.get("samples"):
        return "the run has no per-question samples to pair with"
    twice = sorted(d for d, count in Counter(s["doc_id"] for s in document["samples"]).items() if count > 1)
    if twice:
        return f"samples answer doc_ids {gate.shown(twice)} more than once (a run answers each question once)"
    return ""


def _from_session(path: Path, document: dict[str, Any]) -> Candidate:
    session = document["session"]
    if document.get("status") != "passed":
        message = ((document.get("error") or {}).get("message") or "").splitlines()[:1]
        return Candidate(path, session, None, f"status {document.get('status')}: {''.join(message)}",
                         skippable=True)
    problem = _unpromotable(document)
    if problem:
        return Candidate(path, session, None, problem)
    return Candidate(path, session, references.from_session(document, source=path.name))


def _accuracy_change(old: references.Reference | None, new: references.Reference) -> str:
    if old is None:
        return ", ".join(f"{m} {new.accuracy[m]:.4f}" for m in protocol.METRICS) + f" (n {new.n})"
    return ", ".join(f"{m} {old.accuracy[m]:.4f} -> {new.accuracy[m]:.4f}" for m in protocol.METRICS) + (
        f" (n {old.n} -> {new.n})")


def _counted(doc_ids: list[int]) -> str:
    return f"{len(doc_ids)} (doc_ids {gate.shown(doc_ids)})" if doc_ids else "0"


def review(new: references.Reference, current: Path, settings: gate.GateSettings,
           force: bool) -> tuple[str, str]:
    """What promoting `new` over the reference at `current` changes, and why it is refused ('' if not)."""
    try:
        old = references.load(current, new.session) if current.is_file() else None
    except ConfigError as exc:
        return f"replaces an unreadable reference ({exc}); {_accuracy_change(None, new)}", ""
    if old is None:
        return f"new reference: {_accuracy_change(None, new)}", ""
    change = _accuracy_change(old, new)
    if old.n > new.n and not force:
        return change, (f"the reference has {old.n} questions, this run {new.n}: promoting it would drop "
                        f"{old.n - new.n} of them (--force to do it)")
    verdict = gate.judge_outcomes(old, new.protocol, new.outcomes, settings)
    if isinstance(verdict, str):
        return f"{change}; not comparable with the current reference: {verdict}", ""
    change += "".join(f"\n    {c['metric']}: gained {_counted(c['gained_doc_ids'])}; lost {_counted(c['lost_doc_ids'])}"
                      for c in verdict["checks"])
    if verdict["verdict"] == "regression" and not force:
        return change, f"the current reference calls it a {gate.describe_regression(verdict)} (--force to promote)"
    return change, ""


def promote(argv: list[str], default_dir: Path, settings: gate.GateSettings,
            log: Callable[[str], None] = print) -> list[Path]:
    """Write the references of the promotable runs; raise BenchError naming every refused one."""
    args = build_parser(default_dir).parse_args(argv)
    written, refused = [], []
    for candidate in read_candidates(args.paths, log):
        if candidate.document is None:
            if candidate.skippable and args.passed_only:
                log(f"{candidate.session}: skipped ({candidate.problem})")
            else:
                refused.append(f"{candidate.session} ({candidate.source}): {candidate.problem}")
            continue
        try:  # the name comes from the file: a path outside --references-dir is refused here
            target = references.reference_path(args.references_dir, candidate.session)
            new = references.parse(candidate.document, target, candidate.session)
        except BenchError as exc:
            refused.append(f"{candidate.source}: {exc}")
            continue
        change, problem = review(new, target, settings, args.force)
        if problem:
            refused.append(f"{candidate.session} ({candidate.source}): {problem}")
            log(f"{candidate.session}: refused; {change}")
            continue
        results.output_folder(args.references_dir, "--references-dir")
        references.write(target, candidate.document)
        written.append(target)
        log(f"{candidate.session}: {change}\n    -> {target}")
    if written:
        log("commit with: git add " + " ".join(gate.display_path(p) for p in written))
    if refused:
        raise BenchError("not promoted:\n  " + "\n  ".join(refused))
    return written
