"""Two scored runs of the same questions, side by side: the paired numbers per metric, a verdict, the
questions that flipped.  Shared by `nox -s compare` (before/after), the report's sibling cells and a
session's concurrency levels; the statistics themselves are gsm8k_bench.verdicts.paired_stats's.

A comparison is made only over the questions both runs answered (paired by `paired_stats.sample_id`:
doc_id, question text and answer key), and only when both ran the same protocol (protocol.PROTOCOL_KEYS of
`config.protocol`, as the gate reads it) and, where both record one, the same protocol fingerprint;
otherwise it says why not.  Bounds, flags and p-values are one-sided at the gate's confidence: a difference
is `significant` when the bound on its side excludes 0, and its p-value is the one-sided p of that side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from gsm8k_bench.serving import venvs
from gsm8k_bench.verdicts import gate, paired_stats, protocol

METRICS = protocol.METRICS
# Per-question fields a session's samples need before they can be paired (older JSONs lack some).
SAMPLE_FIELDS = ("doc_id", "question", *paired_stats.CORRECT_FIELD.values())
ANSWER_FIELDS = ("strict_answer", "flexible_answer")
REGRESSION, IMPROVEMENT, WITHIN, NOT_COMPARED = "regression", "improvement", "within_tolerance", "not_compared"


class MetricNumbers(TypedDict):
    """One metric, paired: accuracies, run - reference difference with its one-sided bounds, McNemar p."""

    n: int
    reference: float
    run: float
    difference: float
    lower: float
    upper: float
    confidence: float
    mcnemar_p: float
    lost: int
    gained: int
    regressed: bool
    improved: bool
    significant: bool


class ChangedQuestion(TypedDict):
    doc_id: int
    question: str
    target: str | None
    moves: dict[str, str]  # metric -> "lost" or "gained" (empty: only the answer text changed)
    reference: dict[str, object]
    run: dict[str, object]


class Comparison(TypedDict):
    verdict: str
    reason: str
    metrics: dict[str, MetricNumbers]
    flips: list[ChangedQuestion]
    changed: list[ChangedQuestion]


def gate_settings(path: Path | None = None) -> gate.GateSettings:
    """The gate's confidence and tolerance (baselines.yaml's `gate:` block, the checkout's by default);
    the gate's defaults where no such file exists."""
    path = path or venvs.REPO_ROOT / "baselines.yaml"
    return gate.load_baselines(path).settings if path.is_file() else gate.GateSettings()


def document_protocol(document: Mapping[str, Any]) -> dict[str, Any]:
    """The run's protocol in the gate's terms; empty when the JSON has no protocol record."""
    record = (document.get("config") or {}).get("protocol")
    if not isinstance(record, Mapping) or "until" not in record:
        return {}
    return gate.protocol_of(record, {"until": record["until"]})


def unpairable(document: Mapping[str, Any], side: str) -> str | None:
    """Why this session JSON cannot take part in a paired comparison, or None."""
    if document.get("status") == "error" or not document.get("metrics"):
        message = (document.get("error") or {}).get("message", "no metrics")
        return f"{side} has no scored run ({document.get('status')}: {message})"
    samples = document.get("samples") or []
    if not samples:
        return f"{side} has no per-question samples"
    missing = sorted({f for s in samples for f in SAMPLE_FIELDS if f not in s})
    if missing:
        return f"{side}'s samples lack {', '.join(missing)} (an older session JSON)"
    if not document_protocol(document):
        return f"{side} has no protocol record (an older session JSON)"
    unanswered = gate.unanswered(samples)  # requests the server aborted or failed are no wrong answers
    return f"{side}: {unanswered}" if unanswered else None


def protocol_difference(reference: Mapping[str, Any], run: Mapping[str, Any]) -> str | None:
    a, b = document_protocol(reference), document_protocol(run)
    diff = {k: (a.get(k), b.get(k)) for k in protocol.PROTOCOL_KEYS if a.get(k) != b.get(k)}
    if diff:
        return f"protocols differ (reference, run): {diff}"
    return protocol.fingerprint_difference((reference.get("config") or {}).get("fingerprint"),
                                           (run.get("config") or {}).get("fingerprint")) or None


def metric_numbers(result: paired_stats.PairedComparison, tolerance: float) -> MetricNumbers:
    table = result.table
    return {
        "n": table.n, "reference": round(table.reference_accuracy, 6), "run": round(table.run_accuracy, 6),
        "difference": round(table.difference, 6), "lower": result.lower, "upper": result.upper,
        "confidence": result.confidence, "mcnemar_p": result.observed_p, "lost": table.lost, "gained": table.gained,
        "regressed": result.regressed(tolerance), "improved": result.lower > tolerance,
        "significant": result.significant(),
    }


def verdict(numbers: Mapping[str, MetricNumbers]) -> str:
    if any(m["regressed"] for m in numbers.values()):
        return REGRESSION
    if any(m["improved"] for m in numbers.values()):
        return IMPROVEMENT
    return WITHIN


def _side(sample: Mapping[str, Any]) -> dict[str, object]:
    return {k: sample.get(k) for k in ("response", *ANSWER_FIELDS, *paired_stats.CORRECT_FIELD.values())}


def pair_samples(reference: Sequence[Mapping[str, Any]], run: Sequence[Mapping[str, Any]],
                 settings: gate.GateSettings) -> Comparison:
    """Paired numbers per metric, the verdict, and the questions whose outcome or answer changed."""
    numbers: dict[str, MetricNumbers] = {}
    for metric in METRICS:
        common, ref_outcomes, run_outcomes = paired_stats.align(paired_stats.outcomes(reference, metric),
                                                          paired_stats.outcomes(run, metric))
        if not common:
            return {"verdict": NOT_COMPARED, "reason": "no question answered by both", "metrics": {},
                    "flips": [], "changed": []}
        numbers[metric] = metric_numbers(paired_stats.compare(ref_outcomes, run_outcomes, settings.confidence),
                                         settings.tolerance)
    by_id = [{paired_stats.sample_id(s): s for s in side} for side in (reference, run)]
    flips: list[ChangedQuestion] = []
    changed: list[ChangedQuestion] = []
    for qid in common:
        a, b = by_id[0][qid], by_id[1][qid]
        moves = {m: ("gained" if b[f] else "lost") for m, f in paired_stats.CORRECT_FIELD.items()
                 if bool(a[f]) != bool(b[f])}
        if not moves and all(a.get(f) == b.get(f) for f in ANSWER_FIELDS):
            continue
        entry: ChangedQuestion = {"doc_id": a["doc_id"], "question": a["question"], "target": a.get("target"),
                                  "moves": moves, "reference": _side(a), "run": _side(b)}
        (flips if moves else changed).append(entry)
    return {"verdict": verdict(numbers), "reason": "", "metrics": numbers, "flips": flips, "changed": changed}


def compare_documents(reference: Mapping[str, Any], run: Mapping[str, Any],
                      settings: gate.GateSettings) -> Comparison:
    """A session JSON against another (the reference): pair_samples, or not_compared and why not."""
    reason = (unpairable(reference, "the reference") or unpairable(run, "the run")
              or protocol_difference(reference, run))
    if reason:
        return {"verdict": NOT_COMPARED, "reason": reason, "metrics": {}, "flips": [], "changed": []}
    result = pair_samples(reference["samples"], run["samples"], settings)
    if result["verdict"] != NOT_COMPARED:  # compared: say when only the protocol record vouched for the pairing
        result["reason"] = protocol.fingerprint_missing(
            *((document.get("config") or {}).get("fingerprint") for document in (reference, run)))
    return result


def describe(result: Mapping[str, Any]) -> str:
    """One line: the verdict and, per metric, difference [bound] and McNemar p."""
    if result["verdict"] == NOT_COMPARED:
        return f"not compared: {result['reason']}"
    parts = [f"{m} {v['difference']:+.4f} [{v['lower']:+.4f}, {v['upper']:+.4f}] one-sided p={v['mcnemar_p']:.3g} "
             f"(-{v['lost']} +{v['gained']})" for m, v in result["metrics"].items()]
    return f"{result['verdict']}: " + "; ".join(parts)
