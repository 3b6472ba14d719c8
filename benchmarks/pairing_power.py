"""The paired gate's power and matrix-wide false alarms, simulated; and what pairing buys over the unpaired gate.

    python benchmarks/pairing_power.py [--runs 4000] [--dispatches 4000] [--seed 12]
    python benchmarks/pairing_power.py --questions-needed [--flip-rates 0.02,0.05,0.1,0.15,0.2] [--accuracy 0.6]
    python benchmarks/pairing_power.py --measure REF.json RUN.json

Model of a session (accuracy --accuracy, default 0.8): a share 2f of the questions are borderline, answered
right with probability 1/2 by every run, independently; the others are always right or always wrong.  Two
healthy runs then disagree on a share f of the questions (the *flip rate*: greedy decoding under other batch
shapes flips borderline answers; measure it with --measure on two real runs of one session).  The reference
is one such run, with its own luck: a reference that happened to get borderline questions right makes every
later run lose them.  A true drop of d makes another d*n always-right questions always wrong.

Default output: for each decision rule below, the share of runs that call a true drop of 1-5 points
regression (power) at flip rates 0.01-0.05 and n = 200 / 500 / 1,319, and the share of dispatches of the
whole matrix (every session healthy, at the row's n and f, each with its own noisy reference) that
report any regression.  Every rule works at the family-wise level alpha = 1 - confidence, each test at
alpha / (K x T) (Bonferroni) for a dispatch of K sessions of T tests each: T = 2 (--tests), as the gate does
when both sides record truncation, which it checks with a second test of the same kind; the simulation gives
each session a truncation test too, on borderline truncations as frequent as its borderline answers (--flip
rate; real truncation flips far less) with no true change, and a session is called when either test calls
it.  Monte Carlo: the standard errors are printed with the tables.
- one-run reference (the gate): one-sided exact McNemar, p = P(Bin(lost + gained, 1/2) >= lost) <= alpha/K;
- confirmation pass: sessions with McNemar p <= --screen are asked the same questions again on the same server;
  the regression is called by one exact test of the reference against both passes (three exchangeable runs
  under no change: per question, the run's share of the right answers is hypergeometric) at alpha/K;
- confirmation pass, replayed: the same, when the server answers pass 2 exactly as pass 1 (a deterministic
  stack): the joint test then counts every flip twice;
- both passes agree: each pass's McNemar p <= sqrt(alpha/K), levels chosen as if the passes were independent
  (they share the reference's luck);
- two-run reference (the gate, with a reference of two runs): the reference holds two independent healthy
  runs; one exact test of the run against both (paired_stats.exchangeable_drop_p: a question right in s of
  the 3 runs is right in the run with probability s/3) at alpha/(K x T).

--questions-needed: the older table, paired (Newcombe bound < -tolerance) against the unpaired Wilson gate:
the smallest n at which a gate calls the drop in at least --power of the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package
from gsm8k_bench.verdicts import gate, paired_stats

GSM8K_QUESTIONS = 1319
MAX_N = 64000


@cache
def paired_upper(both_right: int, gained: int, lost: int, both_wrong: int, confidence: float) -> float:
    table = paired_stats.PairedTable(both_right, gained, lost, both_wrong)
    return paired_stats.newcombe_interval(table, paired_stats.z_one_sided(confidence))[1]


@cache
def wilson_upper(right: int, n: int, confidence: float) -> float:
    return gate.wilson_upper(right / n, n, confidence)


def cells(accuracy: float, flip: float, drop: float) -> list[float]:
    """Probabilities of (both right, gained, lost, both wrong) for one question."""
    gained, lost = flip / 2, flip / 2 + drop
    return [accuracy - lost, gained, lost, 1 - accuracy - gained]


def alarm_rates(n: int, accuracy: float, flip: float, drop: float, tolerance: float, confidence: float,
                runs: int, rng: np.random.Generator) -> tuple[float, float]:
    """Share of simulated runs each gate calls a regression: (paired, unpaired)."""
    tables = rng.multinomial(n, cells(accuracy, flip, drop), size=runs)
    paired_calls = sum(paired_upper(*map(int, t), confidence) < -tolerance for t in tables)
    unpaired_calls = sum(wilson_upper(int(t[0] + t[1]), n, confidence) < accuracy - tolerance for t in tables)
    return paired_calls / runs, unpaired_calls / runs


def questions_needed(which: int, accuracy: float, flip: float, drop: float, tolerance: float, confidence: float,
                     power: float, runs: int, seed: int) -> int | None:
    """Smallest n (to within 2%) at which the gate (0 paired, 1 unpaired) calls the drop in `power` of runs."""
    if drop <= tolerance:
        return None  # within tolerance: by design never a regression

    def calls(n: int) -> bool:
        return alarm_rates(n, accuracy, flip, drop, tolerance, confidence, runs, np.random.default_rng(seed))[
            which] >= power

    low, high = 1, 16
    while not calls(high):
        low, high = high, high * 2
        if high > MAX_N:
            return None
    while high - low > max(1, low // 50):
        middle = (low + high) // 2
        low, high = (low, middle) if calls(middle) else (middle, high)
    return high


# Matrix-wide error control.  A simulated session is 8 cell counts: each borderline question's outcome in
# three runs, bits (reference, pass 1, third run) of the cell index; the third run is pass 2 of a confirmation
# or the reference's second run, whichever the rule reads.  Always-right and always-wrong questions carry no
# signal; the dropped ones (reference right, every pass wrong) are added by each rule.
BITS = np.array([[(cell >> 2) & 1, (cell >> 1) & 1, cell & 1] for cell in range(8)])
REFERENCE, PASS_1, THIRD = BITS.T
CHUNK = 16384  # rows per vectorised p-value step (bounds the memory of the gather)


def binomial_cdf(q: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """pmf[c, j] = P(Bin(c, q) = j) and cdf[c, j] = P(Bin(c, q) <= j), for c, j <= size."""
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, size + 1)))])
    c, j = np.arange(size + 1)[:, None], np.arange(size + 1)[None, :]
    inside = j <= c
    log_pmf = (log_factorial[c] - log_factorial[j] - log_factorial[np.where(inside, c - j, 0)]
               + j * np.log(q) + (c - j) * np.log1p(-q))
    pmf = np.where(inside, np.exp(log_pmf), 0.0)
    return pmf, np.minimum(np.cumsum(pmf, axis=1), 1.0)


class Tails:
    """Lower tails of Bin(c_a, q_a) + Bin(c_b, q_b), vectorised over simulated sessions."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.tables = {q: binomial_cdf(q, size) for q in (1 / 3, 1 / 2, 2 / 3)}

    def mcnemar(self, lost: np.ndarray, gained: np.ndarray) -> np.ndarray:
        """One-sided exact McNemar p: P(Bin(lost + gained, 1/2) <= gained) = P(... >= lost)."""
        return self.tables[1 / 2][1][lost + gained, gained]

    def at_most(self, c_a: np.ndarray, q_a: float, c_b: np.ndarray, q_b: float, t: np.ndarray) -> np.ndarray:
        pmf_a, cdf_b = self.tables[q_a][0], self.tables[q_b][1]
        j = np.arange(self.size + 1)[None, :]
        out = np.empty(len(t))
        for start in range(0, len(t), CHUNK):
            rows = slice(start, start + CHUNK)
            k = t[rows, None] - j
            below = np.where(k >= 0, cdf_b[c_b[rows, None], np.clip(k, 0, self.size)], 0.0)
            out[rows] = (pmf_a[c_a[rows, None], j] * below).sum(axis=1)
        return out


def counted(cells: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return cells[:, mask.astype(bool)].sum(axis=1)


def mcnemar_p(cells: np.ndarray, dropped: int, run: np.ndarray, tails: Tails) -> np.ndarray:
    """One pass against the one-run reference."""
    lost = counted(cells, (REFERENCE == 1) & (run == 0)) + dropped
    return tails.mcnemar(lost, counted(cells, (REFERENCE == 0) & (run == 1)))


def joint_p(cells: np.ndarray, dropped: int, second_pass: np.ndarray, tails: Tails) -> np.ndarray:
    """The one-run reference against two passes, as three exchangeable runs: a question with s of 3 right
    gives the run's passes s=1: 1 right with probability 2/3, s=2: 1 + Bernoulli(1/3)."""
    right = REFERENCE + PASS_1 + second_pass
    c1 = counted(cells, right == 1) + dropped  # a dropped question: the reference's one right answer
    c2 = counted(cells, right == 2)
    passes = PASS_1 + second_pass
    t = (cells * np.where((right == 1) | (right == 2), passes, 0)).sum(axis=1) - c2
    return tails.at_most(c1, 2 / 3, c2, 1 / 3, t)


def two_run_reference_p(cells: np.ndarray, dropped: int, tails: Tails) -> np.ndarray:
    """The run against a reference of two runs (REFERENCE and THIRD): s of 3 right gives the run
    Bernoulli(s/3)."""
    right = REFERENCE + PASS_1 + THIRD
    c1 = counted(cells, right == 1)
    c2 = counted(cells, right == 2) + dropped  # a dropped question: both reference runs right
    t = (cells * np.where((right == 1) | (right == 2), PASS_1, 0)).sum(axis=1)
    return tails.at_most(c1, 1 / 3, c2, 2 / 3, t)


RULES = ("one-run reference (the gate)", "confirmation pass", "confirmation pass, replayed",
         "both passes agree", "two-run reference (the gate)")


def calls(cells: np.ndarray, dropped: int, level: float, screen: float, tails: Tails) -> dict[str, np.ndarray]:
    """Rule -> which simulated sessions it calls a regression at per-session level `level`."""
    first = mcnemar_p(cells, dropped, PASS_1, tails)
    screened = first <= screen
    return {
        RULES[0]: first <= level,
        RULES[1]: screened & (joint_p(cells, dropped, THIRD, tails) <= level),
        RULES[2]: screened & (joint_p(cells, dropped, PASS_1, tails) <= level),
        RULES[3]: (first <= level ** 0.5) & (mcnemar_p(cells, dropped, THIRD, tails) <= level ** 0.5),
        RULES[4]: two_run_reference_p(cells, dropped, tails) <= level,
    }


def simulate(n: int, flip: float, drop: float, sessions: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Cell counts of `sessions` simulated sessions, and the number of dropped questions."""
    borderline = round(2 * flip * n)
    return rng.multinomial(borderline, [1 / 8] * 8, size=sessions), round(drop * n)


def check_against_gate(tails: Tails) -> None:
    """The vectorised McNemar tail and two-run tail are the gate's own (paired_stats)."""
    for lost, gained in ((0, 0), (7, 2), (39, 13), (20, 25), (60, 30)):
        ours = float(tails.mcnemar(np.array([lost]), np.array([gained]))[0])
        theirs = paired_stats.mcnemar_drop_p(lost, gained)
        assert abs(ours - theirs) <= 1e-9 * max(theirs, 1e-300) + 1e-15, (lost, gained, ours, theirs)
    for c1, c2, right in ((0, 0, 0), (5, 3, 2), (20, 40, 20), (13, 31, 9), (60, 60, 30)):
        if c1 + c2 > tails.size:
            continue
        ours = float(tails.at_most(np.array([c1]), 1 / 3, np.array([c2]), 2 / 3, np.array([right]))[0])
        theirs = paired_stats.exchangeable_drop_p(2, {1: c1, 2: c2}, right)
        assert abs(ours - theirs) <= 1e-9 * max(theirs, 1e-300) + 1e-15, (c1, c2, right, ours, theirs)


def truncation_calls(n: int, flip: float, sessions: int, level: float, args: argparse.Namespace, tails: Tails,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each rule's calls of the sessions' second test, truncation, with no true change (none without it)."""
    if args.tests < 2:
        return dict.fromkeys(RULES, np.zeros(sessions, dtype=bool))
    cells, dropped = simulate(n, flip, 0.0, sessions, rng)
    return calls(cells, dropped, level, args.screen, tails)


def matrix_sessions() -> int:
    from gsm8k_bench.matrix.loader import load_matrix

    return len(load_matrix(Path(__file__).resolve().parent.parent / "matrix.yaml").combinations)


def error_control(args: argparse.Namespace) -> None:
    family = args.family or matrix_sessions()
    alpha = 1 - args.confidence
    level = alpha / (family * args.tests)
    sizes = [int(x) for x in args.sizes.split(",")]
    flips = [float(x) for x in args.matrix_flip_rates.split(",")]
    drops = [float(x) for x in args.matrix_drops.split(",")]
    if args.accuracy - max(flips) < max(drops):
        raise SystemExit(f"accuracy {args.accuracy} leaves too few always-right questions for these flips and drops")
    tails = Tails(round(max(sizes) * (2 * max(flips) + max(drops))) + 2)
    check_against_gate(tails)
    rng = np.random.default_rng(args.seed)
    power: dict[tuple[str, int, float, float, int], float] = {}
    alarms: dict[tuple[str, int, float], float] = {}
    screened: dict[tuple[int, float], float] = {}
    for n in sizes:
        for flip in flips:
            for drop in drops:
                cells, dropped = simulate(n, flip, drop, args.runs, rng)
                truncation = truncation_calls(n, flip, args.runs, level, args, tails, rng)
                for rule, called in calls(cells, dropped, level, args.screen, tails).items():
                    power[rule, n, flip, drop, family] = float((called | truncation[rule]).mean())
                alone = (mcnemar_p(cells, dropped, PASS_1, tails) <= alpha / args.tests) | truncation_calls(
                    n, flip, args.runs, alpha / args.tests, args, tails, rng)[RULES[0]]
                power[RULES[0], n, flip, drop, 1] = float(alone.mean())
            cells, dropped = simulate(n, flip, 0.0, args.dispatches * family, rng)
            truncation = truncation_calls(n, flip, args.dispatches * family, level, args, tails, rng)
            for rule, called in calls(cells, dropped, level, args.screen, tails).items():
                alarms[rule, n, flip] = float((called | truncation[rule]).reshape(args.dispatches, family)
                                              .any(axis=1).mean())
            screened[n, flip] = float((mcnemar_p(cells, dropped, PASS_1, tails) <= args.screen).mean())
    power_se = 0.5 / args.runs ** 0.5
    alarm_se = (alpha * (1 - alpha) / args.dispatches) ** 0.5  # at the goal; sqrt(p(1-p)/dispatches) elsewhere
    print(f"Matrix-wide error control: accuracy {args.accuracy}, a dispatch of K = {family} sessions "
          f"(matrix.yaml), {args.tests} tests per session (accuracy{', truncation' if args.tests > 1 else ''}), "
          f"family-wise alpha = {alpha:.2f}, per test alpha/(K x {args.tests}) = {level:.3g}; seed {args.seed}, "
          f"{args.runs} runs per power figure (standard error <= {power_se:.3f}), {args.dispatches} dispatches "
          f"per false-alarm figure (standard error {alarm_se:.4f} at {alpha:.2f}, at most "
          f"{0.5 / args.dispatches ** 0.5:.4f}); confirmation screen: McNemar p <= {args.screen}.")
    heading = " | ".join(f"drop {d * 100:g} pt" for d in drops)
    for rule in RULES:
        print(f"\n{rule}: power at K = {family}; false alarms = share of dispatches of {family} healthy sessions "
              "reporting any regression")
        print(f"| n | flip rate | {heading} | false alarms |")
        print("|---|---|" + "---|" * (len(drops) + 1))
        for n in sizes:
            for flip in flips:
                print(f"| {n:,} | {flip:g} | " + " | ".join(f"{power[rule, n, flip, d, family]:.3f}" for d in drops)
                      + f" | {alarms[rule, n, flip]:.3f} |")
    print(f"\n{RULES[0]}, a session run alone (K = 1, level {alpha / args.tests:.3g} per test): power")
    print(f"| n | flip rate | {heading} |")
    print("|---|---|" + "---|" * len(drops))
    for n in sizes:
        for flip in flips:
            print(f"| {n:,} | {flip:g} | " + " | ".join(f"{power[RULES[0], n, flip, d, 1]:.3f}" for d in drops) + " |")
    print("\nconfirmation cost: share of healthy sessions screened for a second pass: " + ", ".join(
        f"n={n:,} f={flip:g}: {share:.3f}" for (n, flip), share in screened.items() if flip in (flips[0], flips[-1])))


def flip_rate(reference: Path, run: Path) -> tuple[float, int]:
    """Share of the questions both runs answered whose strict verdict differs."""
    docs = [json.loads(p.read_text()) for p in (reference, run)]
    ids, before, now = paired_stats.align(*(paired_stats.outcomes(d["samples"], "strict_match") for d in docs))
    return sum(b != x for b, x in zip(before, now, strict=True)) / len(ids), len(ids)


def shown(n: int | None) -> str:
    if n is None:
        return "never"
    return f"{n:,}" + (" (> GSM8K)" if n > GSM8K_QUESTIONS else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accuracy", type=float, default=None,
                        help="the reference's accuracy (default 0.8; 0.6 with --questions-needed)")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--runs", type=int, default=None, help="simulated runs per point (default 4000; 2000 with "
                        "--questions-needed)")
    parser.add_argument("--dispatches", type=int, default=4000, help="simulated dispatches per false-alarm figure")
    parser.add_argument("--family", type=int, default=0, help="sessions per dispatch (default: matrix.yaml's)")
    parser.add_argument("--sizes", default=f"200,500,{GSM8K_QUESTIONS}")
    parser.add_argument("--matrix-flip-rates", default="0.01,0.02,0.03,0.04,0.05")
    parser.add_argument("--matrix-drops", default="0.01,0.02,0.03,0.04,0.05")
    parser.add_argument("--screen", type=float, default=0.05, help="McNemar p that earns a confirmation pass")
    parser.add_argument("--tests", type=int, choices=(1, 2), default=2,
                        help="tests per session: 2, accuracy and truncation, as the gate when both record truncation")
    parser.add_argument("--questions-needed", action="store_true",
                        help="the older table: paired (Newcombe bound < -tolerance) against unpaired Wilson")
    parser.add_argument("--flip-rates", default="0.02,0.05,0.1,0.15,0.2")
    parser.add_argument("--drops", default="0.01,0.02,0.05")
    parser.add_argument("--tolerances", default="0,0.02", help="0 shows what the statistics resolve; "
                        "0.02 is the old paired gate's")
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument("--measure", nargs=2, type=Path, metavar=("REF_JSON", "RUN_JSON"),
                        help="print the flip rate between two session JSONs and stop")
    args = parser.parse_args()
    if args.measure:
        rate, n = flip_rate(*args.measure)
        print(f"flip rate {rate:.4f} over {n} questions")
        return
    if not args.questions_needed:
        args.accuracy, args.runs = args.accuracy or 0.8, args.runs or 4000
        error_control(args)
        return
    args.accuracy, args.runs = args.accuracy or 0.6, args.runs or 2000
    flips = [float(x) for x in args.flip_rates.split(",")]
    drops = [float(x) for x in args.drops.split(",")]
    for tolerance in (float(x) for x in args.tolerances.split(",")):
        print(f"\nquestions needed to call a true drop in {args.power:.0%} of runs, accuracy {args.accuracy}, "
              f"confidence {args.confidence}, tolerance {tolerance} (paired / unpaired Wilson):")
        print("| flip rate | " + " | ".join(f"drop {d * 100:g} pt" for d in drops)
              + " | false alarms n=200 | false alarms n=1,319 |")
        print("|---|" + "---|" * (len(drops) + 2))
        for flip in flips:
            needed = [" / ".join(shown(questions_needed(which, args.accuracy, flip, drop, tolerance, args.confidence,
                                                        args.power, args.runs, args.seed)) for which in (0, 1))
                      for drop in drops]
            alarms = [alarm_rates(n, args.accuracy, flip, 0.0, tolerance, args.confidence, args.runs * 5,
                                  np.random.default_rng(args.seed)) for n in (200, GSM8K_QUESTIONS)]
            print(f"| {flip:g} | " + " | ".join(needed) + " | "
                  + " | ".join(f"{p:.3f} / {u:.3f}" for p, u in alarms) + " |", flush=True)


if __name__ == "__main__":
    main()
