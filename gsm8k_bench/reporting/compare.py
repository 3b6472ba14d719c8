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

from gsm8k_bench.core import paths, results
from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.core.markdown import escaped
from gsm8k_bench.reporting import html_page, report
from gsm8k_bench.verdicts import gate, levels, paired_stats, run_comparison

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
        return {paths.check_session_name(document["session"]): document}
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
        lines.append("| " + " | ".join([f"`{session}`", *map(escaped, cells), verdict]) + " |")
    return lines


def _answers(side: Mapping[str, Any]) -> str:
    return f"{side.get('strict_answer')} / {side.get('flexible_answer')}"


def _flip_markdown(flip: Mapping[str, Any]) -> list[str]:
    moves = ", ".join(f"{m.replace('_', '-')} {move}" for m, move in flip["moves"].items()) or "answer changed"
    return [f"**doc {flip['doc_id']}** ({moves}); target {escaped(flip.get('target'))}", "",
            f"> {escaped(flip['question'])}", "",
            "| | A | B |", "|---|---|---|",
            f"| answers (strict / flexible) | {escaped(_answers(flip['reference']))} | "
            f"{escaped(_answers(flip['run']))} |",
            f"| response | {escaped(flip['reference']['response'])} | {escaped(flip['run']['response'])} |", ""]


def markdown(compared: list[SessionComparison], a_label: str, b_label: str, settings: gate.GateSettings) -> str:
    lines = [f"## GSM8k: B ({escaped(b_label)}) against A ({escaped(a_label)})", "",
             f"Paired over the questions both answered; bounds one-sided at {settings.confidence:.0%}; "
             f"a regression when the upper bound of B − A lies below −{settings.tolerance}.", "",
             *summary_table(compared), ""]
    skipped = [c for c in compared if c.result["verdict"] == run_comparison.NOT_COMPARED]
    if skipped:
        lines += ["### Not compared", ""] + [f"- `{c.session}`: {escaped(c.result['reason'])}" for c in skipped] + [""]
    noted = [c for c in compared if c.result["verdict"] != run_comparison.NOT_COMPARED and c.result["reason"]]
    if noted:
        lines += ["### Compared, with a note", ""] + [f"- `{c.session}`: {escaped(c.result['reason'])}"
                                                       for c in noted] + [""]
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


# The page holds every question's texts once and each session's changed answers in an inert JSON block,
# drawn in pages of html_page.QUESTION_PAGE when the session is opened (as report.html does); and at most
# MAX_PAGE_DATA_BYTES of answers, shared evenly between sessions, flips first: 200 sessions x 1,319 changed
# answers made a 324 MB page a browser could not draw.  A session compared alone has the whole budget.
MAX_PAGE_DATA_BYTES = 24 * 1024 * 1024
MAX_PAGE_MB = 32  # the answers, the summary table and the script

SCRIPT = r"""
const PAGE = %(page)d;
const QUESTIONS = JSON.parse(document.getElementById('data-questions').textContent);
function el(tag, cls, text) {
  const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text;
  return e;
}
function drawMore(section) {
  const rows = section.rows || (section.rows = JSON.parse(document.getElementById(section.dataset.block).textContent));
  const list = section.querySelector('.flips'), shown = list.childElementCount;
  for (const [qid, kind, moves, aAnswers, aResponse, bAnswers, bResponse] of rows.slice(shown, shown + PAGE)) {
    const [docId, question, target] = QUESTIONS[qid];
    const flip = el('div', 'flip ' + kind);
    flip.appendChild(el('h4', '', 'doc ' + docId + ': ' + moves + '; target ' + target));
    flip.appendChild(el('p', 'q', question));
    const pair = el('div', 'pair');
    for (const [label, answers, response] of [['A', aAnswers, aResponse], ['B', bAnswers, bResponse]]) {
      const side = el('div', 'side');
      side.appendChild(el('h5', '', label + ': ' + answers)); side.appendChild(el('pre', '', response));
      pair.appendChild(side);
    }
    flip.appendChild(pair); list.appendChild(flip);
  }
  section.querySelector('.more').hidden = list.childElementCount >= rows.length;
}
for (const section of document.querySelectorAll('details.session')) {
  section.addEventListener('toggle', () => { if (section.open && !section.rows) drawMore(section); });
  section.querySelector('.more').addEventListener('click', () => drawMore(section));
}
"""

# One changed answer in the page's data: [question id, kind, moves, A's answers, A's response, B's answers,
# B's response].
Row = list[str]


def _row(flip: Mapping[str, Any], kind: str) -> Row:
    moves = ", ".join(f"{m.replace('_', '-')} {move}" for m, move in flip["moves"].items()) or "answer changed"
    return [paired_stats.question_id(flip["doc_id"], flip["question"]), kind, moves,
            _answers(flip["reference"]), str(flip["reference"].get("response") or ""),
            _answers(flip["run"]), str(flip["run"].get("response") or "")]


def _question(flip: Mapping[str, Any]) -> list[Any]:
    return [flip["doc_id"], flip["question"], str(flip.get("target"))]


def _row_bytes(row: Row, flip: Mapping[str, Any]) -> int:
    """The row's size in the page with its question's (counted per row: a bound, not an estimate), `<` as
    the page's JSON blocks write it (\\u003c)."""
    text = json.dumps([row, _question(flip)], ensure_ascii=False)
    return len(text.encode()) + 5 * text.count("<")


def page_rows(compared: list[SessionComparison]) -> list[tuple[list[Row], int]]:
    """Per session, the rows the page holds (flips first) and how many were left out.  Sessions take a row
    each in turn while the budget lasts, so each gets an even share and one that needs less leaves the
    rest to the others; only the rows kept are built (all of them could be hundreds of MB)."""
    answers = [c.result["flips"] + c.result["changed"] for c in compared]
    kept: list[list[Row]] = [[] for _ in compared]
    left, waiting = MAX_PAGE_DATA_BYTES, [i for i, session in enumerate(answers) if session]
    while waiting:
        still = []
        for i in waiting:
            flip = answers[i][len(kept[i])]
            row = _row(flip, "flipped" if len(kept[i]) < len(compared[i].result["flips"]) else "changed")
            size = _row_bytes(row, flip)
            if size > left:
                continue  # this session's share is used up
            left -= size
            kept[i].append(row)
            if len(kept[i]) < len(answers[i]):
                still.append(i)
        waiting = still
    return [(rows, len(session) - len(rows)) for rows, session in zip(kept, answers, strict=True)]


def compare_page(compared: list[SessionComparison], a_label: str, b_label: str, settings: gate.GateSettings) -> str:
    esc = html.escape
    body = [f"<h1>GSM8k: B ({esc(b_label)}) against A ({esc(a_label)})</h1>",
            f"<p>Paired over the questions both answered; bounds one-sided at {settings.confidence:.0%}; a "
            f"regression when the upper bound of B − A lies below −{settings.tolerance}.</p>",
            html_page.table(*summary_rows(compared),
                            ["bad" if c.result["verdict"] == run_comparison.REGRESSION else "" for c in compared])]
    skipped = [c for c in compared if c.result["verdict"] == run_comparison.NOT_COMPARED]
    if skipped:
        body.append("<h2>Not compared</h2><ul>" + "".join(
            f"<li><code>{esc(c.session)}</code>: {esc(c.result['reason'])}</li>" for c in skipped) + "</ul>")
    questions: dict[str, list[Any]] = {}
    blocks = []
    for index, (c, (rows, left_out)) in enumerate(zip(compared, page_rows(compared), strict=True)):
        for row, flip in zip(rows, c.result["flips"] + c.result["changed"], strict=False):
            questions.setdefault(row[0], _question(flip))
        if not rows and not left_out:
            continue
        note = (f"; {left_out} not shown (this page keeps under {MAX_PAGE_MB} MB): compare this session's two "
                "JSONs alone to see more" if left_out else "")
        body.append(f"<details class='session' data-block='data-c-{index}'><summary><code>{esc(c.session)}</code>: "
                    f"{len(c.result['flips'])} flipped, {len(c.result['changed'])} answers changed with the same "
                    f"outcome{esc(note)}</summary><div class='flips'></div>"
                    "<button class='more' hidden>show more</button></details>")
        blocks.append(html_page.json_block(f"data-c-{index}", rows))
    body += [html_page.json_block("data-questions", questions), *blocks]
    return html_page.page("GSM8k comparison", "\n".join(body), SCRIPT % {"page": html_page.QUESTION_PAGE})


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
    try:
        results.output_folder(out_dir, "--out")
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
