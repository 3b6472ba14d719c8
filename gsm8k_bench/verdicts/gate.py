"""Baselines, references and the regression gate: pure functions, no I/O beyond reading baselines.yaml.

First choice is the session's reference (gsm8k_bench/verdicts/references.py): a known-good run's per-question
outcomes.  With the same protocol, the run is compared with it over the questions both answered,
question by question (gsm8k_bench/verdicts/paired_stats.py: McNemar's exact p and Newcombe's method-10 score bound on
the paired difference); a regression is called when even the upper bound on run - reference accuracy
lies below -tolerance, and the lost questions are named.  Without a usable reference, a scalar baseline
from baselines.yaml (published numbers) judges it as below; else the run is not gated, and the verdict
says which `nox -s promote` command would create the reference.

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
from gsm8k_bench.verdicts.protocol import METRICS, PROTOCOL_KEYS, REASONING_DEFAULTS

if TYPE_CHECKING:
    from gsm8k_bench.verdicts.references import Reference

PAIRED_METHOD = "paired: exact McNemar p; one-sided Newcombe (1998, method 10) score bound on run - reference"
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
    mcnemar_p: float
    lower_bound: float
    upper_bound: float
    threshold: float
    regression: bool
    lost_doc_ids: list[int]
    gained_doc_ids: list[int]


class TruncationCheck(TypedDict):
    """Truncation of a run against its reference, question by question."""

    n: int
    observed: float
    reference: float
    difference: float
    more: int
    fewer: int
    mcnemar_p: float
    lower_bound: float
    upper_bound: float
    threshold: float
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
    confidence: float = 0.95
    tolerance: float = 0.02


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
    gate = r.mapping(data.get("gate", {}), "gate", ("confidence", "tolerance"))
    confidence = float(r.typed(gate.get("confidence", 0.95), "gate.confidence", (int, float), gate, "confidence"))
    tolerance = float(r.typed(gate.get("tolerance", 0.02), "gate.tolerance", (int, float), gate, "tolerance"))
    if not 0.5 <= confidence < 1:
        raise r.fail("gate.confidence", f"must be in [0.5, 1), got {confidence}", gate, "confidence")
    if not 0 <= tolerance < 1:
        raise r.fail("gate.tolerance", f"must be in [0, 1), got {tolerance}", gate, "tolerance")
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
    return Baselines(GateSettings(confidence, tolerance), tuple(entries))


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
                 settings: GateSettings) -> dict[str, Any] | str:
    """The run against its reference over the questions both answered, or why they cannot be paired."""
    samples = list(samples)
    if not samples:
        return "the run has no per-question samples"
    return judge_outcomes(reference, protocol, {m: paired_stats.outcomes(samples, m) for m in METRICS}, settings)


def judge_outcomes(reference: Reference, protocol: Mapping[str, Any], outcomes: Mapping[str, Mapping[str, bool]],
                   settings: GateSettings) -> dict[str, Any] | str:
    """judge_paired on a run's outcomes (metric -> question id -> right)."""
    if dict(reference.protocol) != dict(protocol):
        return f"protocol differs (reference, run): {protocol_difference(reference.protocol, protocol)}"
    checks: list[PairedCheck] = []
    changed: list[int] = []
    for metric in METRICS:
        run = outcomes[metric]
        changed = paired_stats.changed_questions(reference.outcomes[metric], run)
        ids, before, now = paired_stats.align(reference.outcomes[metric], run)
        if not ids:
            return ("no question in common" + (f": doc_ids {changed[:SHOWN_DOC_IDS]} have other question texts "
                                               "than the reference's (the dataset changed)" if changed else ""))
        comparison = paired_stats.compare(before, now, settings.confidence)
        lost, gained = paired_stats.discordant(ids, before, now)
        table = comparison.table
        checks.append({
            "metric": metric, "n": table.n, "observed": round(table.run_accuracy, 4),
            "reference": round(table.reference_accuracy, 4), "difference": round(table.difference, 4),
            "lost": table.lost, "gained": table.gained, "mcnemar_p": comparison.mcnemar_p,
            "lower_bound": round(comparison.lower, 4), "upper_bound": round(comparison.upper, 4),
            "threshold": -settings.tolerance, "regression": comparison.regressed(settings.tolerance),
            "lost_doc_ids": lost, "gained_doc_ids": gained})
    regressed = any(c["regression"] for c in checks)
    summary = "; ".join(
        f"{c['metric']} {c['observed']:.4f} vs {c['reference']:.4f} (lost {c['lost']}"
        f"{' [doc_ids ' + shown(c['lost_doc_ids']) + ']' if c['lost'] else ''}, gained {c['gained']}, "
        f"McNemar p {c['mcnemar_p']:.3g}, upper bound {c['upper_bound']:+.4f} "
        f"{'<' if c['regression'] else '>='} {c['threshold']:+.4f})" for c in checks)
    dataset_note = (f"; {len(changed)} doc_ids have other question texts than the reference's and are not "
                    f"compared: {changed[:SHOWN_DOC_IDS]}" if changed else "")
    return {"verdict": "regression" if regressed else "pass", "confidence": settings.confidence,
            "tolerance": settings.tolerance, "baseline": None, "checks": checks,
            "reason": f"paired with {reference.path} over {checks[0]['n']} questions: {summary}{dataset_note}",
            "method": PAIRED_METHOD, "changed_doc_ids": changed,
            "reference": {"path": str(reference.path), "n": reference.n, "compared": checks[0]["n"],
                          "accuracy": dict(reference.accuracy), "git_commit": reference.provenance.get("git_commit"),
                          "date": reference.provenance.get("date")}}


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


def judge_truncation(reference: Reference, samples: Sequence[Mapping[str, Any]],
                     settings: GateSettings) -> TruncationCheck | None:
    """The run's truncated answers against the reference's, over the questions both answered (None when
    either side did not record them): paired as accuracy is, on the share of answers that did not hit
    the token limit, so the same bound decides."""
    if reference.truncated is None or any(s.get("outcome") is None for s in samples):
        return None
    run = {paired_stats.question_id(s["doc_id"], s.get("question")): s["outcome"] != "truncated" for s in samples}
    whole = dict.fromkeys(reference.outcomes[METRICS[0]], True) | dict.fromkeys(reference.truncated, False)
    ids, before, now = paired_stats.align(whole, run)
    if not ids:
        return None
    comparison = paired_stats.compare(before, now, settings.confidence)
    more, _ = paired_stats.discordant(ids, before, now)
    table = comparison.table
    return {"n": table.n, "observed": round(1 - table.run_accuracy, 4),
            "reference": round(1 - table.reference_accuracy, 4), "difference": round(-table.difference, 4),
            "more": table.lost, "fewer": table.gained,
            "mcnemar_p": comparison.mcnemar_p, "lower_bound": round(-comparison.upper, 4),
            "upper_bound": round(-comparison.lower, 4), "threshold": settings.tolerance,
            "regression": comparison.regressed(settings.tolerance), "more_doc_ids": more}


def with_truncation(verdict: dict[str, Any], check: TruncationCheck | None) -> dict[str, Any]:
    """The paired verdict with its truncation check; a truncation regression makes it a regression."""
    if check is None:
        return verdict
    said = (f"truncation {check['observed']:.4f} vs {check['reference']:.4f} (truncated now, not before: "
            f"{check['more']}, the reverse: {check['fewer']}, McNemar p {check['mcnemar_p']:.3g}, lower bound "
            f"{check['lower_bound']:+.4f} {'>' if check['regression'] else '<='} {check['threshold']:+.4f})")
    regressed = verdict["verdict"] == "regression" or check["regression"]
    return {**verdict, "truncation": check, "verdict": "regression" if regressed else verdict["verdict"],
            "reason": f"{verdict['reason']}; {'truncation regression: ' if check['regression'] else ''}{said}"}


def display_path(path: Path) -> str:
    """Relative to the working directory when inside it, else absolute (never ../../..)."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def promote_command(result_file: Path | None, session: str) -> str:
    return f"nox -s promote -- {display_path(result_file) if result_file else f'results/{session}.json'}"


def judge(baselines: Baselines, combo: Combination, protocol: Mapping[str, Any],
          metrics: Mapping[str, Any], samples: Iterable[Mapping[str, Any]] = (),
          result_file: Path | None = None) -> dict[str, Any]:
    """The verdict: 'pass', 'regression' or 'not_gated' (with the reason), and the numbers behind it.
    The session's reference (paired) comes first, then a scalar baseline, else not gated."""
    settings = baselines.settings
    unpaired = "no reference"
    samples = list(samples)
    if baselines.reference is not None:
        verdict = judge_paired(baselines.reference, protocol, samples, settings)
        if isinstance(verdict, dict):
            return with_truncation(verdict, judge_truncation(baselines.reference, samples, settings))
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
                       "upper_bound": round(upper, 4), "regression": regression})
    return {**base, "verdict": "regression" if regressed else "pass", "checks": checks,
            "baseline": {"filters": dict(baseline.filters), "n": baseline.n, "accuracy": dict(baseline.accuracy),
                         "source": baseline.source},
            "reason": "; ".join(
                f"{c['metric']} {c['observed']:.4f}: upper bound {c['upper_bound']:.4f} "
                f"{'<' if c['regression'] else '>='} baseline {c['baseline']:.4f} - {settings.tolerance}"
                for c in checks)}


def describe_regression(verdict: Mapping[str, Any]) -> str:
    failing: Sequence[Mapping[str, Any]] = [c for c in verdict["checks"] if c["regression"]]
    if verdict.get("reference"):
        said = [f"regression against {verdict['reference']['path']}: " + "; ".join(
            f"{c['metric']} {c['observed']:.4f} vs {c['reference']:.4f} over {c['n']} questions (upper bound "
            f"{c['upper_bound']:+.4f} at {verdict['confidence']:.0%} < {c['threshold']:+.4f}, McNemar p "
            f"{c['mcnemar_p']:.3g}); lost {c['lost']}: doc_ids {shown(c['lost_doc_ids'])}" for c in failing)
            ] if failing else []
        truncation = verdict.get("truncation")
        if truncation and truncation["regression"]:
            said.append(describe_truncation(verdict["reference"]["path"], truncation, verdict["confidence"]))
        return "; ".join(said)
    return "regression: " + "; ".join(
        f"{c['metric']} {c['observed']:.4f} (upper bound {c['upper_bound']:.4f} at "
        f"{verdict['confidence']:.0%}) below baseline {c['baseline']:.4f} - {verdict['tolerance']}"
        for c in failing)


def describe_truncation(reference: str, check: Mapping[str, Any], confidence: float) -> str:
    return (f"truncation regression against {reference}: {check['observed']:.4f} of the answers hit the token "
            f"limit vs {check['reference']:.4f} over {check['n']} questions (lower bound {check['lower_bound']:+.4f} "
            f"at {confidence:.0%} > {check['threshold']:+.4f}, McNemar p {check['mcnemar_p']:.3g}); truncated now, "
            f"not before: {check['more']}: doc_ids {shown(check['more_doc_ids'])}")


def shown(doc_ids: Sequence[int]) -> str:
    more = len(doc_ids) - SHOWN_DOC_IDS
    return ", ".join(map(str, doc_ids[:SHOWN_DOC_IDS])) + (f" and {more} more (all in the JSON)" if more > 0 else "")
