"""report.html: one self-contained page (inline CSS, JS, data and PNGs; nothing fetched), so it works as
a downloaded CI artifact.  The matrix overview first (overview.py: counts that filter, regressions and
errors, a grid per model), as plain HTML drawn before any data is parsed; then the results table with
filters and sorting, the plots, the sibling deltas, and a drill-down from a session to its questions with
flips against a sibling or another concurrency level.

Per-question data is the bulk (a full matrix: 106 sessions x 1,319 questions, ~100 MB of JSON): question
texts are stored once, each session's answers sit in their own inert JSON block that is parsed only when
that session is opened, the question list renders in pages of QUESTION_PAGE rows, and answers beyond
QUESTION_BUDGET_BYTES stay in the session JSONs (the page names them and the command that embeds them).
"""

from __future__ import annotations

import base64
import fnmatch
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gsm8k_bench.reporting import overview
from gsm8k_bench.verdicts import paired_stats, run_comparison, siblings

FILTERS = ("model", "runner", "framework", "precision", "verdict")

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;text-align:left}tr.session-row:hover{background:#eef5ff;cursor:pointer}
tr.selected{background:#dde9ff}.bad{color:#b00020;font-weight:bold}.flag{background:#fff1f0}
pre{white-space:pre-wrap;margin:0;max-width:60em;font-size:12px}img{max-width:100%}
tr.flip{background:#fff4d6}.ok{color:#1a7f37}.no{color:#b00020}.other{border-top:1px dashed #aaa;margin-top:4px}
.flipped{border:1px solid #f0c36d;padding:6px;margin:8px 0}.changed{border:1px solid #ccc;padding:6px;margin:8px 0}
.pair{display:flex;gap:1em}.side{flex:1}label{margin-right:1em}
#questions td:nth-child(2){width:22%}#questions td:nth-child(3){width:14%}#questions td.resp{width:44%}
#counts button{font:inherit;border:1px solid #bbb;border-radius:4px;padding:4px 10px;margin:0 6px 6px 0;cursor:pointer}
#counts button b{font-size:1.4em;margin-right:4px}#counts button.active{outline:3px solid #0b57d0}
.v-passed{background:#d8f2dd}.v-regressed{background:#f8c4c4}.v-errored{background:#e2c8ef}
.v-not-gated{background:#f1ecd2}.v-not-run{background:#fff;border:1px dashed #999!important}.v-other{background:#cfe1f7}
#attention{max-height:16em;overflow:auto;margin:0 0 1em}#attention li{margin:2px 0;padding:1px 4px}
table.grid{margin:.3em 1.5em .8em 0}table.grid th{cursor:default;font-weight:normal;font-size:12px;white-space:nowrap}
table.grid td{min-width:4.2em;height:2.4em;text-align:center;vertical-align:middle;padding:1px 4px}
table.grid td.cell{cursor:pointer}table.grid td.cell:hover{outline:2px solid #0b57d0}
table.grid td small{display:block;font-size:11px;color:#444}table.grid td.none{background:#eee;border-color:#e4e4e4}
#overview.filtered td.cell:not(.match){opacity:.15}.legend span{padding:1px 6px;margin-right:4px;border:1px solid #ccc}
.grids{display:flex;flex-wrap:wrap;align-items:flex-start}.grids h3{margin:.4em 0 0}
"""

SCRIPT = r"""
const $ = id => document.getElementById(id);
const SESSIONS = JSON.parse($('data-sessions').textContent);
const BY_KEY = new Map(SESSIONS.map(s => [s.key, s]));
const PAGE = %(page)d;
const NOT_EMBEDDED = %(not_embedded)s;
let outcomeFilter = '';
const parsed = {};
let QUESTIONS = null;
function questions() { return QUESTIONS || (QUESTIONS = JSON.parse($('data-questions').textContent)); }
function block(key) {
  if (!(key in parsed)) { const el = $('data-s-' + key); parsed[key] = el ? JSON.parse(el.textContent) : []; }
  return parsed[key];
}
const COLUMNS = [['session', 'session'], ['model', 'model'], ['runner', 'runner'], ['framework', 'framework'],
  ['precision', 'precision'], ['tp', 'tp'], ['status', 'status'], ['strict', 'strict-match'],
  ['flexible', 'flexible-extract'], ['n', 'n'], ['verdict', 'verdict']];
const FILTERS = %(filters)s;
let sortKey = 'session', sortDir = 1;
function fmt(v) {
  if (v === null || v === undefined) return '–';
  return typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(4) : String(v);
}
function buildTable() {
  const head = $('results').tHead.rows[0];
  for (const [key, label] of COLUMNS) {
    const th = document.createElement('th'); th.textContent = label; th.dataset.key = key;
    th.addEventListener('click', () => { sortDir = sortKey === key ? -sortDir : 1; sortKey = key; render(); });
    head.appendChild(th);
  }
  for (const f of FILTERS) {
    const select = $('f-' + f);
    const values = [...new Set(SESSIONS.map(s => String(s[f])))].sort();
    for (const v of ['', ...values]) {
      const o = document.createElement('option'); o.value = v; o.textContent = v || 'all'; select.appendChild(o);
    }
    select.addEventListener('change', render);
  }
  const body = $('results').tBodies[0];
  for (const s of SESSIONS) {
    const tr = document.createElement('tr'); tr.className = 'session-row'; tr.dataset.key = s.key;
    for (const [key] of COLUMNS) {
      const td = document.createElement('td'); td.textContent = fmt(s[key]);
      if (key === 'verdict' && ['regression', 'not_comparable'].includes(s.verdict)) td.className = 'bad';
      tr.appendChild(td);
    }
    tr.addEventListener('click', () => openSession(s));
    s.row = tr; body.appendChild(tr);
  }
}
function render() {
  const body = $('results').tBodies[0];
  const wanted = FILTERS.map(f => [f, $('f-' + f).value]).filter(([, v]) => v);
  const rows = SESSIONS.slice().sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    const missing = v => v === null || v === undefined;
    return (x === y ? 0 : missing(x) ? 1 : missing(y) ? -1 : x < y ? -1 : 1) * sortDir;
  });
  let shown = 0;
  for (const s of rows) {
    const visible = wanted.every(([f, v]) => String(s[f]) === v) && (!outcomeFilter || s.outcome === outcomeFilter);
    s.row.style.display = visible ? '' : 'none'; shown += visible;
    body.appendChild(s.row);
  }
  $('count').textContent = shown + ' of ' + SESSIONS.length + ' sessions'
    + (outcomeFilter === 'not_run' ? ' (not run: no result, the dashed cells in the grid)' : '');
}
function filterOutcome(outcome) {
  outcomeFilter = outcomeFilter === outcome ? '' : outcome;
  for (const b of document.querySelectorAll('#counts button')) {
    b.classList.toggle('active', b.dataset.outcome === outcomeFilter);
  }
  $('overview').classList.toggle('filtered', outcomeFilter !== '');
  for (const td of document.querySelectorAll('#overview td.cell')) {
    td.classList.toggle('match', td.dataset.outcome === outcomeFilter);
  }
  render();
}
let current = null;
function openSession(s) {
  for (const other of SESSIONS) other.row.classList.toggle('selected', other === s);
  current = {session: s, limit: PAGE};
  $('detail').hidden = false;
  $('detail-title').textContent = s.session;
  $('detail-reason').textContent = s.outcome_label + (s.reason ? ': ' + s.reason : '');
  $('detail-reason').className = s.outcome_class;
  $('not-embedded').hidden = s.embedded;
  $('not-embedded').textContent = s.embedded ? '' : NOT_EMBEDDED + ' ' + s.session;
  const select = $('compare-with'); select.textContent = '';
  for (const [key, label] of [['', 'nothing'], ...s.compare]) {
    const other = key && BY_KEY.get(key.split('@')[0]);
    const o = document.createElement('option'); o.value = key; select.appendChild(o);
    o.textContent = label + (other && !other.embedded ? ' (answers not in this page)' : '');
  }
  renderQuestions();
  $('detail').scrollIntoView();
}
function renderQuestions() {
  if (!current) return;
  const q = questions(), own = block(current.session.key);
  const otherKey = $('compare-with').value;
  const other = otherKey ? new Map(block(otherKey).map(r => [r[0], r])) : null;
  const show = $('show').value;
  const body = $('questions').tBodies[0]; body.textContent = '';
  let flips = 0, listed = 0;
  const rows = [];
  for (const r of own) {
    const o = other ? other.get(r[0]) : undefined;
    const flip = o !== undefined && (o[4] !== r[4] || o[5] !== r[5]);
    const changed = o !== undefined && (o[2] !== r[2] || o[3] !== r[3]);
    flips += flip;
    const skip = (show === 'flips' && !flip) || (show === 'changed' && !changed)
      || (show === 'wrong' && r[4] && r[5]) || (show === 'right' && !(r[4] || r[5]));
    if (skip) continue;
    rows.push([r, o, flip]);
  }
  for (const [r, o, flip] of rows.slice(0, current.limit)) {
    const [docId, question, target] = q[r[0]];
    const tr = document.createElement('tr'); tr.className = 'q' + (flip ? ' flip' : '');
    const cells = [String(docId), question, target];
    for (const text of cells) { const td = document.createElement('td'); td.textContent = text; tr.appendChild(td); }
    const resp = document.createElement('td'); resp.className = 'resp';
    const pre = document.createElement('pre'); pre.textContent = r[1]; resp.appendChild(pre);
    if (o !== undefined && (flip || o[1] !== r[1])) {
      const alt = document.createElement('pre'); alt.className = 'other';
      alt.textContent = '[' + $('compare-with').selectedOptions[0].textContent + '] ' + o[1]; resp.appendChild(alt);
    }
    tr.appendChild(resp);
    for (const [answer, correct] of [[r[2], r[4]], [r[3], r[5]]]) {
      const td = document.createElement('td'); td.textContent = (correct ? '✓ ' : '✗ ') + answer;
      td.className = correct ? 'ok' : 'no'; tr.appendChild(td);
    }
    listed++; body.appendChild(tr);
  }
  $('q-count').textContent = listed + ' of ' + rows.length + ' questions shown'
    + (other ? '; ' + flips + ' flipped' : '');
  $('more').hidden = listed >= rows.length;
}
buildTable(); render();
for (const b of document.querySelectorAll('#counts button')) {
  b.addEventListener('click', () => filterOutcome(b.dataset.outcome));
}
for (const id of ['overview', 'attention']) $(id).addEventListener('click', event => {
  const target = event.target.closest('[data-key]');
  if (target) { event.preventDefault(); openSession(BY_KEY.get(target.dataset.key)); }
});
$('compare-with').addEventListener('change', () => { current.limit = PAGE; renderQuestions(); });
$('show').addEventListener('change', () => { current.limit = PAGE; renderQuestions(); });
$('more').addEventListener('click', () => { current.limit += PAGE; renderQuestions(); });
"""

QUESTION_PAGE = 100
# Per-question answers embedded at most (JSON bytes): the full matrix's would make a 100 MB page that
# loads in seconds; the rest stay in the session JSONs (benchmarks/report_scale.py measures both).
QUESTION_BUDGET_BYTES = 32_000_000
PLOT_BUDGET_BYTES = 8_000_000  # PNG bytes embedded; the full matrix's plots take ~3 MB
REOPEN_COMMAND = "nox -s report -- RESULTS_DIR OUT_DIR --questions"


def page(title: str, body: str, script: str = "") -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<link rel='icon' href='data:,'><style>{CSS}</style></head><body>\n{body}\n"
            + (f"<script>{script}</script>" if script else "") + "</body></html>\n")


def table(head: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] = ()) -> str:
    """An HTML table of plain-text cells (escaped here)."""
    classes = list(row_classes) or [""] * len(rows)
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for cls, row in zip(classes, rows, strict=True):
        out.append(f"<tr class='{cls}'>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return "".join(out) + "</tbody></table>"


# JSON rows of the page's data blocks: a question [doc_id, question, target]; an answer [question id,
# response, strict answer, flexible answer, strict right (0/1), flexible right (0/1)].
Row = list[str | int]


def _rows(samples: Sequence[Mapping[str, Any]], questions: dict[str, Row]) -> list[Row]:
    rows: list[Row] = []
    for s in samples:
        qid = paired_stats.sample_id(s)
        questions.setdefault(qid, [s["doc_id"], s.get("question") or "", str(s.get("target", ""))])
        rows.append([qid, s.get("response") or "", str(s.get("strict_answer")), str(s.get("flexible_answer")),
                     int(bool(s.get("strict_correct"))), int(bool(s.get("flexible_correct")))])
    return rows


def page_data(documents: Sequence[Mapping[str, Any]], deltas: Sequence[Mapping[str, Any]],
              view: overview.Overview | None = None
              ) -> tuple[list[dict[str, Any]], dict[str, Row], dict[str, list[Row]]]:
    """(session rows, question id -> [doc_id, question, target], data key -> answer rows)."""
    cells = (view or overview.build(documents, deltas, None)).by_session
    sessions: list[dict[str, Any]] = []
    questions: dict[str, Row] = {}
    blocks: dict[str, list[Row]] = {}
    key_of: dict[str, str] = {}
    for index, doc in enumerate(documents):
        key, config, cell = str(index), doc.get("config") or {}, cells[doc["session"]]
        metrics, verdict = doc.get("metrics") or {}, (doc.get("gate") or {}).get("verdict")
        key_of[doc["session"]] = key
        entry = {"key": key, "session": doc["session"], "status": doc.get("status"),
                 "verdict": verdict or doc.get("status"), "strict": metrics.get("strict_match"),
                 "flexible": metrics.get("flexible_extract"), "n": metrics.get("n"), "compare": [],
                 "outcome": cell.outcome, "outcome_label": overview.label(cell.outcome),
                 "outcome_class": overview.css_class(cell.outcome), "reason": cell.reason, "embedded": True,
                 **{k: config.get(k) for k in ("model", *siblings.AXES)}}
        blocks[key] = _rows(doc.get("samples") or [], questions)
        block = doc.get("concurrency") or {}
        for run in block.get("runs", []):
            level_key = f"{key}@{run['concurrency']}"
            key_of[f"{doc['session']}@{run['concurrency']}"] = key if run["gating"] else level_key
            if not run["gating"]:
                blocks[level_key] = _rows(run.get("samples") or [], questions)
                entry["compare"].append([level_key, f"concurrency {run['concurrency']}"])
        sessions.append(entry)
    by_key = {s["key"]: s for s in sessions}
    for d in deltas:
        if d["axis"] == "concurrency" or d["verdict"] == run_comparison.NOT_COMPARED:
            continue
        reference, run = key_of[d["reference"]], key_of[d["run"]]
        by_key[reference]["compare"].append([run, f"{d['label']}: {d['run']}"])
        by_key[run]["compare"].append([reference, f"{d['label']}: {d['reference']}"])
    return sessions, questions, blocks


def plots_html(plots: Sequence[Path], budget: int) -> str:
    """The plots as data URIs while their PNG bytes fit `budget`; the rest as links to the files beside
    the page (a 1,000-session matrix draws ~30 MB of them)."""
    out, used, linked = [], 0, 0
    for path in plots:
        size = path.stat().st_size
        if used + size <= budget:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            out.append(f"<img alt='{html.escape(path.name)}' src='data:image/png;base64,{data}'>")
            used += size
        else:
            out.append(f"<p><a href='{html.escape(path.name)}'><img alt='{html.escape(path.name)}' "
                       f"src='{html.escape(path.name)}' loading='lazy'></a></p>")
            linked += 1
    note = (f"<p>{linked} of {len(plots)} plots are not in this page (it embeds at most {budget / 1e6:.0f} MB of "
            "them): they are the PNG files beside report.html, shown here while the folder is kept together.</p>"
            if linked else "")
    return note + "".join(out)


def sibling_table(deltas: Sequence[Mapping[str, Any]]) -> str:
    compared = [d for d in deltas if d["verdict"] != run_comparison.NOT_COMPARED]
    if not compared:
        return "<p>No sibling cells share questions and protocol.</p>"
    rows = [[d["model"], d["label"], next(iter(d["metrics"].values()))["n"],
             siblings.fmt(d["metrics"].get("strict_match")), siblings.fmt(d["metrics"].get("flexible_extract")),
             d["verdict"], siblings.flag(d)] for d in compared]
    return table(("model", "comparison", "n", "strict-match", "flexible-extract", "verdict", "flag"), rows,
                 ["flag" if d["significant"] else "" for d in compared])


def _json_text(data: Any) -> str:
    # `<` escaped inside the JSON: no `</script>` or `<!--` in the data can end the block.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


def json_block(element_id: str, data: Any) -> str:
    return f"<script type='application/json' id='{element_id}'>{_json_text(data)}</script>"


def embedded_blocks(sessions: list[dict[str, Any]], blocks: Mapping[str, list[Row]], budget: int,
                    first: Sequence[str] = ()) -> dict[str, str]:
    """Data key -> JSON text of the answers the page embeds: whole sessions (with their concurrency
    levels) until `budget` bytes, those named by `first` (fnmatch patterns) first, then regressions,
    errors and unknown verdicts, then the rest by name.  Marks each session's `embedded`."""
    def rank(s: dict[str, Any]) -> tuple[int, int, str]:
        named = any(fnmatch.fnmatchcase(s["session"], pattern) for pattern in first)
        routine = s["outcome"] in (overview.PASSED, overview.NOT_GATED)
        return (0 if named else 1, 1 if routine else 0, s["session"])

    out: dict[str, str] = {}
    used = 0
    for s in sorted(sessions, key=rank):
        keys = [s["key"], *(key for key, _ in s["compare"] if key.startswith(s["key"] + "@"))]
        texts = {key: _json_text(blocks[key]) for key in keys if key in blocks}
        size = sum(len(t.encode()) for t in texts.values())
        s["embedded"] = used + size <= budget
        if s["embedded"]:
            out.update(texts)
            used += size
    return out


def _cell(cell: overview.Cell | None, keys: Mapping[str, str]) -> str:
    if cell is None:
        return "<td class='none'></td>"
    attrs = (f"class='cell {overview.css_class(cell.outcome)}' data-outcome='{html.escape(cell.outcome)}' "
             f"title='{html.escape(cell.hover())}'")
    if cell.session in keys:
        attrs += f" data-key='{keys[cell.session]}'"
    if cell.outcome == overview.NOT_RUN:
        return f"<td {attrs}></td>"
    number = f"{cell.accuracy:.3f}" if cell.accuracy is not None else html.escape(overview.label(cell.outcome))
    delta = f"<small>{cell.difference.difference * 100:+.1f}</small>" if cell.difference is not None else ""
    return f"<td {attrs}>{number}{delta}</td>"


def overview_html(view: overview.Overview, keys: Mapping[str, str], size_note: str) -> str:
    """The counts (each a filter), the regressions and errors with their reason, a grid per model."""
    buttons = "".join(f"<button class='{overview.css_class(k)}' data-outcome='{html.escape(k)}'><b>{n}</b> "
                      f"{html.escape(overview.label(k))}</button>" for k, n in view.headline())
    of = f" of {view.expected} sessions {view.expected_from}" if view.expected is not None else ""
    out = [f"<div id='counts'>{buttons}<span>{of}</span></div>", "<ul id='attention'>"]
    for c in view.attention:
        link = (f"<a href='#detail' data-key='{keys[c.session]}'>{html.escape(c.session)}</a>"
                if c.session in keys else html.escape(c.session))
        out.append(f"<li class='{overview.css_class(c.outcome)}' title='{html.escape(c.reason)}'><b>"
                   f"{html.escape(overview.label(c.outcome))}</b> {link}: {html.escape(overview.brief(c.reason))}</li>")
    out.append("</ul><section id='overview'><p class='legend'>Each cell: strict-match accuracy and, below, the "
               "paired difference in points against the session's reference (else its fp16 sibling); hover for "
               "the bounds, click for the questions. "
               + "".join(f"<span class='{overview.css_class(k)}'>{html.escape(overview.label(k))}</span>"
                         for k in overview.HEADLINE) + "</p><div class='grids'>")
    for grid in view.grids:
        head = "".join(f"<th>{html.escape(r)}<br>{html.escape(f)}</th>" for r, f in grid.columns)
        rows = "".join(f"<tr><th>{html.escape(p)} tp{tp}</th>"
                       + "".join(_cell(grid.cells.get(((p, tp), c)), keys) for c in grid.columns) + "</tr>"
                       for p, tp in grid.rows)
        out.append(f"<div><h3>{html.escape(grid.model)}</h3><table class='grid'><thead><tr><th>precision tp</th>"
                   f"{head}</tr></thead><tbody>{rows}</tbody></table></div>")
    out.append("</div>")
    if view.unplaced:
        out.append("<p>Not in a grid (no config, not in matrix.yaml): " + ", ".join(
            f"<a href='#detail' data-key='{keys[c.session]}'>{html.escape(c.session)}</a>" if c.session in keys
            else f"<span class='{overview.css_class(c.outcome)}' title='{html.escape(c.reason)}'>"
                 f"{html.escape(c.session)} ({html.escape(overview.label(c.outcome))})</span>"
            for c in view.unplaced) + "</p>")
    out.append(f"<p id='size-note'>{html.escape(size_note)}</p></section>")
    return "\n".join(out)


def render(documents: Sequence[Mapping[str, Any]], deltas: Sequence[Mapping[str, Any]],
           plots: Sequence[Path], view: overview.Overview | None = None,
           budget: int | None = None, first: Sequence[str] = (), history: str | None = None) -> str:
    """The page; `history` is the results history's section (reporting/history/report_section.py), when
    a history is configured."""
    view = view or overview.build(documents, deltas, None)
    budget = QUESTION_BUDGET_BYTES if budget is None else budget
    sessions, questions, blocks = page_data(documents, deltas, view)
    embedded = embedded_blocks(sessions, blocks, budget, first)
    kept = sum(s["embedded"] for s in sessions)
    size_note = (f"Per-question answers of {kept} of {len(sessions)} sessions are in this page (it embeds at most "
                 f"{budget / 1e6:.0f} MB of them: regressions and errors first, then by name); "
                 + ("every session's are here." if kept == len(sessions) else
                    "the other sessions' stay in their session JSONs. To put chosen sessions' answers in the page "
                    f"first: {REOPEN_COMMAND} 'PATTERN' (session names or patterns, e.g. 'gsm8k-llama-3.1-8b-*')."))
    filters = "".join(f"<label>{f} <select id='f-{f}'></select></label>" for f in FILTERS)
    body = [
        "<h1>GSM8k results</h1>", overview_html(view, {s["session"]: s["key"] for s in sessions}, size_note),
        "<h2>Sessions</h2>",
        f"<div id='filters'>{filters}<span id='count'></span></div>",
        "<table id='results'><thead><tr></tr></thead><tbody></tbody></table>",
        "<section id='detail' hidden><h2 id='detail-title'></h2><p id='detail-reason'></p>"
        "<p id='not-embedded' hidden></p>"
        "<label>compare with <select id='compare-with'></select></label>"
        "<label>show <select id='show'><option value='all'>all</option><option value='flips'>flips only</option>"
        "<option value='changed'>answer changed</option>"
        "<option value='wrong'>wrong</option><option value='right'>right</option></select></label>"
        "<span id='q-count'></span>"
        "<table id='questions'><thead><tr><th>doc</th><th>question</th><th>target</th><th>response</th>"
        "<th>strict</th><th>flexible</th></tr></thead><tbody></tbody></table>"
        "<button id='more' hidden>show more</button></section>",
        "<h2>Sibling deltas (run − reference, paired; bounds one-sided)</h2>", sibling_table(deltas),
        *(("<h2>History</h2>", f"<section id='history-section'>{history}</section>") if history is not None else ()),
        "<h2>Plots</h2>", plots_html(plots, PLOT_BUDGET_BYTES),
        json_block("data-sessions", sessions), json_block("data-questions", questions),
        *(f"<script type='application/json' id='data-s-{key}'>{text}</script>" for key, text in embedded.items()),
    ]
    not_embedded = f"This session's answers are not in this page (the note under the grid says why): {REOPEN_COMMAND}"
    script = SCRIPT % {"page": QUESTION_PAGE, "filters": json.dumps(list(FILTERS)),
                       "not_embedded": _json_text(not_embedded)}
    return page("GSM8k results", "\n".join(body), script)


def write(documents: Sequence[Mapping[str, Any]], deltas: Sequence[Mapping[str, Any]], plots: Sequence[Path],
          path: Path, view: overview.Overview | None = None, first: Sequence[str] = (),
          history: str | None = None) -> Path:
    path.write_text(render(documents, deltas, plots, view, first=first, history=history), encoding="utf-8")
    return path
