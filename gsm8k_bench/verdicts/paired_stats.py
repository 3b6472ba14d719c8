"""Two runs over the same questions, compared question by question: what changed, and is it noise?

When two runs answer the same questions, only the discordant ones carry signal: `lost` (right in the
reference, wrong in the run) and `gained` (the reverse).  The difference in accuracy is
(gained - lost) / n, and the questions both got right or both got wrong say nothing about it.

- McNemar's exact test: with no real change, each discordant question is lost or gained with
  probability 1/2, so `lost` ~ Binomial(lost + gained, 1/2); the p-value is one-sided, like the bounds:
  P(at least `lost` lost) for a drop.
- A reference of R runs (R = 2: `nox -s promote` of two runs from separate server starts): with no real
  change the reference's runs and the run are exchangeable, so a question right in s of the R + 1 runs is
  right in the run with probability s / (R + 1), independently across questions.  The p-value of a drop is
  the lower tail of the run's right answers over the questions with 0 < s < R + 1 (the others carry no
  signal): P(sum_s Binomial(c_s, s / (R + 1)) <= right), exact (`exchangeable_drop_p`).  With R = 1 it is
  McNemar's: s = 1 is a discordant pair, and the run is right in it with probability 1/2.
- Newcombe's hybrid score interval for a difference of paired proportions (Newcombe 1998, "Improved
  confidence intervals for the difference between binomial proportions based on paired data", method
  10): Wilson score intervals of each run's accuracy, combined through the correlation (phi, with
  Newcombe's continuity correction) of the two runs' outcomes.  Closed form, inside [-1, 1], and sound
  at accuracies of 0 and 1 where a Wald interval collapses.

One level, one sidedness: a bound is one-sided at `confidence`: the interval is computed at the two-sided
level 2 * confidence - 1, and the gate reads only its upper end (a regression when even that lies below
-tolerance); the p-values are one-sided too, and a comparison's "significant" flag is its one-sided p below
1 - confidence: one level, one sidedness, for the flag, the p-value and the bound.
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
def question_id(doc_id: int, question: str | None, target: str | None = None, with_target: bool = True) -> str:
    """`doc_id` plus a short hash of the question text and its answer key (target): a changed dataset
    gives new ids, so its questions are never silently paired with other questions of the same number.
    `with_target=False` is the id of references written before the answer key was part of it."""
    text = (question or "") + (f"\0{target or ''}" if with_target else "")
    return f"{doc_id}:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"


def doc_id_of(qid: str) -> int:
    """The doc_id part of a question id."""
    return int(qid.split(":", 1)[0])


def sample_id(sample: Mapping[str, Any], with_target: bool = True) -> str:
    """A session sample's question id."""
    return question_id(sample["doc_id"], sample.get("question"), sample.get("target"), with_target)


def outcomes(samples: Iterable[Mapping[str, Any]], metric: str, with_target: bool = True) -> dict[str, bool]:
    """A session's samples -> question id -> answered right under `metric`."""
    field = CORRECT_FIELD[metric]
    return {sample_id(s, with_target): bool(s[field]) for s in samples}


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


def mcnemar_drop_p(lost: int, gained: int) -> float:
    """One-sided exact McNemar p-value of a drop: P(at least `lost` of the discordant questions are lost)
    when each is lost or gained with probability 1/2."""
    discordant = lost + gained
    return sum(math.comb(discordant, k) for k in range(lost, discordant + 1)) / (1 << discordant)


def exchangeable_drop_p(reference_runs: int, split: Mapping[int, int], right: int) -> float:
    """One-sided exact p of a drop against a reference of `reference_runs` runs: `split[s]` questions are
    right in s of the reference_runs + 1 runs (the reference's and this one), 0 < s <= reference_runs, and
    the run is right in `right` of them; P(sum_s Binomial(split[s], s / (R + 1)) <= right) when no run
    differs from the others.  Exact: integer weights over the common denominator (R + 1)^total."""
    if reference_runs < 1 or any(not 0 < s <= reference_runs or c < 0 for s, c in split.items()):
        raise ValueError(f"a split of {reference_runs} reference runs has counts for 0 < s <= {reference_runs}, "
                         f"got {dict(split)}")
    total = sum(split.values())
    if not 0 <= right <= total:
        raise ValueError(f"the run is right in 0..{total} of the split questions, got {right}")
    base = reference_runs + 1
    weights = [1]  # weights[k]: (R + 1)^total * P(k right so far)
    for s, count in split.items():
        # Binomial(count, s / base) in weights of base^count: C(count, k) s^k (base - s)^(count - k)
        term = [math.comb(count, k) * s**k * (base - s) ** (count - k) for k in range(count + 1)]
        weights = [sum(weights[i] * term[k - i] for i in range(max(0, k - count), min(k, len(weights) - 1) + 1))
                   for k in range(len(weights) + count)]
    denominator: int = base**total
    return sum(weights[: right + 1]) / denominator


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
    return _square_and_add(table.run_accuracy, table.n, table.reference_accuracy, table.n, table.phi(), z)


def independent_interval(run_accuracy: float, run_n: int, reference_accuracy: float, reference_n: int,
                         z: float) -> tuple[float, float]:
    """Newcombe's (1998) method-10 interval for a difference of two independent proportions (no
    question in common: the same square-and-add with no correlation)."""
    return _square_and_add(run_accuracy, run_n, reference_accuracy, reference_n, 0.0, z)


def _square_and_add(p1: float, n1: int, p2: float, n2: int, phi: float, z: float) -> tuple[float, float]:
    """p1 - p2 bounded by each proportion's Wilson interval, combined through their correlation phi."""
    l1, u1 = wilson_interval(p1, n1, z)
    l2, u2 = wilson_interval(p2, n2, z)
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, p1 - p2 - delta), min(1.0, p1 - p2 + epsilon)


@dataclass(frozen=True)
class PairedComparison:
    """A run against a reference over the questions both answered."""

    table: PairedTable
    confidence: float
    lower: float  # one-sided lower bound on run - reference accuracy, at `confidence`
    upper: float  # one-sided upper bound, at `confidence`

    @property
    def drop_p(self) -> float:
        """One-sided exact McNemar p of a drop (the gate's question)."""
        return mcnemar_drop_p(self.table.lost, self.table.gained)

    @property
    def observed_p(self) -> float:
        """One-sided exact McNemar p in the direction the difference points (a gain's is the mirror)."""
        table = self.table
        return mcnemar_drop_p(table.lost, table.gained) if table.lost >= table.gained else \
            mcnemar_drop_p(table.gained, table.lost)

    def significant(self) -> bool:
        """The one-sided exact p in the direction observed is below 1 - confidence: the flag and the p-value
        printed beside it always agree (the score bound, read against the tolerance, may differ from the
        exact test at the margin)."""
        return self.observed_p < 1 - self.confidence

    def regressed(self, tolerance: float) -> bool:
        """Even the most favourable difference the data allow is a drop of more than `tolerance`."""
        return self.upper < -tolerance


def compare(reference: Sequence[bool], run: Sequence[bool], confidence: float) -> PairedComparison:
    """Paired outcomes (question i of the reference with question i of the run) -> the comparison."""
    table = PairedTable.of(reference, run)
    if table.n == 0:
        raise ValueError("no question in common: nothing to compare")
    lower, upper = newcombe_interval(table, z_one_sided(confidence))
    return PairedComparison(table, confidence, lower, upper)
