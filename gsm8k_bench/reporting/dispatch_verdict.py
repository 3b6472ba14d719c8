"""The summary job's verdict over one workflow dispatch: what the benchmark jobs' exit codes say, in one line.

    python -m gsm8k_bench.reporting.dispatch_verdict RESULTS_DIR --dispatched N

A benchmark job exits non-zero exactly when its session did not pass (status `failed`, which a regression
is, or `error`) or when it was killed before writing its JSON.  This verdict fails on the same sessions: it
counts the regressions and the other failures, names each with its error (a regression's says the level it
was judged at) and says how many dispatched sessions left no JSON; it appends itself to
$GITHUB_STEP_SUMMARY when set and exits 1 unless every dispatched session passed.  Each paired verdict was
reached at (1 - confidence) / N, N the dispatch's size, so a dispatch of healthy sessions fails here at most
1 - confidence of the time; a session judged as another family size is named.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.reporting.report import load_results


def failed(document: Mapping[str, Any]) -> bool:
    """What makes a benchmark job exit non-zero (gsm8k_bench/session/run.py raises SessionFailed)."""
    return bool(document["status"] != "passed")


def verdict_markdown(documents: Sequence[Mapping[str, Any]], dispatched: int) -> tuple[bool, str]:
    """(passed, the Markdown) for the newest document of each session of a dispatch of `dispatched`."""
    regressed = [d for d in documents if (d.get("gate") or {}).get("verdict") == "regression"]
    other = [d for d in documents if failed(d) and d not in regressed]
    missing = max(0, dispatched - len(documents))
    other_family = [d["session"] for d in documents if (d.get("gate") or {}).get("family") not in (None, dispatched)]
    passed = not regressed and not other and not missing
    lines = ["## Dispatch verdict", ""]
    if passed:
        lines.append(f"**passed**: all {dispatched} dispatched sessions passed.")
    else:
        parts = [f"{len(regressed)} regressed"] if regressed else []
        parts += [f"{len(other)} failed otherwise"] if other else []
        parts += [f"{missing} wrote no result (killed or never started)"] if missing else []
        lines.append(f"**failed**: of {dispatched} dispatched sessions, {', '.join(parts)}.")
        lines += ["", *(f"- `{d['session']}`: {d['status']}: {(d.get('error') or {}).get('message', '')}"
                        for d in [*regressed, *other])]
    lines += ["", f"Paired verdicts are reached at (1 - confidence) / {dispatched} each: a dispatch of healthy "
              "sessions reports any regression at most 1 - confidence of the time."]
    if other_family:
        lines.append(f"Judged as another family size than this dispatch's {dispatched}: "
                     + ", ".join(f"`{s}`" for s in other_family) + ".")
    return passed, "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m gsm8k_bench.reporting.dispatch_verdict",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--dispatched", type=int, required=True, help="sessions the plan job dispatched")
    args = parser.parse_args(argv)
    try:
        documents = load_results(args.results_dir, lambda message: print(f"warning: {message}", file=sys.stderr))
    except BenchError as exc:  # no JSON at all: every dispatched session left none
        print(f"warning: {exc}", file=sys.stderr)
        documents = []
    passed, text = verdict_markdown(documents, args.dispatched)
    print(text, end="")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
