"""`history noise [-k EXPR]`: each stack's (framework, runner, precision) noise floor, from the history.

- Flip rate: between consecutive healthy runs (passed, scored) of a session with identical provenance
  (image, digest, framework version, checkpoint, protocol, question limit, gating level), the share of
  questions whose strict-match outcome differs, pooled over the stack's sessions, with Wilson bounds at
  the gate's confidence (each side one-sided).  This is the A/A noise: nothing changed but the run.
- What it means: the smallest true drop a full run (1,319 questions) is called a regression by the
  configured gate, when its paired table comes out as expected at that flip rate (about half of such
  runs are called; benchmarks/pairing_power.py simulates the whole distribution).
- Alarm: the last `window` pairs flip significantly more often than the earlier ones (one-sided
  two-proportion test at the gate's confidence) while accuracy holds (within the gate's tolerance):
  nondeterminism creeping in, as a race or a batch-variant kernel shows first.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from gsm8k_bench.reporting.history import queries
from gsm8k_bench.verdicts import gate, paired_stats

GSM8K_QUESTIONS = 1319
IDENTICAL = (*queries.PROVENANCE, "protocol", "question_limit", "gate_concurrency")
DROP_STEP = 0.001


@dataclass(frozen=True)
class PairFlips:
    earlier: queries.StoredRun
    later: queries.StoredRun
    common: int
    flipped: int


@dataclass(frozen=True)
class StackNoise:
    stack: tuple[str, str, str]
    sessions: int
    pairs: list[PairFlips]
    rate: float
    lower: float
    upper: float
    accuracy: float
    detectable_drop: float | None
    alarm: str | None

    @property
    def questions(self) -> int:
        return sum(p.common for p in self.pairs)


def healthy(run: queries.StoredRun) -> bool:
    return run.scored and run.status == "passed"


def same_provenance(a: queries.StoredRun, b: queries.StoredRun) -> bool:
    return all(getattr(a, name) == getattr(b, name) for name in IDENTICAL)


def detectable_drop(accuracy: float, flip_rate: float, settings: gate.GateSettings,
                    n: int = GSM8K_QUESTIONS) -> float | None:
    """The smallest drop (to 0.1 pt) whose expected paired table at this flip rate the gate calls a
    regression over n questions; None when no drop up to the whole accuracy is."""
    z = paired_stats.z_one_sided(settings.confidence)
    steps = int(accuracy / DROP_STEP)
    for step in range(1, steps + 1):
        drop = step * DROP_STEP
        gained = round(n * flip_rate / 2)
        lost = round(n * (flip_rate / 2 + drop))
        both_right = round(n * accuracy) - lost
        if both_right < 0:
            return None
        table = paired_stats.PairedTable(both_right, gained, lost, n - both_right - gained - lost)
        if table.both_wrong >= 0 and paired_stats.newcombe_interval(table, z)[1] < -settings.tolerance:
            return drop
    return None


def _rate(pairs: Sequence[PairFlips]) -> tuple[int, int]:
    return sum(p.flipped for p in pairs), sum(p.common for p in pairs)


def _accuracy(pairs: Sequence[PairFlips]) -> float:
    return sum(p.later.strict_match or 0.0 for p in pairs) / len(pairs)


def alarm(pairs: Sequence[PairFlips], window: int, settings: gate.GateSettings) -> str | None:
    """Why the recent flip rate is an alarm, or None."""
    if len(pairs) < 2 * window:
        return None
    ordered = sorted(pairs, key=lambda p: p.later.started_at)
    before, recent = ordered[:-window], ordered[-window:]
    (f0, n0), (f1, n1) = _rate(before), _rate(recent)
    pooled = (f0 + f1) / (n0 + n1)
    if pooled in (0.0, 1.0):
        return None
    z = (f1 / n1 - f0 / n0) / math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
    accuracy_before, accuracy_recent = _accuracy(before), _accuracy(recent)
    if z <= paired_stats.z_one_sided(settings.confidence) or accuracy_recent < accuracy_before - settings.tolerance:
        return None
    return (f"flip rate rose from {f0 / n0:.4f} to {f1 / n1:.4f} over the last {window} pairs (z={z:.1f}) "
            f"while accuracy held ({accuracy_before:.4f} -> {accuracy_recent:.4f})")


def noise(connection: Connection, settings: gate.GateSettings, keywords: str | None = None,
          window: int = 7) -> list[StackNoise]:
    from nox.manifest import keyword_match

    by_session: dict[str, list[queries.StoredRun]] = defaultdict(list)
    for run in queries.all_runs(connection):
        words = [run.session, *(w for w in (run.model, run.runner, run.framework, run.precision) if w)]
        if healthy(run) and (not keywords or keyword_match(keywords, words)):
            by_session[run.session].append(run)
    candidates = [(earlier, later) for session_runs in by_session.values()
                  for earlier, later in itertools.pairwise(session_runs) if same_provenance(earlier, later)]
    by_stack: dict[tuple[str, str, str], list[PairFlips]] = defaultdict(list)
    sessions: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for (earlier, later), (common, flipped) in zip(candidates, queries.strict_flips(connection, candidates),
                                                   strict=True):
        if common:
            by_stack[later.stack].append(PairFlips(earlier, later, common, flipped))
            sessions[later.stack].add(later.session)
    z = paired_stats.z_one_sided(settings.confidence)
    found = []
    for stack, pairs in sorted(by_stack.items()):
        flipped, questions = _rate(pairs)
        rate = flipped / questions
        accuracy = _accuracy(pairs)
        lower, upper = paired_stats.wilson_interval(rate, questions, z)
        found.append(StackNoise(stack, len(sessions[stack]), pairs, rate, lower, upper, accuracy,
                                detectable_drop(accuracy, rate, settings), alarm(pairs, window, settings)))
    return found


def table(stacks: Sequence[StackNoise], settings: gate.GateSettings) -> str:
    if not stacks:
        return "no pair of consecutive healthy runs with identical provenance in the history"
    lines = [f"{'stack (framework runner precision)':36}  {'sessions':>8}  {'pairs':>5}  {'questions':>9}  "
             f"{'flip rate':>9}  {f'bounds ({settings.confidence:.0%} each)':>17}  "
             f"{'detects (full run)':>18}  alarm"]
    for s in stacks:
        drop = f"{s.detectable_drop * 100:.1f} pt" if s.detectable_drop is not None else "never"
        lines.append(f"{' '.join(s.stack):36}  {s.sessions:>8}  {len(s.pairs):>5}  {s.questions:>9}  "
                     f"{s.rate:>9.4f}  {f'[{s.lower:.4f}, {s.upper:.4f}]':>17}  {drop:>18}  {s.alarm or '-'}")
    lines.append(f"(detects: the smallest drop a full run of {GSM8K_QUESTIONS} questions is called a regression at, "
                 f"confidence {settings.confidence}, tolerance {settings.tolerance})")
    return "\n".join(lines)
