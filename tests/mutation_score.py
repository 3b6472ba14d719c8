"""Mutation score of the pure core (`nox -s mutation`): mutmut in a scratch copy of the checkout.

Which modules are mutated and which tests run: `[tool.mutmut]` in pyproject.toml.  Prints the score per
module and every surviving mutant with its diff; exits 1 when the score is under the target.

Survivors that no test can kill (equivalent mutants) are listed, with the reason, in
tests/mutation-survivors.md, one line each:

    - `module.function`: `the mutated line` — why no behaviour can tell it apart

They are matched by function and mutated line (not by mutmut's numbers, which shift when code changes),
and left out of the score's denominator.  `--write-unexplained FILE` writes the lines of the survivors
not yet explained, ready to be killed by a test or explained and pasted into the list.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPLAINED = Path(__file__).with_name("mutation-survivors.md")
TARGET = 0.90
ENTRY = re.compile(r"^- `(?P<function>[^`]+)`: `(?P<line>.*)` — (?P<why>.+)$")
# Not copied into the scratch checkout: caches, results, the set-up's virtual environment and an earlier run's mutants.
SKIP = shutil.ignore_patterns(".git", ".nox", ".venv", ".cache", "results", "mutants", "__pycache__", "*.egg-info",
                              ".pytest_cache", ".ruff_cache")


def function_of(mutant: str) -> str:
    """`gsm8k_bench.verdicts.gate.xǁBaselineǁmatches__mutmut_6` -> `gsm8k_bench.verdicts.gate.Baseline.matches`."""
    module, _, name = mutant.rsplit("__mutmut_", 1)[0].rpartition(".")
    return f"{module}.{name.removeprefix('x_').removeprefix('xǁ').replace('ǁ', '.')}"


def mutated_line(diff: str) -> str:
    """The mutant's version of the changed line(s), whitespace-normalised, comments dropped."""
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    lines = added or [f"(removed) {line}" for line in removed]
    return " / ".join(" ".join(line.split("  # ")[0].split()) for line in lines)


def load_explained(path: Path) -> dict[tuple[str, str], str]:
    explained = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("- `"):
            match = ENTRY.match(line)
            if not match:
                sys.exit(f"{path}:{number}: expected - `function`: `mutated line` — reason")
            explained[match["function"], match["line"]] = match["why"]
    return explained


def run_mutmut(work: Path, max_children: int) -> None:
    log = work / "mutmut.log"
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
                              cwd=work, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "CI": ""})
    print(f"mutmut ran in {time.monotonic() - started:.0f} s")
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-6000:].replace("\r", "\n")
        sys.exit(f"mutmut failed (exit {done.returncode}); the end of its log:\n{tail}")


def collect(work: Path) -> list[tuple[str, str, str, str]]:
    """(module file, mutant, status, diff) for every mutant; diffs only for those not killed."""
    os.chdir(work)  # mutmut's own readers expect its working directory
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    rows = []
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        path = meta.relative_to(work / "mutants").with_suffix("")
        data = SourceFileMutationData(path=path)
        data.load()
        for mutant, code in data.exit_code_by_key.items():
            status = status_by_exit_code[code]
            killed = status in ("killed", "timeout", "caught by type check")
            rows.append((str(path), mutant, "killed" if killed else status,
                         "" if killed else get_diff_for_mutant(mutant, path=path)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--write-unexplained", type=Path, metavar="FILE",
                        help="write the list lines of unexplained survivors here")
    args = parser.parse_args()
    explained = load_explained(EXPLAINED)

    with tempfile.TemporaryDirectory(prefix="gsm8k-mutation-") as tmp:
        work = Path(tmp) / "checkout"
        shutil.copytree(ROOT, work, ignore=SKIP)
        run_mutmut(work, args.max_children)
        rows = collect(work)
        os.chdir(ROOT)
    return report(rows, explained, args.write_unexplained)


def report(rows: list[tuple[str, str, str, str]], explained: dict[tuple[str, str], str],
           write_unexplained: Path | None) -> int:
    """Print the score per module and the survivors; 1 when the score is under the target."""
    per_module = collections.defaultdict(collections.Counter)
    unexplained, used = [], set()
    for module, mutant, status, diff in rows:
        counts = per_module[module]
        counts["total"] += 1
        if status == "killed":
            counts["killed"] += 1
            continue
        key = (function_of(mutant), mutated_line(diff))
        if key in explained:
            counts["equivalent"] += 1
            used.add(key)
        else:
            counts["survived"] += 1
            unexplained.append((mutant, status, key, diff))

    print(f"\n{'module':<36} {'mutants':>7} {'killed':>7} {'equiv.':>7} {'survived':>8} {'score':>7}")
    total = collections.Counter()
    for module, counts in sorted(per_module.items()):
        total.update(counts)
        scored = counts["total"] - counts["equivalent"]
        print(f"{module:<36} {counts['total']:>7} {counts['killed']:>7} {counts['equivalent']:>7} "
              f"{counts['survived']:>8} {counts['killed'] / scored if scored else 1:>7.1%}")
    scored = total["total"] - total["equivalent"]
    score = total["killed"] / scored if scored else 1.0
    print(f"{'all':<36} {total['total']:>7} {total['killed']:>7} {total['equivalent']:>7} "
          f"{total['survived']:>8} {score:>7.1%}")

    if unexplained:
        print(f"\n{len(unexplained)} surviving mutants neither killed nor explained in "
              f"{EXPLAINED.relative_to(ROOT)}:")
        for mutant, status, _, diff in unexplained:
            print(f"\n# {mutant} ({status})\n{diff}")
    stale = sorted(set(explained) - used)
    if stale:
        print(f"\n{len(stale)} entries of {EXPLAINED.relative_to(ROOT)} match no surviving mutant (killed now, "
              "or the code changed): remove them")
        for function, line in stale:
            print(f"  - `{function}`: `{line}`")
    if write_unexplained:
        lines = sorted({f"- `{function}`: `{line}` — REASON" for _, _, (function, line), _ in unexplained})
        write_unexplained.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        print(f"\nwrote {len(lines)} lines to {write_unexplained}")

    verdict = "PASS" if score >= TARGET else "FAIL"
    print(f"\nmutation score {score:.1%} (killed {total['killed']} of {scored}; {total['equivalent']} equivalent "
          f"left out, {total['survived']} survived), target {TARGET:.0%}: {verdict}")
    return 0 if score >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
