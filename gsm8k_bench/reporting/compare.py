"""`nox -s compare -- A B`: two result sets (session JSONs or results folders), B judged against A.

Per session present in both (per concurrency level both ran, when a session ran several): over the
questions both answered, with the same protocol, the accuracy of each, the paired difference with its
one-sided bounds (gsm8k_bench.verdicts.paired_stats, Newcombe), McNemar's exact p, lost and gained counts and a verdict;
then the flipped questions with both responses side by side.
Writes compare.md and compare.html (default: beside B) and exits 1 when any session regressed, so it
can gate a CI step (e.g. artifacts before and after an image bump).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.reporting import html_page, report
from gsm8k_bench.verdicts import gate, levels, run_comparison

MAX_MARKDOWN_FLIPS = 50  # per session; the HTML page has all of them
MAX_MARKDOWN_CHANGED = 10


@dataclass(frozen=True)
class SessionComparison:
    session: str
    reference: Mapping[str, Any] | None
    run: Mapping[str, Any] | None
    result: run_comparison.Comparison


def load_side(path: Path, warn: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """A session JSON or a results folder -> session name -> its document."""
    if path.is_file():
        try:
            document = results.read(path)
        except (ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BenchError(f"{path}: not a gsm8k-bench session JSON ({exc})") from None
        return {document["session"]: document}
    if not path.exists():
        raise BenchError(f"{path}: no such file or results folder")
    return {d["session"]: d for d in report.load_results(path, warn)}


def compare_sets(reference: Mapping[str, dict[str, Any]], run: Mapping[str, dict[str, Any]],
                 settings: gate.GateSettings) -> list[SessionComparison]:
    out = []
    for session in sorted(reference.keys() | run.keys()):
        a, b = reference.get(session), run.get(session)
        if a is None or b is None:
            side = "the reference (A)" if a is None else "the run (B)"
            result: run_comparison.Comparison = {"verdict": run_comparison.NOT_COMPARED,
                                              "reason": f"missing from {side}", "metrics": {}, "flips": [],
                                              "changed": []}
            out.append(SessionComparison(session, a, b, result))
            continue
        at_a, at_b = levels.views(a), levels.views(b)
        common = [c for c in at_a if c in at_b]
        if not common:  # still paired, at the levels each ran
            label = f"{session} (concurrency {', '.join(map(str, at_a))} vs {', '.join(map(str, at_b))})"
            out.append(SessionComparison(label, a, b, run_comparison.compare_documents(a, b, settings)))
        for level in common:
            label = session if len(at_a) == len(at_b) == 1 else f"{session} @ concurrency {level}"
            out.append(SessionComparison(label, at_a[level], at_b[level],
                                         run_comparison.compare_documents(at_a[level], at_b[level], settings)))
    return out


def regressed(compared: list[SessionComparison]) -> list[str]:
    return [c.session for c in compared if c.result["verdict"] == run_comparison.REGRESSION]


# --------------------------------------------------------------------------- Markdown


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def _metric_cells(numbers: run_comparison.MetricNumbers | None) -> list[str]:
    if not numbers:
        return ["–"] * 4
    return [f"{numbers['reference']:.4f} → {numbers['run']:.4f}",
            f"{numbers['difference']:+.4f} [{numbers['lower']:+.4f}, {numbers['upper']:+.4f}]",
            f"{numbers['mcnemar_p']:.3g}", f"{numbers['lost']} / {numbers['gained']}"]


def summary_rows(compared: list[SessionComparison]) -> tuple[list[str], list[list[str]]]:
    head = ["session", "n"]
    for metric in run_comparison.METRICS:
        label = metric.replace("_", "-")
        head += [f"{label} A → B", f"{label} B − A [bounds]", "one-sided McNemar p", "lost / gained"]
    head.append("verdict")
    rows = []
    for c in compared:
        metrics = c.result["metrics"]
        cells = [c.session, str(next(iter(metrics.values()))["n"]) if metrics else "–"]
        for metric in run_comparison.METRICS:
            cells += _metric_cells(metrics.get(metric))
        rows.append([*cells, c.result["verdict"]])
    return head, rows


def summary_table(compared: list[SessionComparison]) -> list[str]:
    head, rows = summary_rows(compared)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for session, *cells, verdict in rows:
        verdict = f"**{verdict}**" if verdict == run_comparison.REGRESSION else verdict
        lines.append("| " + " | ".join([f"`{session}`", *cells, verdict]) + " |")
    return lines


def _answers(side: Mapping[str, Any]) -> str:
    return f"{side.get('strict_answer')} / {side.get('flexible_answer')}"


def _flip_markdown(flip: Mapping[str, Any]) -> list[str]:
    moves = ", ".join(f"{m.replace('_', '-')} {move}" for m, move in flip["moves"].items()) or "answer changed"
    return [f"**doc {flip['doc_id']}** ({moves}); target {_cell(flip.get('target'))}", "",
            f"> {_cell(flip['question'])}", "",
            "| | A | B |", "|---|---|---|",
            f"| answers (strict / flexible) | {_cell(_answers(flip['reference']))} | {_cell(_answers(flip['run']))} |",
            f"| response | {_cell(flip['reference']['response'])} | {_cell(flip['run']['response'])} |", ""]


def markdown(compared: list[SessionComparison], a_label: str, b_label: str, settings: gate.GateSettings) -> str:
    lines = [f"## GSM8k: B ({b_label}) against A ({a_label})", "",
             f"Paired over the questions both answered; bounds one-sided at {settings.confidence:.0%}; "
             f"a regression when the upper bound of B − A lies below −{settings.tolerance}.", "",
             *summary_table(compared), ""]
    skipped = [c for c in compared if c.result["verdict"] == run_comparison.NOT_COMPARED]
    if skipped:
        lines += ["### Not compared", ""] + [f"- `{c.session}`: {c.result['reason']}" for c in skipped] + [""]
    noted = [c for c in compared if c.result["verdict"] != run_comparison.NOT_COMPARED and c.result["reason"]]
    if noted:
        lines += ["### Compared, with a note", ""] + [f"- `{c.session}`: {c.result['reason']}" for c in noted] + [""]
    for c in compared:
        flips, changed = c.result["flips"], c.result["changed"]
        if not flips and not changed:
            continue
        lines += [f"### `{c.session}`: {len(flips)} flipped, {len(changed)} answers changed with the same "
                  "outcome", ""]
        for flip in flips[:MAX_MARKDOWN_FLIPS] + changed[:MAX_MARKDOWN_CHANGED]:
            lines += _flip_markdown(flip)
        if len(flips) > MAX_MARKDOWN_FLIPS or len(changed) > MAX_MARKDOWN_CHANGED:
            lines += ["(more in compare.html)", ""]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML


def _flip_html(flip: Mapping[str, Any], kind: str) -> str:
    esc = html.escape
    moves = ", ".join(f"{m.replace('_', '-')} {move}" for m, move in flip["moves"].items()) or "answer changed"
    sides = "".join(
        f"<div class='side'><h5>{label}: {esc(_answers(flip[key]))}</h5><pre>{esc(flip[key]['response'] or '')}</pre>"
        "</div>" for label, key in (("A", "reference"), ("B", "run")))
    return (f"<div class='flip {kind}'><h4>doc {flip['doc_id']}: {esc(moves)}; target {esc(str(flip.get('target')))}"
            f"</h4><p class='q'>{esc(flip['question'])}</p><div class='pair'>{sides}</div></div>")


def compare_page(compared: list[SessionComparison], a_label: str, b_label: str, settings: gate.GateSettings) -> str:

    body = [f"<h1>GSM8k: B ({html.escape(b_label)}) against A ({html.escape(a_label)})</h1>",
            f"<p>Paired over the questions both answered; bounds one-sided at {settings.confidence:.0%}; a "
            f"regression when the upper bound of B − A lies below −{settings.tolerance}.</p>",
            html_page.table(*summary_rows(compared),
                              ["bad" if c.result["verdict"] == run_comparison.REGRESSION else "" for c in compared])]
    skipped = [c for c in compared if c.result["verdict"] == run_comparison.NOT_COMPARED]
    if skipped:
        body.append("<h2>Not compared</h2><ul>" + "".join(
            f"<li><code>{html.escape(c.session)}</code>: {html.escape(c.result['reason'])}</li>" for c in skipped)
            + "</ul>")
    for c in compared:
        if c.result["flips"] or c.result["changed"]:
            body.append(f"<h2><code>{html.escape(c.session)}</code>: {len(c.result['flips'])} flipped, "
                        f"{len(c.result['changed'])} answers changed with the same outcome</h2>")
            body += [_flip_html(f, "flipped") for f in c.result["flips"]]
            body += [_flip_html(f, "changed") for f in c.result["changed"]]
    return html_page.page("GSM8k comparison", "\n".join(body))


# --------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nox -s compare --", description=__doc__.split("\n\n")[0])
    p.add_argument("reference", type=Path, help="A: a session JSON or a results folder (before)")
    p.add_argument("run", type=Path, help="B: a session JSON or a results folder (after)")
    p.add_argument("--out", type=Path, help="where compare.md and compare.html go (default: B's folder)")
    p.add_argument("--baselines", type=Path,
                   help="confidence and tolerance from its gate: block (default: the checkout's baselines.yaml)")
    return p


def main(argv: list[str], out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # usage error (argparse printed it) or --help
        return 2 if exc.code else 0

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    try:
        settings = run_comparison.gate_settings(args.baselines)
        reference, run = load_side(args.reference, warn), load_side(args.run, warn)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    compared = compare_sets(reference, run, settings)
    a_label, b_label = str(args.reference), str(args.run)
    out_dir = args.out or (args.run if args.run.is_dir() else args.run.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(compared, a_label, b_label, settings)
    (out_dir / "compare.md").write_text(text, encoding="utf-8")
    (out_dir / "compare.html").write_text(compare_page(compared, a_label, b_label, settings), encoding="utf-8")
    print(text, file=out)
    bad = regressed(compared)
    print(f"markdown: {out_dir / 'compare.md'}\nhtml: {out_dir / 'compare.html'}", file=out)
    if bad:
        print(f"regressed: {', '.join(bad)}", file=out)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
