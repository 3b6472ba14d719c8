"""Baselines, references and the regression gate: pure functions, no I/O beyond reading baselines.yaml.

First choice is the session's reference (gsm8k_bench/verdicts/references.py): a known-good run's per-question
outcomes.  With the same protocol (and protocol fingerprint, where both record one), the run is compared
with it over the questions both answered, question by question (gsm8k_bench/verdicts/paired_stats.py).  The
decision rule (GateSettings): one metric gates (`gate.metric`, strict_match unless baselines.yaml says
otherwise; the other is reported); a regression is called when the one-sided exact p against a drop is at
most (1 - confidence) / (family x tests), family being the number of sessions judged together
(`--gate-family`, which a workflow dispatch sets to its number of sessions; a session run alone is a family of
one) and tests the session's tests (2 when truncation is checked too: Bonferroni over every test of the
dispatch).  The exact test is McNemar's against a one-run reference, the exchangeable test against a two-run
one (paired_stats.exchangeable_drop_p; the verdict's checks name it).  With no tolerance a small true drop
is caught, and the Bonferroni level keeps the share of dispatches of healthy sessions that report any
regression at most 1 - confidence (benchmarks/pairing_power.py simulates both).  Newcombe's method-10 bounds
on the difference are reported beside it (unpaired against a two-run reference's mean); the lost questions
are named.  The
verdict states its coverage, and judges the run's questions the reference lacks too (unpaired, against the
reference's accuracy); when too little is compared (MAX_CHANGED_SHARE, MIN_COMPARED_SHARE) or the protocol
fingerprints differ, it is not_comparable, which fails the session.  Without a usable reference (none, or
one of another protocol), a scalar baseline from baselines.yaml (published numbers) judges it as below; else
the run is not gated, and the verdict says which `nox -s promote` command would create the reference.

A run against a scalar baseline is compared only with a baseline of the same protocol (endpoint, chat
template, few-shot format, token limit, stop sequences, and for reasoning models the reasoning parser,
effort, chat-template arguments and answer extraction) and the same number of questions: `--limit N`
takes the first N questions, which are not a random sample of the 1,319, so a smoke run is judged
against a smoke baseline or not at all.  The verdict is one-sided and accounts for n: a regression is called only
when even the upper end of the run's Wilson score interval (at the stated confidence) lies below
`baseline - tolerance`.  Small runs are therefore not failed for noise, and a full run with a real
drop is.

Outcome labels (evaluation/harness.py) come first: a request the server aborted or failed is not a wrong
answer, so a run with any fails unjudged, naming them (`unanswered`).  Against a reference that recorded
its truncated answers, truncation is checked on its own, paired like accuracy: a run whose share of
answers hitting the token limit is higher than the reference's by more than the tolerance, even at the
lower bound, is a "truncation regression" (`judge_truncation`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from gsm8k_bench.core.errors import ConfigError
from gsm8k_bench.core.yaml_reader import LineNumberLoader, NodeChecker
from gsm8k_bench.matrix.names import COMBO_KEYS
from gsm8k_bench.matrix.types import Combination
from gsm8k_bench.verdicts import paired_stats
from gsm8k_bench.verdicts.protocol import (
    METRICS,
    PROTOCOL_KEYS,
    REASONING_DEFAULTS,
    fingerprint_difference,
    fingerprint_missing,
)

if TYPE_CHECKING:
    from gsm8k_bench.verdicts.references import Reference

PAIRED_METHOD = ("paired: one-sided exact p against a drop (McNemar's against a one-run reference, the exchangeable "
                 "test against a two-run one) <= (1 - confidence) / (family x tests); one-sided "
                 "Newcombe (1998, method 10) bounds on run - reference reported; the run's questions the reference "
                 "lacks: one-sided Newcombe bound for independent samples against the reference's accuracy, at the "
                 "same level, beyond the tolerance")
# Coverage: a paired verdict speaks for the run only when the compared questions are most of it.  More
# than 5% of the run's questions under another text or answer key is another dataset (a typo fix or two
# is not); under 10% of the run's questions in the reference (a 1,319-question run against a 100-question
# smoke reference) leaves the verdict to the unpaired check of the rest against an accuracy measured on too
# few questions.  Either way the verdict is not_comparable, and the session fails.
MAX_CHANGED_SHARE = 0.05
MIN_COMPARED_SHARE = 0.10
SHOWN_DOC_IDS = 30  # lost questions named on the console (the JSON lists them all)


class PairedCheck(TypedDict):
    """One metric of a run against its reference, question by question."""

    metric: str
    n: int
    observed: float
    reference: float
    difference: float
    lost: int
    gained: int
    test: str  # TESTS: which exact test gives p
    reference_runs: int
    p: float  # one-sided, of a drop
    mcnemar_p: float | None  # p against a one-run reference; None against a two-run one
    split: ExchangeableSplit | None  # two-run reference: what its test counted
    lower_bound: float
    upper_bound: float
    gates: bool
    regression: bool
    lost_doc_ids: list[int]
    gained_doc_ids: list[int]


# The exact test of a drop against a reference of 1 or 2 runs.
TESTS = {1: "McNemar exact", 2: "two-run exact"}


class ExchangeableSplit(TypedDict):
    """The counts of the two-run test: questions right in 1 and in 2 of the 3 runs, and the run's right ones
    among them (the others carry no signal)."""

    right_in_1_of_3: int
    right_in_2_of_3: int
    run_right: int


class RunOnlyCheck(TypedDict):
    """One metric of the run's questions that the reference lacks, against the reference's accuracy."""

    metric: str
    n: int
    observed: float
    reference: float
    lower_bound: float
    upper_bound: float
    threshold: float
    regression: bool


class TruncationCheck(TypedDict):
    """Truncation of a run against its reference, question by question."""

    n: int
    observed: float
    reference: float
    difference: float
    more: int
    fewer: int
    test: str
    reference_runs: int
    p: float  # one-sided, of a rise
    mcnemar_p: float | None  # p against a one-run reference
    split: ExchangeableSplit | None
    lower_bound: float
    upper_bound: float
    level: float
    regression: bool
    more_doc_ids: list[int]


class ScalarCheck(TypedDict):
    """One metric of a run against a scalar baseline."""

    metric: str
    observed: float
    baseline: float
    threshold: float
    upper_bound: float
    regression: bool


@dataclass(frozen=True)
class GateSettings:
    """How the gate decides.  The paired rule: `metric` alone gates, at the per-session `level`."""

    confidence: float = 0.95  # paired gate: family-wise; scalar baselines and compare: per comparison
    tolerance: float = 0.02  # scalar baselines and compare only: the paired gate has none
    metric: str = METRICS[0]  # the one metric a paired verdict is decided on
    family: int = 1  # sessions judged together (a dispatch's --gate-family); a session run alone is one

    @property
    def level(self) -> float:
        """The per-session level of the paired gate: Bonferroni over the family, so that a dispatch of
        healthy sessions reports any regression with probability at most 1 - confidence."""
        return (1 - self.confidence) / self.family


@dataclass(frozen=True)
class Baseline:
    filters: Mapping[str, Any]
    n: int
    protocol: Mapping[str, Any]
    accuracy: Mapping[str, float]  # metric -> expected accuracy
    source: str = ""

    def matches(self, combo: Combination) -> bool:
        values = combo.key._asdict()
        return all(values[k] == v for k, v in self.filters.items())


@dataclass(frozen=True)
class Baselines:
    """What a run is judged against: settings, scalar baselines, and the session's reference if any."""

    settings: GateSettings
    entries: tuple[Baseline, ...]
    reference: Reference | None = None


def load_baselines(path: Path) -> Baselines:
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: no such baselines file")
    r = NodeChecker(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=LineNumberLoader)  # noqa: S506 - SafeLoader
    except ConfigError as exc:  # the loader's own refusals carry the line
        raise ConfigError(f"{path.name}:{exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: YAML syntax error: {exc}") from None
    data = r.mapping(data, "(top level)", ("version", "gate", "baselines"), required=("version",))
    gate = r.mapping(data.get("gate", {}), "gate", ("confidence", "tolerance", "metric"))
    confidence = float(r.typed(gate.get("confidence", 0.95), "gate.confidence", (int, float), gate, "confidence"))
    tolerance = float(r.typed(gate.get("tolerance", 0.02), "gate.tolerance", (int, float), gate, "tolerance"))
    if not 0.5 <= confidence < 1:
        raise r.fail("gate.confidence", f"must be in [0.5, 1), got {confidence}", gate, "confidence")
    if not 0 <= tolerance < 1:
        raise r.fail("gate.tolerance", f"must be in [0, 1), got {tolerance}", gate, "tolerance")
    gating_metric = gate.get("metric", METRICS[0])
    if gating_metric not in METRICS:
        raise r.fail("gate.metric", f"must be one of {', '.join(METRICS)}, got {gating_metric!r}", gate, "metric")
    entries = []
    for index, node in enumerate(r.typed(data.get("baselines", []), "baselines", list, data, "baselines")):
        key = f"baselines[{index}]"
        node = r.mapping(node, key, (*COMBO_KEYS, "n", "protocol", *METRICS, "source"),
                         required=("model", "n", "protocol"))
        accuracy = {}
        for metric in METRICS:
            if metric in node:
                value = float(r.typed(node[metric], f"{key}.{metric}", (int, float), node, metric))
                if not 0 <= value <= 1:
                    raise r.fail(f"{key}.{metric}", f"an accuracy in [0, 1], got {value}", node, metric)
                accuracy[metric] = value
        if not accuracy:
            raise r.fail(key, f"needs at least one of {', '.join(METRICS)}", node)
        given = r.mapping(node["protocol"], f"{key}.protocol", PROTOCOL_KEYS,
                          required=[k for k in PROTOCOL_KEYS if k not in REASONING_DEFAULTS])
        protocol = {**REASONING_DEFAULTS, **given}
        entries.append(Baseline(
            filters={k: node[k] for k in COMBO_KEYS if k in node},
            n=r.positive_int(node["n"], f"{key}.n", node, "n"),
            protocol={k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                      for k, v in protocol.items()},
            accuracy=accuracy,
            source=str(node.get("source", "")),
        ))
    return Baselines(GateSettings(confidence, tolerance, gating_metric), tuple(entries))


def wilson_upper(p: float, n: int, confidence: float) -> float:
    """Upper end of the one-sided Wilson score interval for a proportion p observed over n trials."""
    return paired_stats.wilson_interval(p, n, paired_stats.z_one_sided(confidence))[1]


def protocol_of(run_protocol: Mapping[str, Any], generation: Mapping[str, Any]) -> dict[str, Any]:
    """The run's protocol in the baseline's terms (stop sequences come from lm-eval's task config); a run
    recorded before the reasoning settings existed was a non-reasoning run."""
    record = {k: run_protocol.get(k, REASONING_DEFAULTS.get(k)) for k in PROTOCOL_KEYS if k != "until"}
    record["until"] = list(generation.get("until") or [])
    return record


def protocol_difference(expected: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (expected.get(k), run.get(k)) for k in PROTOCOL_KEYS if expected.get(k) != run.get(k)}


def judge_paired(reference: Reference, protocol: Mapping[str, Any], samples: Iterable[Mapping[str, Any]],
                 settings: GateSettings, fingerprint: Mapping[str, Any] | None = None,
                 tests: int = 1) -> dict[str, Any] | str:
    """The run against its reference over the questions both answered, or why they cannot be paired."""
    samples = list(samples)
    if not samples:
        return "the run has no per-question samples"
    with_target = reference.ids_cover_target
    return judge_outcomes(reference, protocol, {m: paired_stats.outcomes(samples, m, with_target) for m in METRICS},
                          settings, fingerprint, tests)


def coverage_of(reference: Reference, run: Mapping[str, bool]) -> dict[str, Any]:
    """Which questions a paired verdict covers: compared (both answered the same text and answer key),
    run-only, reference-only, and changed (the same doc_id under another text or answer key)."""
    changed = paired_stats.changed_questions(reference.outcomes[METRICS[0]], run)
    compared = len(run.keys() & reference.outcomes[METRICS[0]].keys())
    return {"run": len(run), "reference": reference.n, "compared": compared,
            "run_only": len(run) - compared - len(changed), "reference_only": reference.n - compared - len(changed),
            "changed": len(changed), "changed_doc_ids": changed,
            "ids_cover_target": reference.ids_cover_target, "run_only_checks": []}


def too_little_compared(coverage: Mapping[str, Any]) -> str:
    """Why the compared questions cannot speak for the run ('' when they can): see MAX_CHANGED_SHARE."""
    run, compared, changed = coverage["run"], coverage["compared"], coverage["changed"]
    if changed > MAX_CHANGED_SHARE * run:
        return (f"{changed} of the run's {run} questions ({changed / run:.1%}, more than {MAX_CHANGED_SHARE:.0%}) "
                f"have another question text or answer key than the reference's (the dataset changed: doc_ids "
                f"{shown(coverage['changed_doc_ids'])}); to judge runs of this dataset, promote one (--force)")
    if compared < MIN_COMPARED_SHARE * run:
        return (f"only {compared} of the run's {run} questions ({compared / run:.1%}, less than "
                f"{MIN_COMPARED_SHARE:.0%}) are in the reference; to judge runs of this size, promote one (--force)")
    return ""


def judge_outcomes(reference: Reference, protocol: Mapping[str, Any], outcomes: Mapping[str, Mapping[str, bool]],
                   settings: GateSettings, fingerprint: Mapping[str, Any] | None = None,
                   tests: int = 1) -> dict[str, Any] | str:
    """judge_paired on a run's outcomes (metric -> question id -> right); `tests` the session's tests at the
    family's level (2 when truncation is checked too: each at half of it)."""
    if dict(reference.protocol) != dict(protocol):
        return f"protocol differs (reference, run): {protocol_difference(reference.protocol, protocol)}"
    coverage = {**coverage_of(reference, outcomes[METRICS[0]]),
                "fingerprint_note": fingerprint_missing(reference.fingerprint, fingerprint)}
    level = settings.level / tests
    base = {"confidence": settings.confidence, "tolerance": settings.tolerance, "baseline": None,
            "metric": settings.metric, "family": settings.family, "level": level, "tests": tests,
            "method": PAIRED_METHOD, "changed_doc_ids": coverage["changed_doc_ids"], "coverage": coverage,
            "reference": {"path": str(reference.path), "n": reference.n, "compared": coverage["compared"],
                          "accuracy": dict(reference.accuracy), "git_commit": reference.provenance.get("git_commit"),
                          "date": reference.provenance.get("date")}}
    # The same protocol record but another fingerprint: the model was sent something else (another few-shot
    # source, prompt format, template): refused like another dataset, never passed unpaired.
    why = fingerprint_difference(reference.fingerprint, fingerprint) or too_little_compared(coverage)
    if why:
        return {**base, "verdict": "not_comparable", "checks": [],
                "reason": f"not comparable with {reference.path}: {why}"}
    checks = [_paired_check(reference, metric, outcomes[metric], settings, level) for metric in METRICS]
    coverage["run_only_checks"] = _run_only_checks(reference, outcomes, settings, level)
    regressed = any(c["regression"] for c in [*checks, *coverage["run_only_checks"]])
    summary = "; ".join(
        f"{c['metric']} {c['observed']:.4f} vs {c['reference']:.4f} (lost {c['lost']}"
        f"{' [doc_ids ' + shown(c['lost_doc_ids']) + ']' if c['lost'] else ''}, gained {c['gained']}, "
        f"{describe_test(c)} "
        + (f"{'<=' if c['regression'] else '>'} {level:.4g})" if c["gates"] else "reported, not gated)")
        for c in checks)
    divisor = f"{settings.family}" if tests == 1 else f"({settings.family} sessions x {tests} tests)"
    return {**base, "verdict": "regression" if regressed else "pass", "checks": checks,
            "reason": f"paired with {reference.path}{' (two runs)' if reference.runs == 2 else ''} over "
                      f"{coverage['compared']} questions, {settings.metric} gating at (1 - {settings.confidence}) / "
                      f"{divisor} = {level:.4g}: {summary}{describe_coverage(coverage)}"}


def p_of(check: Mapping[str, Any]) -> float:
    """A check's p of its test (verdicts written before the two-run test hold McNemar's alone)."""
    p = check.get("p")
    return float(check["mcnemar_p"] if p is None else p)


def describe_test(check: Mapping[str, Any]) -> str:
    """The check's test and p in words: McNemar's, or the two-run test with what it counted."""
    split = check.get("split")
    if not split:
        return f"one-sided McNemar p {p_of(check):.4g}"
    return (f"one-sided two-run exact p {check['p']:.4g} (right in 1 of 3 runs: {split['right_in_1_of_3']}, "
            f"in 2 of 3: {split['right_in_2_of_3']}, the run right in {split['run_right']} of them)")


@dataclass(frozen=True)
class _Paired:
    """A run against a reference of one or two runs over the questions both answered."""

    n: int
    run_share: float
    reference_share: float
    lost: list[int]  # doc_ids right in every reference run, wrong in the run
    gained: list[int]  # doc_ids wrong in every reference run, right in the run
    test: str
    p: float  # one-sided exact p of a drop
    split: ExchangeableSplit | None
    lower: float
    upper: float


def _paired(reference_counts: Mapping[str, int], runs: int, run: Mapping[str, bool], confidence: float) -> _Paired:
    """The run's outcomes against a reference's per-question counts of right runs (out of `runs`)."""
    if runs == 1:
        ids, before, now = paired_stats.align({q: c == 1 for q, c in reference_counts.items()}, run)
        comparison = paired_stats.compare(before, now, confidence)
        lost, gained = paired_stats.discordant(ids, before, now)
        table = comparison.table
        return _Paired(table.n, table.run_accuracy, table.reference_accuracy, lost, gained, TESTS[1],
                       comparison.drop_p, None, comparison.lower, comparison.upper)
    ids = sorted(reference_counts.keys() & run.keys(), key=lambda q: (paired_stats.doc_id_of(q), q))
    if not ids:
        raise ValueError("no question in common: nothing to compare")
    both = [(q, reference_counts[q], run[q]) for q in ids]
    right = sum(x for _, _, x in both)
    reference_share = sum(c for _, c, _ in both) / (len(ids) * runs)
    # s of the runs + 1 right: only 0 < s < runs + 1 carries signal
    split = {s: sum(1 for _, c, x in both if c + x == s) for s in range(1, runs + 1)}
    run_right = sum(x for _, c, x in both if 0 < c + x <= runs)
    lower, upper = paired_stats.independent_interval(right / len(ids), len(ids), reference_share,
                                                     len(ids) * runs, paired_stats.z_one_sided(confidence))
    return _Paired(len(ids), right / len(ids), reference_share,
                   [paired_stats.doc_id_of(q) for q, c, x in both if c == runs and not x],
                   [paired_stats.doc_id_of(q) for q, c, x in both if c == 0 and x], TESTS[runs],
                   paired_stats.exchangeable_drop_p(runs, split, run_right),
                   {"right_in_1_of_3": split[1], "right_in_2_of_3": split[2], "run_right": run_right}, lower, upper)


def _paired_check(reference: Reference, metric: str, run: Mapping[str, bool], settings: GateSettings,
                  level: float) -> PairedCheck:
    paired = _paired(reference.right_counts(metric), reference.runs, run, settings.confidence)
    gates = metric == settings.metric
    return {"metric": metric, "n": paired.n, "observed": round(paired.run_share, 4),
            "reference": round(paired.reference_share, 4),
            "difference": round(paired.run_share - paired.reference_share, 4),
            "lost": len(paired.lost), "gained": len(paired.gained), "test": paired.test,
            "reference_runs": reference.runs, "p": paired.p, "mcnemar_p": None if paired.split else paired.p,
            "split": paired.split, "lower_bound": paired.lower, "upper_bound": paired.upper,
            "gates": gates, "regression": gates and paired.p <= level,
            "lost_doc_ids": paired.lost, "gained_doc_ids": paired.gained}


def _run_only_checks(reference: Reference, outcomes: Mapping[str, Mapping[str, bool]],
                     settings: GateSettings, level: float) -> list[RunOnlyCheck]:
    """The run's questions the reference lacks, against the reference's accuracy: unpaired (no question
    in common), one-sided at the paired rule's level (the family's share), beyond the tolerance (an accuracy
    measured on other questions is no exact reference); only the gating metric can fail."""
    known = reference.outcomes[METRICS[0]]
    asked = {paired_stats.doc_id_of(qid) for qid in known}
    extra_ids = [qid for qid in outcomes[METRICS[0]] if paired_stats.doc_id_of(qid) not in asked]
    checks: list[RunOnlyCheck] = []
    z = paired_stats.z_one_sided(1 - level)
    for metric in METRICS if extra_ids else ():
        extra = [outcomes[metric][qid] for qid in extra_ids]
        observed = sum(extra) / len(extra)
        lower, upper = paired_stats.independent_interval(observed, len(extra), reference.accuracy[metric],
                                                         reference.n * reference.runs, z)
        checks.append({"metric": metric, "n": len(extra), "observed": round(observed, 4),
                       "reference": reference.accuracy[metric], "lower_bound": lower, "upper_bound": upper,
                       "threshold": -settings.tolerance,
                       "regression": metric == settings.metric and upper < -settings.tolerance})
    return checks


def describe_coverage(coverage: Mapping[str, Any]) -> str:
    """What the paired verdict covered beyond the compared questions, in words ('' when nothing)."""
    parts = []
    if coverage["run_only_checks"]:
        parts.append(f"{coverage['run_only']} questions the reference lacks, against its accuracy (unpaired): "
                     + "; ".join(f"{c['metric']} {c['observed']:.4f} vs {c['reference']:.4f}, upper bound "
                                 f"{inequality(c['upper_bound'], c['threshold'])}"
                                 for c in coverage["run_only_checks"]))
    if coverage["changed"]:
        parts.append(f"{coverage['changed']} doc_ids have another question text or answer key than the "
                     f"reference's and are not compared: {shown(coverage['changed_doc_ids'])}")
    if coverage["reference_only"]:
        parts.append(f"{coverage['reference_only']} reference questions not asked")
    if not coverage["ids_cover_target"]:
        parts.append("the reference's question ids predate the answer key (identity by question text only)")
    if coverage["fingerprint_note"]:
        parts.append(coverage["fingerprint_note"])
    return "".join(f"; {part}" for part in parts)


def precise(value: float, threshold: float, sign: str) -> tuple[str, str]:
    """Both numbers with as many decimals (at least 4) as it takes for the printed ones to compare as the
    exact ones do: never "-0.0200 < -0.0200".  `sign` "+" prints differences signed, "" accuracies.
    Ends: two different floats print differently at enough decimals (formatting is exact)."""
    digits = 4
    while (float(f"{value:{sign}.{digits}f}") < float(f"{threshold:{sign}.{digits}f}")) != (value < threshold):
        digits += 1
    return f"{value:{sign}.{digits}f}", f"{threshold:{sign}.{digits}f}"


def inequality(value: float, threshold: float, sign: str = "+") -> str:
    """`value < threshold` or `value >= threshold`, printed at the precision that makes it true."""
    shown_value, shown_threshold = precise(value, threshold, sign)
    return f"{shown_value} {'<' if value < threshold else '>='} {shown_threshold}"


def unanswered(samples: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a run with requests the server aborted or failed cannot be judged (None when it has none): they
    are not wrong answers, and scoring them as such would call a server fault a model regression."""
    aborted = [s["doc_id"] for s in samples if s.get("outcome") == "aborted"]
    failed = [s for s in samples if s.get("outcome") == "server_error"]
    if not aborted and not failed:
        return None
    parts = []
    if aborted:
        parts.append(f"the server aborted {len(aborted)} of {len(samples)} requests (doc_ids {shown(aborted)})")
    if failed:
        why = Counter(str(s.get("answer_error")) for s in failed)
        parts.append(f"{len(failed)} of {len(samples)} requests failed after every retry "
                     f"({', '.join(f'{reason}: {count}' for reason, count in why.most_common())}; "
                     f"doc_ids {shown([s['doc_id'] for s in failed])})")
    return "; ".join(parts) + (": those are not wrong answers, so the run is not judged (the server's log says "
                               "why; rerun once it answers every request)")


def truncation_checked(reference: Reference, samples: Sequence[Mapping[str, Any]]) -> bool:
    """Both sides recorded which answers hit the token limit, and share a question: a second test."""
    if reference.truncated is None or not samples or any(s.get("outcome") is None for s in samples):
        return False
    asked = {paired_stats.sample_id(s, reference.ids_cover_target) for s in samples}
    return not asked.isdisjoint(reference.outcomes[METRICS[0]])


def judge_truncation(reference: Reference, samples: Sequence[Mapping[str, Any]], settings: GateSettings,
                     level: float) -> TruncationCheck | None:
    """The run's truncated answers against the reference's, over the questions both answered (None when
    either side did not record them): paired as accuracy is, on the share of answers that did not hit the
    token limit, so the same rule decides (one-sided exact p of a rise at the test's `level`)."""
    if reference.truncated is None or not truncation_checked(reference, samples):
        return None
    run = {paired_stats.sample_id(s, reference.ids_cover_target): s["outcome"] != "truncated" for s in samples}
    runs = reference.runs
    whole = {q: runs - reference.truncated.get(q, 0) for q in reference.outcomes[METRICS[0]]}
    paired = _paired(whole, runs, run, settings.confidence)
    return {"n": paired.n, "observed": round(1 - paired.run_share, 4),
            "reference": round(1 - paired.reference_share, 4),
            "difference": round(paired.reference_share - paired.run_share, 4),
            "more": len(paired.lost), "fewer": len(paired.gained), "test": paired.test, "reference_runs": runs,
            "p": paired.p, "mcnemar_p": None if paired.split else paired.p, "split": paired.split,
            "lower_bound": -paired.upper, "upper_bound": -paired.lower, "level": level,
            "regression": paired.p <= level, "more_doc_ids": paired.lost}


def with_truncation(verdict: dict[str, Any], check: TruncationCheck | None) -> dict[str, Any]:
    """The paired verdict with its truncation check; a truncation regression makes it a regression."""
    if check is None:
        return verdict
    said = (f"truncation {check['observed']:.4f} vs {check['reference']:.4f} (truncated now, not before: "
            f"{check['more']}, the reverse: {check['fewer']}, {describe_test(check)} "
            f"{'<=' if check['regression'] else '>'} {check['level']:.4g})")
    regressed = verdict["verdict"] == "regression" or check["regression"]
    return {**verdict, "truncation": check, "verdict": "regression" if regressed else verdict["verdict"],
            "reason": f"{verdict['reason']}; {'truncation regression: ' if check['regression'] else ''}{said}"}


def with_staged_decision(verdict: dict[str, Any], regression: bool, said: str) -> dict[str, Any]:
    """A paired verdict whose gating check is decided by a staged run's last look (verdicts/sequential.py:
    its boundaries, not the fixed test's level, hold the false-alarm rate when a run may stop early); the
    other checks (run-only questions, truncation) as judged.  Other verdicts are returned as they are."""
    if verdict["verdict"] not in ("pass", "regression") or not verdict.get("reference"):
        return verdict
    checks = [{**c, "regression": regression} if c["gates"] else c for c in verdict["checks"]]
    others = [*(verdict.get("coverage") or {}).get("run_only_checks", []), verdict.get("truncation") or {}]
    regressed = regression or any(c.get("regression") for c in others)
    return {**verdict, "checks": checks, "verdict": "regression" if regressed else "pass",
            "reason": f"{verdict['reason']}; {said}"}


def display_path(path: Path) -> str:
    """Relative to the working directory when inside it, else absolute (never ../../..)."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def promote_command(result_file: Path | None, session: str) -> str:
    return f"nox -s promote -- {display_path(result_file) if result_file else f'results/{session}.json'}"


def judge(baselines: Baselines, combo: Combination, protocol: Mapping[str, Any],
          metrics: Mapping[str, Any], samples: Iterable[Mapping[str, Any]] = (),
          result_file: Path | None = None, fingerprint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The verdict: 'pass', 'regression', 'not_comparable' or 'not_gated' (with the reason), and the
    numbers behind it.  The session's reference (paired) comes first, then a scalar baseline, else not gated."""
    settings = baselines.settings
    unpaired = "no reference"
    samples = list(samples)
    if baselines.reference is not None:
        tests = 2 if truncation_checked(baselines.reference, samples) else 1
        verdict = judge_paired(baselines.reference, protocol, samples, settings, fingerprint, tests)
        if isinstance(verdict, dict):
            return with_truncation(verdict, judge_truncation(baselines.reference, samples, settings,
                                                             verdict["level"]))
        unpaired = f"reference {baselines.reference.path} not used: {verdict}"
    verdict = _judge_scalar(baselines, combo, protocol, metrics)
    if verdict["verdict"] == "not_gated":
        verdict["reason"] = (f"{unpaired}; {verdict['reason']}; to gate later runs question by question "
                             f"against this one: {promote_command(result_file, combo.name)}")
    elif baselines.reference is not None:
        verdict["reason"] = f"{unpaired}; {verdict['reason']}"
    return {**verdict, "method": "scalar baseline: one-sided Wilson score bound" if verdict["baseline"] else None}


def _judge_scalar(baselines: Baselines, combo: Combination, protocol: Mapping[str, Any],
                  metrics: Mapping[str, Any]) -> dict[str, Any]:
    settings = baselines.settings
    base = {"verdict": "not_gated", "confidence": settings.confidence, "tolerance": settings.tolerance,
            "baseline": None, "checks": [], "reason": ""}
    n = metrics.get("n") or 0
    candidates = sorted((b for b in baselines.entries if b.matches(combo)), key=lambda b: -len(b.filters))
    if not candidates:
        return {**base, "reason": f"no baseline for {combo.name} in baselines.yaml"}
    same_protocol = [b for b in candidates if dict(b.protocol) == dict(protocol)]
    if not same_protocol:
        diff = protocol_difference(candidates[0].protocol, protocol)
        return {**base, "reason": f"protocol differs from the baseline's (baseline, run): {diff}"}
    same_n = [b for b in same_protocol if b.n == n]
    if not same_n:
        have = sorted({b.n for b in same_protocol})
        return {**base, "reason": f"baselines exist for n={have}, this run scored n={n}; the first n "
                f"questions are not a random sample, so runs of other sizes are not gated"}
    baseline = same_n[0]
    checks: list[ScalarCheck] = []
    regressed = False
    for metric, expected in baseline.accuracy.items():
        observed: float = metrics[metric]  # a scored run has every metric
        upper = wilson_upper(observed, n, settings.confidence)
        threshold = expected - settings.tolerance
        regression = upper < threshold
        regressed |= regression
        checks.append({"metric": metric, "observed": observed, "baseline": expected, "threshold": threshold,
                       "upper_bound": upper, "regression": regression})
    return {**base, "verdict": "regression" if regressed else "pass", "checks": checks,
            "baseline": {"filters": dict(baseline.filters), "n": baseline.n, "accuracy": dict(baseline.accuracy),
                         "source": baseline.source},
            "reason": "; ".join(
                f"{c['metric']} {c['observed']:.4f}: upper bound {inequality(c['upper_bound'], c['threshold'], '')} "
                f"(baseline {c['baseline']:.4f} - {settings.tolerance})" for c in checks)}


def describe_failure(verdict: Mapping[str, Any]) -> str:
    """Why the gate failed the run: a regression (the failing checks) or too little compared."""
    if verdict["verdict"] == "not_comparable":
        return str(verdict["reason"])
    return describe_regression(verdict)


def describe_regression(verdict: Mapping[str, Any]) -> str:
    failing: Sequence[Mapping[str, Any]] = [c for c in verdict["checks"] if c["regression"]]
    if verdict.get("reference"):
        run_only = [c for c in (verdict.get("coverage") or {}).get("run_only_checks", []) if c["regression"]]
        said = [
            *(f"{c['metric']} {c['observed']:.4f} vs {c['reference']:.4f} over {c['n']} questions (lost {c['lost']}, "
              f"gained {c['gained']}: {describe_test(c)} <= {verdict['level']:.4g} = (1 - "
              f"{verdict['confidence']}) / {_divisor(verdict)}); lost {c['lost']}: doc_ids "
              f"{shown(c['lost_doc_ids'])}" for c in failing),
            *(f"{c['metric']} {c['observed']:.4f} over the {c['n']} questions the reference lacks vs its "
              f"{c['reference']:.4f} (unpaired upper bound {inequality(c['upper_bound'], c['threshold'])} at "
              f"{1 - verdict['level']:.4g} one-sided)" for c in run_only)]
        parts = [f"regression against {verdict['reference']['path']}: " + "; ".join(said)] if said else []
        truncation = verdict.get("truncation")
        if truncation and truncation["regression"]:
            parts.append(describe_truncation(verdict["reference"]["path"], truncation))
        return "; ".join(parts)
    return "regression: " + "; ".join(
        f"{c['metric']} {c['observed']:.4f} (upper bound {inequality(c['upper_bound'], c['threshold'], '')} at "
        f"{verdict['confidence']:.0%} one-sided; baseline {c['baseline']:.4f} - {verdict['tolerance']})"
        for c in failing)


def _divisor(verdict: Mapping[str, Any]) -> str:
    tests = verdict.get("tests") or 1
    return f"{verdict['family']} sessions" + (f" x {tests} tests" if tests > 1 else "")


def describe_truncation(reference: str, check: Mapping[str, Any]) -> str:
    return (f"truncation regression against {reference}: {check['observed']:.4f} of the answers hit the token "
            f"limit vs {check['reference']:.4f} over {check['n']} questions ({describe_test(check)} "
            f"<= {check['level']:.4g}); truncated now, not before: {check['more']}: "
            f"doc_ids {shown(check['more_doc_ids'])}")


def shown(doc_ids: Sequence[int]) -> str:
    more = len(doc_ids) - SHOWN_DOC_IDS
    return ", ".join(map(str, doc_ids[:SHOWN_DOC_IDS])) + (f" and {more} more (all in the JSON)" if more > 0 else "")
