"""report.html: one self-contained page (inline CSS, JS, data and PNGs; nothing fetched), so it works as
a downloaded CI artifact.  Results table with filters and sorting, the plots, the sibling deltas, and a
drill-down from a session to its questions with flips against a sibling or another concurrency level.

Per-question data is the bulk (a full matrix: 83 sessions x 1,319 questions): question texts are stored
once, each session's answers sit in their own inert JSON block that is parsed only when that session is
opened, and the question list renders in pages of QUESTION_PAGE rows.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
"""

SCRIPT = r"""
const $ = id => document.getElementById(id);
const SESSIONS = JSON.parse($('data-sessions').textContent);
const PAGE = %(page)d;
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
    const visible = wanted.every(([f, v]) => String(s[f]) === v);
    s.row.style.display = visible ? '' : 'none'; shown += visible;
    body.appendChild(s.row);
  }
  $('count').textContent = shown + ' of ' + SESSIONS.length + ' sessions';
}
let current = null;
function openSession(s) {
  for (const other of SESSIONS) other.row.classList.toggle('selected', other === s);
  current = {session: s, limit: PAGE};
  $('detail').hidden = false;
  $('detail-title').textContent = s.session;
  const select = $('compare-with'); select.textContent = '';
  for (const [key, label] of [['', 'nothing'], ...s.compare]) {
    const o = document.createElement('option'); o.value = key; o.textContent = label; select.appendChild(o);
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
$('compare-with').addEventListener('change', () => { current.limit = PAGE; renderQuestions(); });
$('show').addEventListener('change', () => { current.limit = PAGE; renderQuestions(); });
$('more').addEventListener('click', () => { current.limit += PAGE; renderQuestions(); });
"""

QUESTION_PAGE = 100


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


def _json_block(element_id: str, data: Any) -> str:
    # `<` escaped inside the JSON: no `</script>` or `<!--` in the data can end the block.
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    return f"<script type='application/json' id='{element_id}'>{text}</script>"


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


def page_data(documents: Sequence[Mapping[str, Any]], deltas: Sequence[Mapping[str, Any]]
              ) -> tuple[list[dict[str, Any]], dict[str, Row], dict[str, list[Row]]]:
    """(session rows, question id -> [doc_id, question, target], data key -> answer rows)."""
    sessions: list[dict[str, Any]] = []
    questions: dict[str, Row] = {}
    blocks: dict[str, list[Row]] = {}
    key_of: dict[str, str] = {}
    for index, doc in enumerate(documents):
        key, config = str(index), doc.get("config") or {}
        metrics, verdict = doc.get("metrics") or {}, (doc.get("gate") or {}).get("verdict")
        key_of[doc["session"]] = key
        entry = {"key": key, "session": doc["session"], "status": doc.get("status"),
                 "verdict": verdict or doc.get("status"), "strict": metrics.get("strict_match"),
                 "flexible": metrics.get("flexible_extract"), "n": metrics.get("n"), "compare": [],
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


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(path.name)}' src='data:image/png;base64,{data}'>"


def sibling_table(deltas: Sequence[Mapping[str, Any]]) -> str:
    compared = [d for d in deltas if d["verdict"] != run_comparison.NOT_COMPARED]
    if not compared:
        return "<p>No sibling cells share questions and protocol.</p>"
    rows = [[d["model"], d["label"], next(iter(d["metrics"].values()))["n"],
             siblings.fmt(d["metrics"].get("strict_match")), siblings.fmt(d["metrics"].get("flexible_extract")),
             d["verdict"], siblings.flag(d)] for d in compared]
    return table(("model", "comparison", "n", "strict-match", "flexible-extract", "verdict", "flag"), rows,
                 ["flag" if d["significant"] else "" for d in compared])


def render(documents: Sequence[Mapping[str, Any]], deltas: Sequence[Mapping[str, Any]],
           plots: Sequence[Path]) -> str:
    sessions, questions, blocks = page_data(documents, deltas)
    filters = "".join(f"<label>{f} <select id='f-{f}'></select></label>" for f in FILTERS)
    body = [
        "<h1>GSM8k results</h1>",
        f"<div id='filters'>{filters}<span id='count'></span></div>",
        "<table id='results'><thead><tr></tr></thead><tbody></tbody></table>",
        "<section id='detail' hidden><h2 id='detail-title'></h2>"
        "<label>compare with <select id='compare-with'></select></label>"
        "<label>show <select id='show'><option value='all'>all</option><option value='flips'>flips only</option>"
        "<option value='changed'>answer changed</option>"
        "<option value='wrong'>wrong</option><option value='right'>right</option></select></label>"
        "<span id='q-count'></span>"
        "<table id='questions'><thead><tr><th>doc</th><th>question</th><th>target</th><th>response</th>"
        "<th>strict</th><th>flexible</th></tr></thead><tbody></tbody></table>"
        "<button id='more' hidden>show more</button></section>",
        "<h2>Sibling deltas (run − reference, paired; bounds one-sided)</h2>", sibling_table(deltas),
        "<h2>Plots</h2>", *(_image(p) for p in plots),
        _json_block("data-sessions", sessions), _json_block("data-questions", questions),
        *(_json_block(f"data-s-{key}", rows) for key, rows in blocks.items()),
    ]
    script = SCRIPT % {"page": QUESTION_PAGE, "filters": json.dumps(list(FILTERS))}
    return page("GSM8k results", "\n".join(body), script)


def write(documents: Sequence[Mapping[str, Any]], deltas: Sequence[Mapping[str, Any]], plots: Sequence[Path],
          path: Path) -> Path:
    path.write_text(render(documents, deltas, plots), encoding="utf-8")
    return path
