"""Staged evaluation: one-sided group-sequential boundaries for the paired gate, and the decision at each look.

Pure functions, no I/O.  The run is judged against its reference after each stage of questions (a look);
at look k the statistic is McNemar's z over the questions asked so far,

    z_k = (lost - gained) / sqrt(lost + gained)        (0 when nothing is discordant; > 0 is a drop),

and the decision is: the one-sided exact McNemar p at most the nominal level of efficacy_k (1 - Phi(efficacy_k)),
a regression (stop, fail); z_k < futility_k, no regression the full
run could likely have caught (stop, pass); else ask the next stage.  At the last look the two boundaries
meet: the run fails or passes there.

Method (named in the session JSON as METHOD):
- Efficacy: Lan & DeMets (1983) alpha spending with the O'Brien-Fleming-type function
  alpha(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t)), one-sided, at the gate's per-session level
  ((1 - confidence) / family).  Boundaries ignore the futility boundary (non-binding futility), so the
  false-alarm rate is at most alpha whether or not a run stops for futility.
- Futility: beta spending (Pampallona, Tsiatis & Kim 2001 style, non-binding) with the power-family function
  beta(t) = beta * t^FUTILITY_RHO (Kim & DeMets 1987), under the drift `drift`: the expected z of a full run
  at the drop the gate is designed to catch.  A futility boundary above the efficacy one is lowered to it.
- Crossing probabilities: the recursive numerical integration of Armitage, McPherson & Rowe (1969), as in
  Jennison & Turnbull (2000), ch. 19: the sub-density of z_k on the continuation region is carried from look
  to look on a grid (Simpson's rule) through the normal increments of the score process; each boundary is
  the root of "probability of crossing at this look = the spending function's increment".

Information fractions: the share of the set's questions asked, n_k / N, not the discordant count.  The
question order is a seeded random permutation, so every prefix is a random sample and the expected
discordant count at look k is (n_k / N) of the full run's: the two fractions agree in expectation, and the
questions-asked fraction is known before the run, so one set of boundaries serves every run of a design
(cached per (fractions, alpha, beta, drift)).  What the normal approximation and the random discordant
count cost is measured by benchmarks/staged_power.py (false alarms against the spent alpha).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from gsm8k_bench.verdicts import paired_stats

METHOD = ("group-sequential paired test: McNemar z = (lost - gained) / sqrt(lost + gained) at each look; "
          "efficacy by Lan-DeMets alpha spending of O'Brien-Fleming type at the gate's level; futility by "
          "power-family beta spending (non-binding); boundaries by the recursive numerical integration of "
          "Armitage, McPherson & Rowe (1969) / Jennison & Turnbull (2000, ch. 19)")
FUTILITY_RHO = 1.0  # beta(t) = beta * t: spends futility early enough to stop most healthy runs by 40%
GRID_INTERVALS = 240  # Simpson intervals per look (even): crossing probabilities to ~1e-7
TAIL = 9.0  # the grid's lower end, in standard deviations below the mean of z_k
DECISIONS = ("regression", "no_regression", "continue")

_NORMAL = NormalDist()


def _upper_tail(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2))


def _density(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def obrien_fleming_spent(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type alpha spent by information fraction t (one-sided)."""
    if t <= 0:
        return 0.0
    return 2 * _upper_tail(_NORMAL.inv_cdf(1 - alpha / 2) / math.sqrt(t))


def futility_spent(t: float, beta: float) -> float:
    """Power-family beta spent by information fraction t."""
    return beta * float(min(t, 1.0) ** FUTILITY_RHO)


@dataclass(frozen=True)
class Boundaries:
    """The z boundaries at each look; futility is -inf where nothing is spent (drift 0 or beta 0)."""

    fractions: tuple[float, ...]
    alpha: float
    beta: float
    drift: float
    efficacy: tuple[float, ...]
    futility: tuple[float, ...]


class _Grid:
    """The sub-density of z at one look on [low, high] (Simpson's rule), of runs that have not stopped."""

    def __init__(self, low: float, high: float, t: float, drift: float, previous: _Grid | None) -> None:
        self.t = t
        step = (high - low) / GRID_INTERVALS
        self.points = [low + i * step for i in range(GRID_INTERVALS + 1)]
        self.weights = [step / 3 * (1 if i in (0, GRID_INTERVALS) else 4 if i % 2 else 2)
                        for i in range(GRID_INTERVALS + 1)]
        if previous is None:  # the first look: z_1 ~ N(drift sqrt(t), 1)
            self.density = [_density(z - drift * math.sqrt(t)) for z in self.points]
        else:
            self.density = [previous.next_density(y, t, drift) for y in self.points]

    def mass(self) -> float:
        return sum(w * f for w, f in zip(self.weights, self.density, strict=True))

    def next_density(self, y: float, t: float, drift: float) -> float:
        """Density of z at the next look (fraction t) at y, over the paths that continued here."""
        delta = t - self.t
        scale = math.sqrt(t / delta)
        return sum(w * f * _density((y * math.sqrt(t) - z * math.sqrt(self.t) - drift * delta) / math.sqrt(delta))
                   for z, w, f in zip(self.points, self.weights, self.density, strict=True)) * scale

    def next_above(self, bound: float, t: float, drift: float) -> float:
        """Probability that z at the next look (fraction t) is at least `bound`, over the paths continuing."""
        delta = t - self.t
        return sum(w * f * _upper_tail((bound * math.sqrt(t) - z * math.sqrt(self.t) - drift * delta)
                                       / math.sqrt(delta))
                   for z, w, f in zip(self.points, self.weights, self.density, strict=True))


def _above(previous: _Grid | None, bound: float, t: float, drift: float) -> float:
    """P(z_k >= bound, and every earlier look continued)."""
    if previous is None:
        return _upper_tail(bound - drift * math.sqrt(t))
    return previous.next_above(bound, t, drift)


def _solve(previous: _Grid | None, t: float, drift: float, target: float) -> float:
    """The bound b with P(z_k >= b, and every earlier look continued) = target."""
    low, high = -20.0, 20.0
    for _ in range(60):  # bisection: P(z_k >= b) falls as b rises
        middle = (low + high) / 2
        low, high = (middle, high) if _above(previous, middle, t, drift) > target else (low, middle)
    return (low + high) / 2


def _check(fractions: Sequence[float], alpha: float, beta: float, drift: float) -> None:
    if not fractions or any(b <= a for a, b in itertools.pairwise(fractions)) or fractions[0] <= 0 \
            or abs(fractions[-1] - 1) > 1e-12:
        raise ValueError(f"information fractions must rise strictly from above 0 to 1, got {list(fractions)}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    if drift < 0:
        raise ValueError(f"drift must be >= 0, got {drift}")


@functools.lru_cache(maxsize=256)
def boundaries(fractions: tuple[float, ...], alpha: float, beta: float, drift: float) -> Boundaries:
    """Efficacy and futility boundaries on the z scale at each look (see the module's docstring)."""
    _check(fractions, alpha, beta, drift)
    efficacy: list[float] = []
    grid: _Grid | None = None
    spent = 0.0
    for t in fractions:  # under no change (drift 0), futility ignored: non-binding
        now = obrien_fleming_spent(t, alpha)
        bound = _solve(grid, t, 0.0, now - spent)
        spent = now
        efficacy.append(bound)
        grid = _Grid(min(bound, 0.0) - TAIL, bound, t, 0.0, grid)
    futility: list[float] = []
    grid, spent = None, 0.0
    for look, t in enumerate(fractions):  # under the drift, with both boundaries in place
        if look == len(fractions) - 1:
            futility.append(efficacy[look])
            break
        now = futility_spent(t, beta) if drift > 0 else 0.0
        target = now - spent
        if target <= 0:
            bound = -math.inf
        else:  # P(z_k < b, continued) = target: P(z_k >= b) = mass - target
            bound = min(_solve(grid, t, drift, (1.0 if grid is None else grid.mass()) - target), efficacy[look])
        spent = now
        futility.append(bound)
        low = max(bound, drift * math.sqrt(t) - TAIL)
        if low >= efficacy[look]:  # the boundaries met: every run stops here
            futility.extend(efficacy[look + 1:])
            break
        grid = _Grid(low, efficacy[look], t, drift, grid)
    return Boundaries(tuple(fractions), alpha, beta, drift, tuple(efficacy), tuple(futility))


def crossing(bounds: Boundaries, drift: float) -> tuple[list[float], list[float]]:
    """Per look, the probability of stopping there for efficacy and for futility, under `drift` (both
    boundaries in place): what a simulation of the design must reproduce."""
    up: list[float] = []
    down: list[float] = []
    grid: _Grid | None = None
    for look, t in enumerate(bounds.fractions):
        e, f = bounds.efficacy[look], bounds.futility[look]
        above = _above(grid, e, t, drift)
        continued = 1.0 if grid is None else grid.mass()
        below = continued - _above(grid, f, t, drift) if f > -math.inf else 0.0
        up.append(above)
        down.append(below)
        low = max(f, drift * math.sqrt(t) - TAIL)
        if low >= e:
            break
        grid = _Grid(low, e, t, drift, grid)
    return up, down


def equal_fractions(looks: int) -> tuple[float, ...]:
    """Equally spaced looks: 1/K, 2/K, ..., 1."""
    if looks < 1:
        raise ValueError(f"looks must be >= 1, got {looks}")
    return tuple((k + 1) / looks for k in range(looks))


def nominal_level(efficacy: float) -> float:
    """The one-sided p-value at an efficacy boundary: the exact McNemar test is held to it (the z boundary
    is the normal approximation's; the exact test keeps the false-alarm rate at or below the fixed gate's)."""
    return _upper_tail(efficacy)


def mcnemar_z(lost: int, gained: int) -> float:
    """McNemar's z of a drop; 0 when nothing is discordant."""
    discordant = lost + gained
    return (lost - gained) / math.sqrt(discordant) if discordant else 0.0


@dataclass(frozen=True)
class Design:
    """A staged design: the looks (fractions of the set), the drop the futility boundary protects against
    (accuracy points, e.g. 0.02), and the beta spent for futility.  The defaults (8 equal looks, beta 0.15,
    a 2-point drop) meet benchmarks/staged_power.py's goals: healthy runs at flip rates <= 0.02 ask under 40%
    of the questions, and 2- and 3-point drops lose under 5 points of power against the fixed full run."""

    fractions: tuple[float, ...] = tuple((k + 1) / 8 for k in range(8))
    design_drop: float = 0.02
    beta: float = 0.15

    def drift(self, questions: int, asked: int, discordant: int) -> float:
        """The expected full-run z at the design drop, from the discordant share observed so far (the flip
        rate f of healthy runs, to which the drop adds d: z_N = d N / sqrt((f + d) N)).  Rounded down to a
        0.25 grid, so that boundaries are cached and the estimate errs towards less futility."""
        share = discordant / asked if asked else 0.0
        drift = self.design_drop * math.sqrt(questions / (share + self.design_drop))
        return math.floor(drift * 4) / 4

    def stage_ends(self, questions: int) -> list[int]:
        """How many questions have been asked at each look."""
        ends = [max(1, round(t * questions)) for t in self.fractions]
        if len(set(ends)) != len(ends):
            raise ValueError(f"{len(self.fractions)} looks need more than {questions} questions")
        return ends


@dataclass(frozen=True)
class Look:
    """One look of a staged run: what was seen, the boundaries, and the decision."""

    look: int  # 1-based
    asked: int
    lost: int
    gained: int
    z: float
    p: float  # one-sided exact McNemar p of a drop
    efficacy: float
    nominal: float  # the p at or below which this look calls a regression (nominal_level(efficacy))
    futility: float
    drift: float
    decision: str  # one of DECISIONS


def decide(design: Design, alpha: float, questions: int, look: int, lost: int, gained: int) -> Look:
    """The decision at look `look` (1-based) after asking design.stage_ends(questions)[look - 1] questions."""
    asked = design.stage_ends(questions)[look - 1]
    drift = design.drift(questions, asked, lost + gained)
    bounds = boundaries(design.fractions, alpha, design.beta, drift)
    z, p = mcnemar_z(lost, gained), paired_stats.mcnemar_drop_p(lost, gained)
    e, f = bounds.efficacy[look - 1], bounds.futility[look - 1]
    nominal = nominal_level(e)
    last = look == len(design.fractions)
    decision = DECISIONS[0] if p <= nominal else DECISIONS[1] if z < f or last else DECISIONS[2]
    return Look(look, asked, lost, gained, z, p, e, nominal, f, drift, decision)
