"""report.html at the full matrix's size: every matrix.yaml session x 1,319 questions, in headless Chromium.

    python benchmarks/report_scale.py [--questions 1319] [--out DIR]

Generates one session JSON per matrix.yaml combination (83 today) over GSM8K's test questions (the real
texts from GSM8K_DATASET_DIR when present), ~600-character responses and outcomes that differ between
siblings by a few percent, then times `report.write_report` and, in Chromium (Selenium, Debian's
chromedriver), the page load, opening a session, comparing it with a sibling, and, for contrast,
parsing every session's answers at once (what lazy parsing avoids).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gsm8k_bench.core import results  # noqa: E402
from gsm8k_bench.matrix.loader import load_matrix  # noqa: E402
from gsm8k_bench.reporting import report  # noqa: E402

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


def session_docs(count: int) -> list[dict]:
    rng = random.Random(13)  # noqa: S311 - test data, not secrets
    data = questions(count)
    base = [rng.random() < 0.9 for _ in data]
    docs = []
    for combo in load_matrix(ROOT / "matrix.yaml").combinations:
        outcomes = [ok if rng.random() > 0.04 else not ok for ok in base]
        samples = []
        for i, (row, ok) in enumerate(zip(data, outcomes, strict=True)):
            target = row["answer"].split("####")[-1].strip()
            answer = target if ok else str(rng.randint(0, 999))
            response = f" Let me think step by step. {row['answer'].split('####')[0]}" * 2 + f"\n#### {answer}"
            samples.append({"doc_id": i, "question": row["question"], "target": row["answer"],
                            "response": response[:900], "strict_answer": answer, "flexible_answer": answer,
                            "strict_correct": ok, "flexible_correct": ok})
        accuracy = sum(outcomes) / len(outcomes)
        docs.append({"schema": 1, "session": combo.name, "status": "passed", "error": None,
                     "config": {"model": combo.model.name, "runner": combo.runner.name,
                                "framework": combo.framework.name, "precision": combo.precision.name,
                                "tp": combo.tp, "protocol": PROTOCOL},
                     "metrics": {"strict_match": accuracy, "strict_match_stderr": 0.008, "flexible_extract": accuracy,
                                 "flexible_extract_stderr": 0.008, "n": len(outcomes)},
                     "gate": {"verdict": "pass"}, "samples": samples})
    return docs


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


TIMED_OPEN = """
const t = performance.now();
document.querySelector('tr.session-row').click();
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
    parser.add_argument("--questions", type=int, default=1319)
    parser.add_argument("--out", type=Path, help="keep the generated results and report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        docs = session_docs(args.questions)
        for doc in docs:
            results.write_atomic(results.result_path(out, doc["session"]), doc)
        start = time.monotonic()
        paths = report.write_report(out, out, warn=print)
        report_s = time.monotonic() - start
        size_mb = paths["html"].stat().st_size / 1e6
        json_mb = sum(results.result_path(out, d["session"]).stat().st_size for d in docs) / 1e6
        driver = browser(Path(tmp) / "profile")
        try:
            start = time.monotonic()
            driver.get(paths["html"].as_uri())
            load_s = time.monotonic() - start
            open_ms, shown = driver.execute_script(TIMED_OPEN)
            compare_ms, counted = driver.execute_script(TIMED_COMPARE)
            parse_ms, rows, draw_all_ms, drawn = driver.execute_script(TIMED_EAGER)
        finally:
            driver.quit()
    print(f"{len(docs)} sessions x {args.questions} questions: session JSONs {json_mb:.1f} MB, "
          f"report.html {size_mb:.1f} MB ({size_mb / json_mb:.2f} of the JSONs)")
    print(f"write_report (md, plots, forest plots, html): {report_s:.1f} s")
    print(f"chromium: page loaded in {load_s:.2f} s; opening a session {open_ms:.0f} ms ({shown} rows drawn); "
          f"comparing it with a sibling {compare_ms:.0f} ms ({counted})")
    print(f"for contrast: parsing every session's answers {parse_ms:.0f} ms ({rows} rows); drawing all {drawn} rows "
          f"of one session {draw_all_ms:.0f} ms, {draw_all_ms / max(open_ms, 1):.1f}x the paged drill-down "
          f"(x{len(docs)} sessions if drawn up front: {draw_all_ms * len(docs) / 1000:.1f} s)")


if __name__ == "__main__":
    main()
