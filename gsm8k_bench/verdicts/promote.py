"""`nox -s promote -- PATH...`: make passed runs the references their sessions are gated against.

PATH is a session JSON, a results directory (its `<session>.json` files, or one folder per artifact as the
workflow downloads them: core/folder_reader.py) or a candidate reference (the summary job's artifact).
Two runs of one session (two session JSONs, or two results folders holding it) make one reference of two
runs, the kind that lets the gate meet its power goals (docs/verdicts-and-references.md): they must share
the protocol, its fingerprint and the questions, and come from separate server starts.
A run is refused when it failed for any reason but the gate's, or has no per-question samples.  A promotion
that would leave the reference less able to judge needs --force, and the refusal says why: the run failed
the gate (a regression or not comparable), the protocol or its fingerprint changes, no question is in
common with the current reference, it has fewer questions, the current reference is unreadable, the current
reference calls it a regression, or it lies significantly below the best reference of its lineage (no
ratchet: each promotion may lose up to the tolerance, a chain of them may not).  The others are written to
references/ with the replaced reference added to their lineage, and the `git add` line to commit them is
printed.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsm8k_bench.core import folder_reader, json_input, results, session_result
from gsm8k_bench.core.errors import BenchError, ConfigError, RaisingArgumentParser
from gsm8k_bench.verdicts import gate, paired_stats, protocol, references

GATE_FAILURES = ("regression", "not_comparable")  # verdicts that fail a session that scored
ONE_RUN_NOTE = ("a reference of one run: the gate judges against it with McNemar's test, which misses the power goals; "
                "a reference of two runs from separate server starts meets them: nox -s promote -- {source} "
                "<another run's session JSON>")


def build_parser(default_dir: Path) -> argparse.ArgumentParser:
    parser = RaisingArgumentParser(prog="nox -s promote --", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="session JSON, results directory or candidate reference")
    parser.add_argument("--force", action="store_true",
                        help="promote even a run the gate failed as a regression, one the current reference or "
                             "its lineage judges a regression, one of another protocol, with fewer or no common "
                             "questions, or over an unreadable reference (each is printed)")
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
    problem: str = ""  # why it cannot be promoted (with a document: why only --force promotes it)
    skippable: bool = False  # it did not pass (a --passed-only run skips it)
    made_of: tuple[dict[str, Any], ...] = ()  # the session JSONs it was made from (none: a candidate reference)


def read_candidates(paths: list[Path], log: Callable[[str], None]) -> Iterator[Candidate]:
    for path in paths:
        if path.is_dir():  # a results folder, or the workflow's download: one folder per artifact
            folder = folder_reader.read_folder(path)
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
    staged = document.get("staged")
    if isinstance(staged, dict) and staged.get("stopped_early"):
        asked = (staged.get("looks") or [{}])[-1].get("asked")
        return (f"a staged run that stopped early ({asked} of {staged.get('questions')} questions asked): a "
                f"reference must cover the set; run the session with --full to make one")
    twice = sorted(d for d, count in Counter(s["doc_id"] for s in document["samples"]).items() if count > 1)
    if twice:
        return f"samples answer doc_ids {gate.shown(twice)} more than once (a run answers each question once)"
    return ""


def _from_session(path: Path, document: dict[str, Any]) -> Candidate:
    session = document["session"]
    message = "".join(((document.get("error") or {}).get("message") or "").splitlines()[:1])
    if document.get("status") != "passed" and not gate_failure_only(document):
        return Candidate(path, session, None, f"status {document.get('status')}: {message}", skippable=True)
    problem = _unpromotable(document)
    if problem:
        return Candidate(path, session, None, problem)
    written = references.from_session(document, source=path.name)
    if document.get("status") != "passed":
        return Candidate(path, session, written, f"the run failed only the gate ({message})", skippable=True,
                         made_of=(document,))
    return Candidate(path, session, written, made_of=(document,))


def same_server_start(first: Mapping[str, Any], second: Mapping[str, Any]) -> str:
    """Why two session JSONs cannot be shown to come from separate server starts ('' when they can): two
    runs of one server share its luck (its batch shapes, its warm caches), and a reference of them is one
    run counted twice."""
    starts = [(d.get("environment") or {}, (d.get("config") or {}).get("server") or {}) for d in (first, second)]
    (env_a, server_a), (env_b, server_b) = starts
    if not env_a.get("started_at") or not env_b.get("started_at"):
        return "a session JSON records no environment.started_at: separate server starts cannot be shown"
    same = [f"environment.{key} {env_a[key]!r}" for key in ("started_at", "run_id")
            if env_a.get(key) and env_a.get(key) == env_b.get(key)]
    same += [f"config.server.{key} {server_a[key]!r}" for key in ("container",)
             if server_a.get(key) and server_a.get(key) == server_b.get(key)]
    return f"both are the same server start (the same {', '.join(same)})" if same else ""


def combined(first: Candidate, second: Candidate) -> Candidate:
    """Two runs of one session -> one candidate reference of both, or why not (never --force: a reference
    of two runs that are not two runs of one protocol would judge wrongly)."""
    source = f"{first.source} + {second.source}"
    if len(first.made_of) != 1 or len(second.made_of) != 1:
        return Candidate(first.source, first.session, None, f"{source}: a reference of two runs is made from two "
                         "session JSONs (a candidate reference cannot be combined)")
    (a,), (b,) = first.made_of, second.made_of
    why = same_server_start(a, b)
    protocol_a, protocol_b = a["config"]["protocol"], b["config"]["protocol"]
    if not why and protocol_a != protocol_b:
        why = f"the protocol differs: {gate.protocol_difference(protocol_a, protocol_b)}"
    prints = [a["config"].get("fingerprint"), b["config"].get("fingerprint")]
    if not why and not all(prints):
        why = "a run records no protocol fingerprint: the two runs cannot be shown to share a protocol"
    ids = [{paired_stats.sample_id(s) for s in d["samples"]} for d in (a, b)]
    if not why and ids[0] != ids[1]:
        only = [sorted(paired_stats.doc_id_of(q) for q in ids[i] - ids[1 - i]) for i in (0, 1)]
        why = (f"the runs asked other questions (only in {first.source.name}: {_counted(only[0])}; only in "
               f"{second.source.name}: {_counted(only[1])})")
    if not why and prints[0]["sha256"] != prints[1]["sha256"]:  # the same questions: every part must agree
        why = protocol.fingerprint_difference(*prints) or (
            f"protocol fingerprints differ: {prints[0]['sha256'][:12]} vs {prints[1]['sha256'][:12]}")
    if why:
        return Candidate(first.source, first.session, None, f"{source}: not one reference of two runs: {why}")
    document = references.from_sessions([a, b], [first.source.name, second.source.name])
    problem = "; ".join(c.problem for c in (first, second) if c.problem)
    return Candidate(Path(source), first.session, document, problem, skippable=bool(problem), made_of=(a, b))


def with_pairs(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Runs of the same session combined two by two into one candidate: more than two is refused."""
    by_session: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        by_session.setdefault(candidate.session, []).append(candidate)
    out = []
    for session, group in by_session.items():
        usable = [c for c in group if c.document is not None]
        out += [c for c in group if c.document is None]
        if len(usable) == 2:
            out.append(combined(*usable))
        elif len(usable) > 2:
            out.append(Candidate(usable[0].source, session, None, f"{len(usable)} runs of it ("
                                 f"{', '.join(str(c.source) for c in usable)}): a reference combines one or "
                                 f"{references.MAX_RUNS}"))
        else:
            out += usable
    return out


def gate_failure_only(document: Mapping[str, Any]) -> bool:
    """The run scored and its only failure was the gate's verdict (a regression or not comparable)."""
    return (document.get("status") == "failed" and (document.get("gate") or {}).get("verdict") in GATE_FAILURES
            and ((document.get("error") or {}).get("message") or "").startswith("gate: "))


def _accuracy_change(old: references.Reference | None, new: references.Reference) -> str:
    if old is None:
        return ", ".join(f"{m} {new.accuracy[m]:.4f}" for m in protocol.METRICS) + f" (n {new.n})"
    return ", ".join(f"{m} {old.accuracy[m]:.4f} -> {new.accuracy[m]:.4f}" for m in protocol.METRICS) + (
        f" (n {old.n} -> {new.n})")


def _counted(doc_ids: list[int]) -> str:
    return f"{len(doc_ids)} (doc_ids {gate.shown(doc_ids)})" if doc_ids else "0"


@dataclass(frozen=True)
class Review:
    """What promoting a run over the current reference changes, and what only --force allows."""

    change: str
    needs_force: list[str]
    ancestor: references.Reference | None  # the replaced reference, when the lineage continues through it


def review(new: references.Reference, current: Path, settings: gate.GateSettings,
           runs: Sequence[Mapping[str, Mapping[str, bool]]] | None = None) -> Review:
    """Promoting `new` over the reference at `current`: the change, and every reason it needs --force.
    `runs`: the outcomes of the runs `new` is made of (default: `new` itself, a reference of one run)."""
    try:
        old = references.load(current, new.session) if current.is_file() else None
    except ConfigError as exc:
        return Review(f"replaces an unreadable reference; {_accuracy_change(None, new)}",
                      [f"it replaces an unreadable reference ({exc})"], None)
    if old is None:
        return Review(f"new reference: {_accuracy_change(None, new)}", [], None)
    change = _accuracy_change(old, new)
    fewer = [f"the reference has {old.n} questions, this run {new.n}: promoting it would drop {old.n - new.n} of "
             "them"] if old.n > new.n else []
    another = [f"the protocol changes (reference, run): {gate.protocol_difference(old.protocol, new.protocol)}"
               ] if dict(old.protocol) != dict(new.protocol) else []
    fingerprints = protocol.fingerprint_difference(old.fingerprint, new.fingerprint)
    another += [f"the {fingerprints}"] if fingerprints else []
    missing = protocol.fingerprint_missing(old.fingerprint, new.fingerprint)
    change += f"\n    {missing}" if missing else ""
    if another:  # the old lineage's accuracies say nothing about another protocol's
        return Review(f"{change}\n    the lineage starts again (another protocol)", another + fewer, None)
    needs = fewer
    if runs is None and new.runs > 1:
        needs.append(f"it is a reference of {new.runs} runs: the current reference can judge only the runs it was "
                     "made of (promote their session JSONs)")
    for index, run in enumerate((new.outcomes,) if runs is None else runs) if not needs else ():
        verdict = gate.judge_outcomes(old, new.protocol, run, settings)
        assert isinstance(verdict, dict)  # only another protocol gives a string, and that returned above
        which = f"run {index + 1}: " if runs is not None and len(runs) > 1 else ""
        if verdict["verdict"] == "not_comparable":
            needs.append(which + verdict["reason"])
        else:
            change += "".join(f"\n    {which}{c['metric']}: gained {_counted(c['gained_doc_ids'])}; "
                              f"lost {_counted(c['lost_doc_ids'])}" for c in verdict["checks"])
            if verdict["verdict"] == "regression":
                needs.append(f"the current reference calls {which or 'it '}a {gate.describe_regression(verdict)}")
    lineage = [*old.lineage, old.lineage_entry()]
    change += "\n    " + drift(lineage, new)
    needs += below_best(lineage[:-1], new, settings)  # the current reference itself is judged paired above
    return Review(change, needs, old)


def drift(lineage: Sequence[Mapping[str, Any]], new: references.Reference) -> str:
    """The cumulative change since the first reference, and the distance to the best of the lineage."""
    first = lineage[0]
    return "; ".join(
        f"{m} drift since the first reference {new.accuracy[m] - first['accuracy'][m]:+.4f} (n {first['n']}), "
        f"{new.accuracy[m] - max(e['accuracy'][m] for e in lineage):+.4f} from the best of "
        f"{len(lineage)}" for m in protocol.METRICS)


def below_best(ancestors: Sequence[Mapping[str, Any]], new: references.Reference,
               settings: gate.GateSettings) -> list[str]:
    """The metrics on which `new` lies significantly below the best earlier reference: the gate's one-sided
    bound and tolerance, unpaired (a lineage keeps accuracies and n, not questions)."""
    z = paired_stats.z_one_sided(settings.confidence)
    found = []
    for metric in protocol.METRICS if ancestors else ():
        best = max(ancestors, key=lambda e: e["accuracy"][metric])
        upper = paired_stats.independent_interval(new.accuracy[metric], new.n * new.runs, best["accuracy"][metric],
                                                  best["n"], z)[1]
        if upper < -settings.tolerance:
            found.append(f"{metric} {new.accuracy[metric]:.4f} is significantly below the best of its lineage, "
                         f"{best['accuracy'][metric]:.4f} (n {best['n']}, {best.get('date')}): upper bound "
                         f"{gate.inequality(upper, -settings.tolerance)} at {settings.confidence:.0%} one-sided, "
                         "unpaired")
    return found


def promote(argv: list[str], default_dir: Path, settings: gate.GateSettings,
            log: Callable[[str], None] = print) -> list[Path]:
    """Write the references of the promotable runs; raise BenchError naming every refused one."""
    args = build_parser(default_dir).parse_args(argv)
    written, refused = [], []
    for candidate in with_pairs(list(read_candidates(args.paths, log))):
        if candidate.document is None:
            if candidate.skippable and args.passed_only:
                log(f"{candidate.session}: skipped ({candidate.problem})")
            else:
                refused.append(f"{candidate.session} ({candidate.source}): {candidate.problem}")
            continue
        if candidate.problem and args.passed_only:
            log(f"{candidate.session}: skipped ({candidate.problem})")
            continue
        try:  # the name comes from the file: a path outside --references-dir is refused here
            target = references.reference_path(args.references_dir, candidate.session)
            new = references.parse(candidate.document, target, candidate.session)
        except BenchError as exc:
            refused.append(f"{candidate.source}: {exc}")
            continue
        runs = [{m: paired_stats.outcomes(d["samples"], m) for m in protocol.METRICS} for d in candidate.made_of]
        result = review(new, target, settings, runs or None)
        needs = ([candidate.problem] if candidate.problem else []) + result.needs_force
        if needs and not args.force:
            refused.append(f"{candidate.session} ({candidate.source}): " + "; ".join(needs) + " (--force to promote)")
            log(f"{candidate.session}: refused; {result.change}")
            continue
        results.output_folder(args.references_dir, "--references-dir")
        references.write(target, references.with_lineage(candidate.document, result.ancestor))
        written.append(target)
        log(f"{candidate.session}: {result.change}" + "".join(f"\n    forced: {why}" for why in needs)
            + f"\n    -> {target}" + (f"\n    {ONE_RUN_NOTE.format(source=candidate.source)}" if new.runs == 1 else ""))
    if written:
        log("commit with: git add " + " ".join(gate.display_path(p) for p in written))
    if refused:
        raise BenchError("not promoted:\n  " + "\n  ".join(refused))
    return written
