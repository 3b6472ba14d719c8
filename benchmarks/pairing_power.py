"""What pairing buys: questions needed to catch a true drop, paired gate vs the unpaired Wilson gate.

    python benchmarks/pairing_power.py [--flip-rates 0.02,0.05,0.1,0.15,0.2] [--accuracy 0.6]

Simulated runs over n questions.  A healthy rerun disagrees with the reference on a share `flip` of the
questions, half lost and half gained (greedy decoding on other batch shapes flips borderline answers;
measure it with --measure REF.json RUN.json on two real runs of one session).  A true drop of d turns
another d*n of the reference's right answers wrong.  Both gates use the configured confidence:
- paired (this project's gate with a reference): the run against the reference question by question,
  regression when Newcombe's one-sided upper bound on run - reference < -tolerance (gsm8k_bench.verdicts.paired_stats);
- unpaired (the scalar gate of baselines.yaml): the run's accuracy alone, regression when its Wilson
  upper bound < baseline - tolerance, the baseline being the reference accuracy (taken as exact).
"Questions needed" is the smallest n at which the gate calls the drop in at least --power of the runs;
"false alarms" is the share of healthy reruns called a regression.  GSM8K has 1,319 test questions.
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
    parser.add_argument("--flip-rates", default="0.02,0.05,0.1,0.15,0.2")
    parser.add_argument("--accuracy", type=float, default=0.6, help="the reference's accuracy")
    parser.add_argument("--drops", default="0.01,0.02,0.05")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--tolerances", default="0,0.02", help="0 shows what the statistics resolve; "
                        "0.02 is baselines.yaml's")
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument("--runs", type=int, default=2000, help="simulated runs per point")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--measure", nargs=2, type=Path, metavar=("REF_JSON", "RUN_JSON"),
                        help="print the flip rate between two session JSONs and stop")
    args = parser.parse_args()
    if args.measure:
        rate, n = flip_rate(*args.measure)
        print(f"flip rate {rate:.4f} over {n} questions")
        return
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
