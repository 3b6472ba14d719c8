"""Two runs over the same questions, compared question by question: what changed, and is it noise?

When two runs answer the same questions, only the discordant ones carry signal: `lost` (right in the
reference, wrong in the run) and `gained` (the reverse).  The difference in accuracy is
(gained - lost) / n, and the questions both got right or both got wrong say nothing about it.

- McNemar's exact test: with no real change, each discordant question is lost or gained with
  probability 1/2, so `lost` ~ Binomial(lost + gained, 1/2); the two-sided p-value doubles the smaller
  tail (at most 1).
- Newcombe's hybrid score interval for a difference of paired proportions (Newcombe 1998, "Improved
  confidence intervals for the difference between binomial proportions based on paired data", method
  10): Wilson score intervals of each run's accuracy, combined through the correlation (phi, with
  Newcombe's continuity correction) of the two runs' outcomes.  Closed form, inside [-1, 1], and sound
  at accuracies of 0 and 1 where a Wald interval collapses.

A bound is one-sided at `confidence`: the interval is computed at the two-sided level 2 * confidence - 1,
and the gate reads only its upper end (a regression when even that lies below -tolerance).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

# A session JSON's metric -> the per-question field that says whether the question was answered right.
CORRECT_FIELD = {"strict_match": "strict_correct", "flexible_extract": "flexible_correct"}


@functools.lru_cache(maxsize=16384)  # a report pairs the same 1,319 questions across many sessions
def question_id(doc_id: int, question: str | None) -> str:
    """`doc_id` plus a short hash of the question text: a changed dataset gives new ids, so its
    questions are never silently paired with other questions of the same number."""
    digest = hashlib.sha256((question or "").encode("utf-8")).hexdigest()[:10]
    return f"{doc_id}:{digest}"


def doc_id_of(qid: str) -> int:
    """The doc_id part of a question id."""
    return int(qid.split(":", 1)[0])


def outcomes(samples: Iterable[Mapping[str, Any]], metric: str) -> dict[str, bool]:
    """A session's samples -> question id -> answered right under `metric`."""
    field = CORRECT_FIELD[metric]
    return {question_id(s["doc_id"], s.get("question")): bool(s[field]) for s in samples}


def align(reference: Mapping[str, bool], run: Mapping[str, bool]) -> tuple[list[str], list[bool], list[bool]]:
    """The questions both answered, in doc order, with each side's outcome."""
    common = sorted(reference.keys() & run.keys(), key=lambda q: (doc_id_of(q), q))
    return common, [reference[q] for q in common], [run[q] for q in common]


def z_one_sided(confidence: float) -> float:
    """The normal quantile of a one-sided bound at this confidence (0.95 -> 1.645)."""
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    return NormalDist().inv_cdf(confidence)


def wilson_interval(p: float, n: int, z: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion p observed over n trials, at normal quantile z."""
    if n < 1:
        raise ValueError(f"a proportion needs n >= 1, got {n}")
    denominator = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n)))
    return max(0.0, (centre - margin) / denominator), min(1.0, (centre + margin) / denominator)


def changed_questions(reference: Iterable[str], run: Iterable[str]) -> list[int]:
    """doc_ids both runs asked under different question texts (the dataset changed under them)."""
    reference_ids = {doc_id_of(q): q for q in reference}
    return sorted(d for d, q in ((doc_id_of(q), q) for q in run) if d in reference_ids and reference_ids[d] != q)


def discordant(ids: Sequence[str], reference: Sequence[bool], run: Sequence[bool]) -> tuple[list[int], list[int]]:
    """doc_ids lost (right in the reference, wrong in the run) and gained (the reverse)."""
    lost = [doc_id_of(q) for q, r, x in zip(ids, reference, run, strict=True) if r and not x]
    gained = [doc_id_of(q) for q, r, x in zip(ids, reference, run, strict=True) if x and not r]
    return lost, gained


def mcnemar_exact_p(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts."""
    discordant = lost + gained
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(lost, gained) + 1))
    return min(1.0, 2 * tail / (1 << discordant))  # exact integers; the division rounds once


def mcnemar_one_sided_p(lost: int, gained: int) -> float:
    """One-sided exact McNemar p-value against a drop: P(Binomial(lost + gained, 1/2) >= lost), the chance
    of losing at least this many of the discordant questions when nothing changed."""
    tail = sum(math.comb(lost + gained, k) for k in range(gained + 1))  # P(... <= gained): the same tail
    return tail / (1 << (lost + gained))  # exact integers; the division rounds once


@dataclass(frozen=True)
class PairedTable:
    """Outcomes of the same n questions in a reference run and a run."""

    both_right: int
    gained: int  # wrong in the reference, right in the run
    lost: int  # right in the reference, wrong in the run
    both_wrong: int

    @classmethod
    def of(cls, reference: Sequence[bool], run: Sequence[bool]) -> PairedTable:
        if len(reference) != len(run):
            raise ValueError(f"paired outcomes need equal lengths, got {len(reference)} and {len(run)}")
        pairs = list(zip(reference, run, strict=True))
        return cls(both_right=sum(1 for r, x in pairs if r and x), gained=sum(1 for r, x in pairs if not r and x),
                   lost=sum(1 for r, x in pairs if r and not x), both_wrong=sum(1 for r, x in pairs if not r and not x))

    @property
    def n(self) -> int:
        return self.both_right + self.gained + self.lost + self.both_wrong

    @property
    def reference_accuracy(self) -> float:
        return (self.both_right + self.lost) / self.n

    @property
    def run_accuracy(self) -> float:
        return (self.both_right + self.gained) / self.n

    @property
    def difference(self) -> float:
        """Run minus reference accuracy."""
        return (self.gained - self.lost) / self.n

    def phi(self) -> float:
        """Correlation of the two runs' outcomes, with Newcombe's continuity correction."""
        cross: float = self.both_right * self.both_wrong - self.gained * self.lost
        if cross > 0:
            cross = max(cross - self.n / 2, 0.0)
        run_right, run_wrong = self.both_right + self.gained, self.lost + self.both_wrong
        ref_right, ref_wrong = self.both_right + self.lost, self.gained + self.both_wrong
        margins = run_right * run_wrong * ref_right * ref_wrong
        return cross / math.sqrt(margins) if margins else 0.0


def newcombe_interval(table: PairedTable, z: float) -> tuple[float, float]:
    """Newcombe's method-10 interval for the run's accuracy minus the reference's."""
    n = table.n
    p1, p2 = table.run_accuracy, table.reference_accuracy
    l1, u1 = wilson_interval(p1, n, z)
    l2, u2 = wilson_interval(p2, n, z)
    phi = table.phi()
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    d = table.difference
    return max(-1.0, d - delta), min(1.0, d + epsilon)


@dataclass(frozen=True)
class PairedComparison:
    """A run against a reference over the questions both answered."""

    table: PairedTable
    confidence: float
    lower: float  # one-sided lower bound on run - reference accuracy, at `confidence`
    upper: float  # one-sided upper bound, at `confidence`
    mcnemar_p: float

    def regressed(self, tolerance: float) -> bool:
        """Even the most favourable difference the data allow is a drop of more than `tolerance`."""
        return self.upper < -tolerance


def compare(reference: Sequence[bool], run: Sequence[bool], confidence: float) -> PairedComparison:
    """Paired outcomes (question i of the reference with question i of the run) -> the comparison."""
    table = PairedTable.of(reference, run)
    if table.n == 0:
        raise ValueError("no question in common: nothing to compare")
    lower, upper = newcombe_interval(table, z_one_sided(confidence))
    return PairedComparison(table, confidence, lower, upper, mcnemar_exact_p(table.lost, table.gained))
