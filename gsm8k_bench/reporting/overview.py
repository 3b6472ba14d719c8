"""The matrix at a glance: each session's outcome (passed, regressed, errored, not gated, or not run: in
matrix.yaml -- or, for a workflow dispatch, among the sessions it dispatched -- but absent from the results),
the counts, the regressions and errors with their reason, and a grid per model (rows precision x tp, columns
runner x framework) whose cells hold the accuracy and the paired difference against the session's reference,
or against its fp16 sibling where it has none.

report.html draws it (html_page.py) and report.md and the step summary lead with its Markdown form.  A
verdict this module does not know (a newer gate's) is its own outcome, shown under its own name.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gsm8k_bench.core.markdown import escaped
from gsm8k_bench.matrix.names import ComboKey
from gsm8k_bench.matrix.types import Matrix
from gsm8k_bench.verdicts import gate, run_comparison

PASSED, REGRESSED, ERRORED, NOT_GATED, NOT_RUN = "passed", "regressed", "errored", "not_gated", "not_run"
HEADLINE = (PASSED, REGRESSED, ERRORED, NOT_GATED, NOT_RUN)
LABELS = {PASSED: "passed", REGRESSED: "regressed", ERRORED: "errored", NOT_GATED: "not gated", NOT_RUN: "not run"}
SYMBOLS = {PASSED: "✅", REGRESSED: "❌", ERRORED: "💥", NOT_GATED: "⚪", NOT_RUN: "·"}
UNKNOWN_SYMBOL = "❔"
KNOWN_VERDICTS = (None, "pass", "regression", "not_gated")
METRIC = "strict_match"  # the grid's number; the hover and the drill-down have both
MAX_SUMMARY_ATTENTION = 50  # regressions and errors listed in the step summary (all in report.md)
BRIEF_REASON = 300  # characters of a reason in the step summary and the page's list (all in report.md)


def outcome(document: Mapping[str, Any]) -> str:
    """The session's outcome: one of HEADLINE (but NOT_RUN), or the gate's verdict as written when this
    report does not know it."""
    verdict = (document.get("gate") or {}).get("verdict")
    if verdict == "regression":
        return REGRESSED
    if verdict not in KNOWN_VERDICTS:
        return str(verdict)
    if document.get("status") != "passed":
        return ERRORED
    return PASSED if verdict == "pass" else NOT_GATED


def label(name: str) -> str:
    return LABELS.get(name, name)


def symbol(name: str) -> str:
    return SYMBOLS.get(name, UNKNOWN_SYMBOL)


def css_class(name: str) -> str:
    """`v-<outcome>`; an unknown verdict gets `v-other v-verdict-<its name>` (never a known one's class)."""
    if name in LABELS:
        return "v-" + name.replace("_", "-")
    return "v-other v-verdict-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unnamed")


def brief(text: str) -> str:
    return text if len(text) <= BRIEF_REASON else text[:BRIEF_REASON - 1].rstrip() + "…"


def reason(document: Mapping[str, Any]) -> str:
    """Why the session is not simply passed, in one line."""
    verdict = document.get("gate") or {}
    if verdict.get("verdict") == "regression" and verdict.get("checks"):
        return gate.describe_regression(verdict)
    message = (document.get("error") or {}).get("message") or verdict.get("reason") or ""
    return f"{document.get('status')}: {message}" if message else str(document.get("status"))


@dataclass(frozen=True)
class Difference:
    """A paired difference (run - other) of METRIC and its one-sided bound(s), against `against`."""

    against: str
    difference: float
    lower: float | None
    upper: float

    def text(self) -> str:
        bounds = (f"[{self.lower:+.4f}, {self.upper:+.4f}]" if self.lower is not None
                  else f"upper bound {self.upper:+.4f}")
        return f"{self.difference:+.4f} {bounds} vs {self.against}"


def difference(document: Mapping[str, Any], fp16_deltas: Mapping[str, Mapping[str, Any]]) -> Difference | None:
    """Against the session's reference (the gate's paired check), else against its fp16 sibling."""
    verdict = document.get("gate") or {}
    for check in verdict.get("checks") or []:
        if check.get("metric") == METRIC and "difference" in check:
            return Difference(f"reference {(verdict.get('reference') or {}).get('path', '')}".rstrip(),
                              check["difference"], check.get("lower_bound"), check["upper_bound"])
    delta = fp16_deltas.get(document["session"])
    numbers = (delta or {}).get("metrics", {}).get(METRIC)
    if delta is None or numbers is None:
        return None
    return Difference(f"fp16 sibling {delta['reference']}", numbers["difference"], numbers["lower"], numbers["upper"])


@dataclass(frozen=True)
class Cell:
    session: str
    outcome: str
    accuracy: float | None = None
    n: int | None = None
    difference: Difference | None = None
    reason: str = ""

    def hover(self) -> str:
        """The cell's title: the session, its outcome and number, the paired difference, the reason."""
        lines = [self.session, label(self.outcome)
                 + (f" · strict-match {self.accuracy:.4f} (n={self.n})" if self.accuracy is not None else "")]
        if self.difference is not None:
            lines.append(f"Δ {self.difference.text()}")
        elif self.accuracy is not None:
            lines.append("Δ: no reference and no fp16 sibling to pair with")
        if self.reason:
            lines.append(self.reason)
        return "\n".join(lines)


@dataclass
class Grid:
    """One model: cells[(precision, tp)][(runner, framework)]; a key absent from cells is no combination."""

    model: str
    rows: list[tuple[str, int]] = field(default_factory=list)
    columns: list[tuple[str, str]] = field(default_factory=list)
    cells: dict[tuple[tuple[str, int], tuple[str, str]], Cell] = field(default_factory=dict)


@dataclass
class Overview:
    counts: Counter[str]
    attention: list[Cell]  # regressions, errors, then unknown verdicts; each with its reason
    grids: list[Grid]
    unplaced: list[Cell]  # results without a config and not in the matrix: no grid position
    expected: int | None  # sessions that should have a result (None: no matrix given, so no "not run")
    expected_from: str  # where those are listed: "in matrix.yaml" or "dispatched"
    by_session: dict[str, Cell]  # every result's and every not-run session's cell

    def headline(self) -> list[tuple[str, int]]:
        """(outcome, count): the five headline outcomes, then any unknown verdict seen."""
        extra = sorted(k for k in self.counts if k not in HEADLINE)
        return [(k, self.counts[k]) for k in (*HEADLINE, *extra) if k != NOT_RUN or self.expected is not None]


def _key(document: Mapping[str, Any], by_name: Mapping[str, ComboKey]) -> ComboKey | None:
    config = document.get("config") or {}
    try:
        return ComboKey(*(config[k] for k in ComboKey._fields))
    except KeyError:
        return by_name.get(document["session"])  # a stub: no config, but matrix.yaml knows the name


def _order(pairs: set[tuple[Any, Any]], first: Sequence[str]) -> list[tuple[Any, Any]]:
    """Pairs sorted by their first part in matrix.yaml's order (unknown ones after), then the second."""
    rank = {v: i for i, v in enumerate(first)}
    return sorted(pairs, key=lambda p: (rank.get(p[0], len(rank)), str(p[0]), rank.get(p[1], len(rank)), p[1]))


def build(documents: Sequence[Mapping[str, Any]], deltas: Sequence[Mapping[str, Any]],
          matrix: Matrix | None, dispatched: Collection[str] | None = None) -> Overview:
    """`dispatched` (the sessions a workflow dispatch selected) narrows "not run" to those: a partial
    dispatch's report does not count the matrix sessions it never asked for."""
    fp16_deltas = {d["run"]: d for d in deltas
                   if d["axis"] == "precision" and d["verdict"] != run_comparison.NOT_COMPARED}
    by_name = {c.name: c.key for c in matrix.combinations} if matrix else {}
    placed: dict[ComboKey, Cell] = {}
    unplaced: list[Cell] = []
    for doc in documents:
        metrics, kind = doc.get("metrics") or {}, outcome(doc)
        cell = Cell(doc["session"], kind, metrics.get(METRIC), metrics.get("n"), difference(doc, fp16_deltas),
                    "" if kind == PASSED else reason(doc))
        key = _key(doc, by_name)
        if key is None:
            unplaced.append(cell)
        else:
            placed[key] = cell
    expected_from = "in matrix.yaml" if dispatched is None else "dispatched"
    expected = by_name if dispatched is None else {name: by_name.get(name) for name in dispatched}
    reported = {doc["session"] for doc in documents}
    for name, expected_key in expected.items():
        missing = Cell(name, NOT_RUN, reason=f"{expected_from}, no result")
        if expected_key is not None:
            placed.setdefault(expected_key, missing)
        elif name not in reported:  # an ad-hoc session the dispatch ran outside matrix.yaml
            unplaced.append(missing)
    counts = Counter(c.outcome for c in (*placed.values(), *unplaced))
    cells = sorted((*placed.values(), *unplaced), key=lambda c: c.session)
    rank = {REGRESSED: 0, ERRORED: 1}
    attention = sorted((c for c in cells if c.outcome not in (PASSED, NOT_GATED, NOT_RUN)),
                       key=lambda c: (rank.get(c.outcome, 2), c.session))
    grids = []
    for model in sorted({k.model for k in placed}):
        keys = [k for k in placed if k.model == model]
        grid = Grid(model)
        grid.rows = _order({(k.precision, k.tp) for k in keys}, list(matrix.precisions) if matrix else [])
        grid.columns = _order({(k.runner, k.framework) for k in keys},
                              [*matrix.runners, *matrix.frameworks] if matrix else [])
        grid.cells = {((k.precision, k.tp), (k.runner, k.framework)): placed[k] for k in keys}
        grids.append(grid)
    return Overview(counts, attention, grids, unplaced, len(expected) if matrix or dispatched is not None else None,
                    expected_from, {c.session: c for c in cells})


def counts_line(view: Overview) -> str:
    total = f" (of {view.expected} {view.expected_from})" if view.expected is not None else ""
    return " · ".join(f"{symbol(k)} **{n}** {escaped(label(k))}" for k, n in view.headline()) + total


def _md_cell(cell: Cell | None) -> str:
    if cell is None:
        return ""
    if cell.outcome == NOT_RUN:
        return SYMBOLS[NOT_RUN]
    number = f" {cell.accuracy:.3f}" if cell.accuracy is not None else ""
    delta = f" ({cell.difference.difference * 100:+.1f})" if cell.difference is not None else ""
    unknown = f" {escaped(cell.outcome)}" if cell.outcome not in LABELS else ""
    return f"{symbol(cell.outcome)}{unknown}{number}{delta}"


def markdown(view: Overview, max_attention: int | None = None) -> str:
    """The counts, the regressions and errors with their reason, and a table per model; with
    `max_attention` (the step summary) at most that many regressions and errors, their reasons brief."""
    lines = ["## GSM8k matrix overview", "", counts_line(view), ""]
    if view.attention:
        lines += ["### Regressions and errors", ""]
        shown = view.attention[:max_attention] if max_attention else view.attention
        lines += [f"- {symbol(c.outcome)} `{c.session}`: {escaped(brief(c.reason) if max_attention else c.reason)}"
                  for c in shown]
        if len(shown) < len(view.attention):
            lines.append(f"- … {len(view.attention) - len(shown)} more in report.md")
        lines.append("")
    legend = " ".join(f"{symbol(k)} {label(k)}" for k in HEADLINE)
    lines += [f"Cells: strict-match accuracy and, in brackets, the paired difference in points against the "
              f"session's reference (else its fp16 sibling). {legend}; blank: no such combination"
              + (", or not dispatched." if view.expected_from == "dispatched" else "."), ""]
    for grid in view.grids:
        lines += [f"### {escaped(grid.model)}", "",
                  "| precision tp | " + " | ".join(f"{r} {f}" for r, f in grid.columns) + " |",
                  "|---" * (len(grid.columns) + 1) + "|"]
        for row in grid.rows:
            cells = [_md_cell(grid.cells.get((row, column))) for column in grid.columns]
            lines.append(f"| {row[0]} tp{row[1]} | " + " | ".join(cells) + " |")
        lines.append("")
    if view.unplaced:
        lines += ["Not in a grid (no config, not in matrix.yaml): "
                  + ", ".join(f"{symbol(c.outcome)} `{c.session}`" for c in view.unplaced), ""]
    return "\n".join(lines) + "\n"
