"""Group-sequential boundaries (gsm8k_bench/verdicts/sequential.py) against independent computations: a
published table and a Monte-Carlo simulation of the score process; and the decision at a look."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from conftest import ROOT

from gsm8k_bench.verdicts import paired_stats, sequential

RUNS = 200_000  # simulated trials per Monte-Carlo check


def simulate_z(fractions: tuple[float, ...], drift: float, seed: int) -> np.ndarray:
    """z at each look of RUNS trials: z_k = B(t_k) / sqrt(t_k), B a Brownian motion with drift `drift`."""
    rng = np.random.default_rng(seed)
    t = np.array(fractions)
    steps = rng.normal(drift * np.diff(t, prepend=0.0), np.sqrt(np.diff(t, prepend=0.0)), size=(RUNS, len(t)))
    return steps.cumsum(axis=1) / np.sqrt(t)


def first_stop(z: np.ndarray, efficacy: tuple[float, ...], futility: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Per look, the share of trials that stop there for efficacy and for futility."""
    active = np.ones(len(z), dtype=bool)
    up, down = [], []
    for look, (e, f) in enumerate(zip(efficacy, futility, strict=True)):
        crossed_up = active & (z[:, look] >= e)
        crossed_down = active & ~crossed_up & (z[:, look] < f)
        up.append(crossed_up.mean())
        down.append(crossed_down.mean())
        active &= ~(crossed_up | crossed_down)
    return np.array(up), np.array(down)


def within(observed: np.ndarray, expected: np.ndarray) -> bool:
    """Every share within 4 Monte-Carlo standard errors (and 1e-4) of its computed probability."""
    se = np.sqrt(np.maximum(expected * (1 - expected), 1e-12) / RUNS)
    return bool(np.all(np.abs(observed - expected) <= 4 * se + 1e-4))


def test_efficacy_boundaries_match_a_published_table() -> None:
    # SeqBounds.jl's README (PharmCat/SeqBounds.jl): one-sided O'Brien-Fleming-type Lan-DeMets spending,
    # alpha 0.05, looks at 0.25, 0.5, 0.75, 1: Z = 3.74955, 2.53993, 2.01604, 1.72014.
    bounds = sequential.boundaries((0.25, 0.5, 0.75, 1.0), 0.05, 0.0, 0.0)
    assert bounds.efficacy == pytest.approx((3.74955, 2.53993, 2.01604, 1.72014), abs=2e-3)
    assert bounds.futility[:-1] == (-math.inf,) * 3  # nothing spent on futility
    assert bounds.futility[-1] == bounds.efficacy[-1]  # the last look decides


def test_spent_alpha_is_the_crossing_probability_under_no_change() -> None:
    fractions = sequential.equal_fractions(8)
    alpha = 0.01
    bounds = sequential.boundaries(fractions, alpha, 0.15, 3.5)
    spent = np.diff([0.0, *(sequential.obrien_fleming_spent(t, alpha) for t in fractions)])
    z = simulate_z(fractions, 0.0, seed=1)
    up, _ = first_stop(z, bounds.efficacy, (-math.inf,) * len(fractions))  # non-binding: futility ignored
    assert within(up, spent), (up, spent)
    assert abs(up.sum() - alpha) <= 4 * math.sqrt(alpha / RUNS)


def test_futility_spends_beta_under_the_drift_and_crossing_matches_simulation() -> None:
    fractions = sequential.equal_fractions(6)
    bounds = sequential.boundaries(fractions, 0.05, 0.15, 3.0)
    z = simulate_z(fractions, 3.0, seed=2)
    up, down = first_stop(z, bounds.efficacy, bounds.futility)
    beta_spent = np.diff([0.0, *(sequential.futility_spent(t, 0.15) for t in fractions[:-1])])
    assert within(down[:-1], beta_spent), (down, beta_spent)
    computed_up, computed_down = sequential.crossing(bounds, 3.0)
    assert within(up, np.array(computed_up)) and within(down, np.array(computed_down))
    under_null = first_stop(simulate_z(fractions, 0.0, seed=3), bounds.efficacy, bounds.futility)
    assert all(within(s, np.array(c)) for s, c in zip(under_null, sequential.crossing(bounds, 0.0), strict=True))


def test_boundaries_are_computed_once_per_design() -> None:
    args = ((0.3, 0.6, 1.0), 0.02, 0.1, 2.75)
    first = sequential.boundaries(*args)
    hits = sequential.boundaries.cache_info().hits
    assert sequential.boundaries(*args) is first
    assert sequential.boundaries.cache_info().hits == hits + 1


@pytest.mark.parametrize(("args", "message"), [
    (((0.5, 0.4, 1.0), 0.05, 0.1, 1.0), "rise strictly"),
    (((0.5, 0.9), 0.05, 0.1, 1.0), "to 1"),
    (((0.5, 1.0), 0.6, 0.1, 1.0), "alpha must be in"),
    (((0.5, 1.0), 0.05, 1.0, 1.0), "beta must be in"),
    (((0.5, 1.0), 0.05, 0.1, -1.0), "drift must be"),
])
def test_bad_designs_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sequential.boundaries(*args)


def test_each_look_decides_on_the_exact_test_and_the_futility_boundary() -> None:
    design = sequential.Design()
    questions, alpha = 1319, 0.05
    first = design.stage_ends(questions)[0]
    lost = sequential.decide(design, alpha, questions, 1, 30, 0)  # 30 of 30 discordant lost at 1/8
    assert lost.decision == "regression" and lost.asked == first
    assert lost.p == paired_stats.mcnemar_drop_p(30, 0) <= lost.nominal
    assert sequential.decide(design, alpha, questions, 1, 20, 0).decision == "continue"  # 2^-20 > the nominal level
    gained = sequential.decide(design, alpha, questions, 2, 2, 8)
    assert gained.decision == "no_regression" and gained.z < gained.futility
    unclear = sequential.decide(design, alpha, questions, 2, 6, 3)
    assert unclear.decision == "continue" and unclear.futility <= unclear.z and unclear.p > unclear.nominal
    last = len(design.fractions)
    # z = 1.86 is above the last efficacy boundary (1.78), but the exact p (0.041) is above its nominal level
    borderline = sequential.decide(design, alpha, questions, last, 40, 25)
    assert borderline.z >= borderline.efficacy and borderline.decision == "no_regression"
    assert sequential.decide(design, alpha, questions, last, 45, 20).decision == "regression"


def test_the_drift_follows_the_observed_discordant_share() -> None:
    design = sequential.Design()
    low_flip = design.drift(1319, 330, 3)  # ~1% discordant
    high_flip = design.drift(1319, 330, 17)  # ~5% discordant
    assert high_flip < low_flip
    assert low_flip == math.floor(0.02 * math.sqrt(1319 / (3 / 330 + 0.02)) * 4) / 4


def test_too_many_looks_for_the_questions_is_refused() -> None:
    with pytest.raises(ValueError, match="8 looks need more than 5 questions"):
        sequential.Design().stage_ends(5)


def test_the_benchmarks_vectorised_design_decides_as_the_package_does() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import staged_power
    from pairing_power import Tails

    design, alpha = sequential.Design(), 0.05
    ends = design.stage_ends(1319)
    rng = np.random.default_rng(5)
    for flip, drop in ((0.01, 0.0), (0.03, 0.02), (0.05, 0.03)):
        lost, gained = staged_power.simulate(design, 0.8, flip, drop, 300, rng)
        called, asked = staged_power.staged(design, alpha, lost, gained, ends, Tails(1319))
        for run in range(300):
            for look in range(len(ends)):
                decision = sequential.decide(design, alpha, 1319, look + 1, int(lost[run, look]),
                                             int(gained[run, look]))
                if decision.decision != "continue":
                    break
            assert (bool(called[run]), int(asked[run])) == (decision.decision == "regression", decision.asked)
        assert 0 < asked.mean() < 1319  # some runs stopped early, some did not
