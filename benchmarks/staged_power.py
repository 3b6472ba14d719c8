"""Staged evaluation against the fixed full run, simulated: questions asked, power, false alarms.

    python benchmarks/staged_power.py [--runs 100000] [--looks 8] [--beta 0.15] [--design-drop 0.02]

The model of a session is benchmarks/pairing_power.py's (its `cells`): accuracy --accuracy (default 0.8),
a share 2f of the questions borderline (either run right with probability 1/2), a true drop d making d*n
always-right questions always wrong; the reference is one full run of 1,319 questions with its own luck.
The questions are asked in a random order (every prefix a random sample), in --looks equal stages; after
each, gsm8k_bench/verdicts/sequential.py decides (regression, no regression, continue).  The fixed design
is today's gate: all 1,319 questions, one-sided exact McNemar p <= level.

For each flip rate f, at the level of a session run alone (alpha = 1 - confidence) and of a session of a
whole-matrix dispatch (alpha / K, K = matrix.yaml's sessions): the average share of the questions asked by
healthy runs, the power for 2- and 3-point drops of both designs, and the false-alarm rate of both (healthy
runs called a regression), with their Monte-Carlo standard errors.  Then GPU-hours per whole-matrix dispatch
on paper: sum over sessions of tp x eval time, full and staged (healthy sessions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pairing_power: the session model
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package
from pairing_power import GSM8K_QUESTIONS, Tails, cells, matrix_sessions

from gsm8k_bench.verdicts import sequential


def staged(design: sequential.Design, alpha: float, lost: np.ndarray, gained: np.ndarray, ends: list[int],
           tails: Tails) -> tuple[np.ndarray, np.ndarray]:
    """Per run (rows), whether the staged design calls a regression and how many questions it asked.
    lost, gained: cumulative counts at each look (runs x looks)."""
    runs, looks = lost.shape
    regression = np.zeros(runs, dtype=bool)
    asked = np.full(runs, ends[-1])
    active = np.ones(runs, dtype=bool)
    for look in range(looks):
        discordant = lost[:, look] + gained[:, look]
        z = np.where(discordant > 0, (lost[:, look] - gained[:, look]) / np.sqrt(np.maximum(discordant, 1)), 0.0)
        drift = np.zeros(runs)
        for count in np.unique(discordant[active]):  # the package's own estimate, per discordant count
            drift[discordant == count] = design.drift(ends[-1], ends[look], int(count))
        nominal = np.empty(runs)
        futility = np.empty(runs)
        for value in np.unique(drift[active]):
            bounds = sequential.boundaries(design.fractions, alpha, design.beta, float(value))
            rows = drift == value
            nominal[rows], futility[rows] = sequential.nominal_level(bounds.efficacy[look]), bounds.futility[look]
        last = look == looks - 1
        up = active & (tails.mcnemar(lost[:, look], gained[:, look]) <= nominal)
        down = active & ~up & ((z < futility) | last)
        regression |= up
        asked[up | down] = ends[look]
        active &= ~(up | down)
    return regression, asked


def simulate(design: sequential.Design, accuracy: float, flip: float, drop: float, runs: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (lost, gained) at each look of `runs` simulated runs."""
    ends = design.stage_ends(GSM8K_QUESTIONS)
    sizes = np.diff([0, *ends])
    increments = np.stack([rng.multinomial(size, cells(accuracy, flip, drop), size=runs) for size in sizes], axis=1)
    totals = increments.cumsum(axis=1)  # runs x looks x (both right, gained, lost, both wrong)
    return totals[:, :, 2], totals[:, :, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accuracy", type=float, default=0.8)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--runs", type=int, default=100_000, help="simulated runs per figure")
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--looks", type=int, default=len(sequential.Design().fractions))
    parser.add_argument("--beta", type=float, default=sequential.Design().beta)
    parser.add_argument("--design-drop", type=float, default=sequential.Design().design_drop)
    parser.add_argument("--flip-rates", default="0.01,0.02,0.03,0.04,0.05")
    parser.add_argument("--drops", default="0.02,0.03")
    parser.add_argument("--family", type=int, default=0, help="sessions per dispatch (default: matrix.yaml's)")
    parser.add_argument("--eval-hours", type=float, default=0.5,
                        help="eval time of one full run on a GPU session, for the paper GPU-hours (an assumption)")
    args = parser.parse_args()
    design = sequential.Design(sequential.equal_fractions(args.looks), args.design_drop, args.beta)
    ends = design.stage_ends(GSM8K_QUESTIONS)
    family = args.family or matrix_sessions()
    alpha = 1 - args.confidence
    flips = [float(x) for x in args.flip_rates.split(",")]
    drops = [float(x) for x in args.drops.split(",")]
    tails = Tails(GSM8K_QUESTIONS)
    rng = np.random.default_rng(args.seed)
    print(f"Staged ({args.looks} looks at {', '.join(str(e) for e in ends)} questions; futility for a "
          f"{args.design_drop * 100:g}-point drop, beta {args.beta}) against the fixed full run of "
          f"{GSM8K_QUESTIONS:,}; accuracy {args.accuracy}; {args.runs:,} runs per figure, seed {args.seed}.")
    shares: dict[float, float] = {}
    for level, label in ((alpha, "a session run alone"), (alpha / family, f"a dispatch of K = {family}")):
        alarm_se = (level * (1 - level) / args.runs) ** 0.5
        print(f"\n{label}: per-session level {level:.3g} (false-alarm standard error {alarm_se:.2g}; power "
              f"standard error <= {0.5 / args.runs ** 0.5:.3f})")
        print("| flip rate | questions asked (healthy) | "
              + " | ".join(f"power {d * 100:g} pt staged / fixed" for d in drops)
              + " | false alarms staged / fixed |")
        print("|---|---|" + "---|" * (len(drops) + 1))
        for flip in flips:
            row = []
            for drop in (0.0, *drops):
                lost, gained = simulate(design, args.accuracy, flip, drop, args.runs, rng)
                called, asked = staged(design, level, lost, gained, ends, tails)
                fixed = tails.mcnemar(lost[:, -1], gained[:, -1]) <= level
                if drop == 0.0:
                    share = float(asked.mean()) / GSM8K_QUESTIONS
                    shares[flip] = share if level == alpha / family else shares.get(flip, share)
                    alarms = f"{called.mean():.4f} / {fixed.mean():.4f}"
                    row.append(f"{share:.1%}")
                else:
                    row.append(f"{called.mean():.3f} / {fixed.mean():.3f}")
            print(f"| {flip:g} | " + " | ".join(row) + f" | {alarms} |", flush=True)
    gpu_sessions = [c for c in load_combinations() if c[1]]
    full = sum(tp for _, tp in gpu_sessions) * args.eval_hours
    print(f"\nGPU-hours per whole-matrix dispatch on paper ({len(gpu_sessions)} GPU sessions, sum of tp = "
          f"{sum(tp for _, tp in gpu_sessions)}, {args.eval_hours} h of eval per full run, every session healthy, "
          f"the dispatch's level): full {full:,.0f}; staged " + ", ".join(
              f"f={flip:g}: {full * share:,.0f} (saves {full * (1 - share):,.0f})" for flip, share in shares.items()))


def load_combinations() -> list[tuple[str, int]]:
    """(runner vendor, GPUs held) of each session of matrix.yaml; a CPU session holds none."""
    from gsm8k_bench.matrix.loader import load_matrix

    matrix = load_matrix(Path(__file__).resolve().parent.parent / "matrix.yaml")
    return [(c.runner.vendor, 0 if c.runner.vendor == "cpu" else c.tp) for c in matrix.combinations]


if __name__ == "__main__":
    main()
