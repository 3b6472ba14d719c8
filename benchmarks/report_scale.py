"""report.html at the full matrix's size and at 1,000 sessions, in headless Chromium.

    python benchmarks/report_scale.py [--sessions N] [--questions 1319] [--out DIR]

Generates one session JSON per matrix.yaml combination (106 today; with --sessions N, a generated matrix of
matrix.yaml's models copied under new names until it lists N or more, of which the first N have a result,
the rest are not run) over GSM8K's test questions (the real texts from GSM8K_DATASET_DIR when present),
~600-character responses, outcomes that differ between siblings by a few percent, and every 37th session
a regression, every 53rd an error, every 11th not gated.  Then times `report.write_report` and, in
Chromium (Selenium, Debian's chromedriver), when the overview grid is drawn (the first frame after the
matrix overview is in the page), the page's load, opening a session, comparing it with a sibling, and,
for contrast, parsing every session's answers at once (what lazy parsing avoids).  With 200 sessions or
fewer it also loads the page with every session's answers embedded (the page before it kept a size
budget), for the ratio.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from gsm8k_bench.core import results  # noqa: E402
from gsm8k_bench.matrix.loader import load_matrix  # noqa: E402
from gsm8k_bench.matrix.types import Matrix  # noqa: E402
from gsm8k_bench.reporting import html_page, report  # noqa: E402
from gsm8k_bench.verdicts import gate, paired_stats, references, run_comparison, siblings  # noqa: E402

PROTOCOL = {"endpoint": "/v1/completions", "lm_eval_model": "local-completions", "apply_chat_template": False,
            "fewshot_as_multiturn": False, "num_fewshot": 5, "max_gen_toks": 256,
            "until": ["Question:", "</s>", "<|im_end|>"]}


def questions(count: int) -> list[dict]:
    test = Path(os.environ.get("GSM8K_DATASET_DIR", ROOT.parent / "shared" / "gsm8k")) / "test.jsonl"
    rows = [json.loads(line) for line in test.open(encoding="utf-8")][:count] if test.is_file() else []
    while len(rows) < count:
        i = len(rows)
        rows.append({"question": f"Synthetic question {i}: " + "a farmer counts apples " * 10,
                     "answer": f"Some steps.\n#### {i}"})
    return rows


def generated_matrix(sessions: int, folder: Path) -> Path:
    """matrix.yaml, its models copied as <model>-v2, -v3, ... until it lists `sessions` or more."""
    data = yaml.safe_load((ROOT / "matrix.yaml").read_text(encoding="utf-8"))
    models = dict(data["models"])
    per_copy = len(load_matrix(ROOT / "matrix.yaml").combinations)
    for copy_number in range(2, -(-sessions // per_copy) + 1):
        for name, model in models.items():
            data["models"][f"{name}-v{copy_number}"] = copy.deepcopy(model)
        for section in ("include", "exclude"):
            data[section] = data.get(section, []) + [{**entry, "model": f"{entry['model']}-v{copy_number}"}
                                                     for entry in data.get(section, []) if entry.get("model") in models]
    path = folder / "matrix.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def judged(session: str, data: list[dict], base: list[bool], samples: list[dict]) -> dict:
    """The real gate's verdict on `samples` against a reference that answered `base`."""
    ids = [paired_stats.question_id(i, row["question"]) for i, row in enumerate(data)]
    protocol = gate.protocol_of(PROTOCOL, {"until": PROTOCOL["until"]})
    reference = references.Reference(session=session, path=Path(f"references/{session}.json"), n=len(ids),
                                      protocol=protocol, accuracy={}, provenance={},
                                      outcomes={m: dict(zip(ids, base, strict=True)) for m in run_comparison.METRICS})
    verdict = gate.judge_paired(reference, protocol, samples, gate.GateSettings())
    assert isinstance(verdict, dict), verdict
    return verdict


def session_docs(matrix: Matrix, sessions: int, count: int) -> Iterator[dict]:
    """One session JSON per combination, the first `sessions` of them, generated one at a time."""
    rng = random.Random(13)  # noqa: S311 - test data, not secrets
    data = questions(count)
    base = [rng.random() < 0.9 for _ in data]
    for index, combo in enumerate(matrix.combinations[:sessions]):
        outcomes = [ok if rng.random() > 0.04 else not ok for ok in base]
        if index % 37 == 36:  # a regression: 7% of the right answers lost
            outcomes = [ok and rng.random() > 0.07 for ok in base]
        samples = []
        for i, (row, ok) in enumerate(zip(data, outcomes, strict=True)):
            target = row["answer"].split("####")[-1].strip()
            answer = target if ok else str(rng.randint(0, 999))
            response = f" Let me think step by step. {row['answer'].split('####')[0]}" * 2 + f"\n#### {answer}"
            samples.append({"doc_id": i, "question": row["question"], "target": row["answer"],
                            "response": response[:900], "strict_answer": answer, "flexible_answer": answer,
                            "strict_correct": ok, "flexible_correct": ok})
        accuracy = sum(outcomes) / len(outcomes)
        doc = {"schema": 1, "session": combo.name, "status": "passed", "error": None,
               "config": {"model": combo.model.name, "runner": combo.runner.name, "framework": combo.framework.name,
                          "precision": combo.precision.name, "tp": combo.tp, "protocol": PROTOCOL},
               "metrics": {"strict_match": accuracy, "strict_match_stderr": 0.008, "flexible_extract": accuracy,
                           "flexible_extract_stderr": 0.008, "n": len(outcomes)},
               "gate": {"verdict": "pass"}, "samples": samples}
        if index % 37 == 36:
            doc["gate"] = judged(combo.name, data, base, samples)
            doc.update(status="failed", error={"message": "gate: " + gate.describe_regression(doc["gate"]),
                                               "log_tail": ""})
        elif index % 53 == 52:
            doc.update(status="failed", gate=None, metrics=None, samples=[], error={
                "message": "server start: server exited with code 1 (generated)", "log_tail": ""})
        elif index % 11 == 10:
            doc["gate"] = {"verdict": "not_gated", "reason": "no reference (generated)"}
        yield doc


# Runs before the page's own content: the time of the first frame after the overview (which ends with
# the size note) is in the document, i.e. when the grid is on screen.
GRID_PROBE = """
(function poll() {
  if (document.getElementById('size-note')) {
    requestAnimationFrame(() => { window.gridDrawnMs = performance.now(); });
  } else requestAnimationFrame(poll);
})();
"""
PAGE_TIMES = """
const nav = performance.getEntriesByType('navigation')[0];
return [window.gridDrawnMs, nav.domContentLoadedEventEnd, nav.loadEventEnd,
        document.querySelectorAll('#overview td.cell').length];
"""


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": GRID_PROBE})
    return driver


def load(driver, page: Path) -> tuple[float, float, float, int, float]:
    """(grid drawn, DOMContentLoaded, load event) in ms from navigation start, the grid's cells, and the
    seconds driver.get took (what this benchmark printed as the page's load before the grid existed)."""
    start = time.monotonic()
    driver.get(page.as_uri())
    wall_s = time.monotonic() - start
    grid_ms, ready_ms, load_ms, cells = driver.execute_script(PAGE_TIMES)
    return grid_ms, ready_ms, load_ms, cells, wall_s


def cold_load(page: Path, profile: Path) -> tuple[float, float, float, int, float]:
    """load() in a browser of its own, so that neither page is measured warm after the other."""
    driver = browser(profile)
    try:
        return load(driver, page)
    finally:
        driver.quit()


TIMED_OPEN = """
const session = SESSIONS.find(s => s.embedded && s.n);
const t = performance.now();
session.row.click();
document.getElementById('questions').offsetHeight;  // layout counts too
return [performance.now() - t, document.querySelectorAll('#questions tr.q').length];
"""
TIMED_COMPARE = """
const select = document.getElementById('compare-with');
if (select.options.length < 2) return [0, 0];
const t = performance.now();
select.value = select.options[1].value; select.dispatchEvent(new Event('change'));
document.getElementById('questions').offsetHeight;
return [performance.now() - t, document.getElementById('q-count').textContent];
"""
TIMED_EAGER = """
let t = performance.now(), rows = 0;
for (const el of document.querySelectorAll("script[id^='data-s-']")) rows += JSON.parse(el.textContent).length;
const parse = performance.now() - t;
t = performance.now(); current.limit = 1e9; renderQuestions();
document.getElementById('questions').offsetHeight;
return [parse, rows, performance.now() - t, document.querySelectorAll('#questions tr.q').length];
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, help="a generated matrix of at least this many sessions")
    parser.add_argument("--questions", type=int, default=1319)
    parser.add_argument("--out", type=Path, help="keep the generated results and report here")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        matrix = load_matrix(generated_matrix(args.sessions, Path(tmp)) if args.sessions else ROOT / "matrix.yaml")
        for doc in session_docs(matrix, args.sessions or len(matrix.combinations), args.questions):
            results.write_atomic(results.result_path(out, doc["session"]), doc)
        start = time.monotonic()
        paths = report.write_report(out, out, lambda message: None, matrix)
        report_s = time.monotonic() - start
        size_mb = paths["html"].stat().st_size / 1e6
        sessions = sorted(out.glob("gsm8k-*.json"))
        json_mb = sum(p.stat().st_size for p in sessions) / 1e6
        everything = None
        if len(sessions) <= 200:  # the page as it was before the size budget: every answer embedded
            documents = report.load_results(out, lambda message: None)
            everything = out / "report-everything.html"
            deltas = siblings.deltas(documents, run_comparison.gate_settings())
            everything.write_text(html_page.render(documents, deltas, [], budget=10**12), encoding="utf-8")
        before = cold_load(everything, Path(tmp) / "profile-everything") if everything else None
        everything_mb = everything.stat().st_size / 1e6 if everything else 0
        driver = browser(Path(tmp) / "profile")
        try:
            grid_ms, ready_ms, load_ms, cells, wall_s = load(driver, paths["html"])
            open_ms, shown = driver.execute_script(TIMED_OPEN)
            compare_ms, counted = driver.execute_script(TIMED_COMPARE)
            parse_ms, rows, draw_all_ms, drawn = driver.execute_script(TIMED_EAGER)
        finally:
            driver.quit()
    note = html_page.QUESTION_BUDGET_BYTES / 1e6
    print(f"{len(sessions)} sessions ({len(matrix.combinations)} in the matrix) x {args.questions} questions: "
          f"session JSONs {json_mb:.1f} MB, report.html {size_mb:.1f} MB (answers embedded up to {note:.0f} MB)")
    print(f"write_report (md, plots, forest plots, html): {report_s:.1f} s; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"chromium: grid drawn ({cells} cells) at {grid_ms / 1000:.2f} s, page parsed (DOMContentLoaded) "
          f"{ready_ms / 1000:.2f} s, loaded {load_ms / 1000:.2f} s (driver.get {wall_s:.2f} s)")
    if before:
        print(f"  every answer embedded (the page before the size budget, {everything_mb:.1f} MB): grid drawn at "
              f"{before[0] / 1000:.2f} s, parsed {before[1] / 1000:.2f} s, loaded {before[2] / 1000:.2f} s "
              f"(driver.get {before[4]:.2f} s): {before[2] / load_ms:.1f}x the load time")
    print(f"opening a session {open_ms:.0f} ms ({shown} rows drawn); comparing it with a sibling {compare_ms:.0f} ms "
          f"({counted})")
    print(f"for contrast: parsing every embedded session's answers {parse_ms:.0f} ms ({rows} rows); drawing all "
          f"{drawn} rows of one session {draw_all_ms:.0f} ms, {draw_all_ms / max(open_ms, 1):.1f}x the paged "
          f"drill-down (x{len(sessions)} sessions if drawn up front: {draw_all_ms * len(sessions) / 1000:.1f} s)")


if __name__ == "__main__":
    main()
