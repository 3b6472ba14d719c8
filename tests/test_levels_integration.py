"""Accuracy under load and `nox -s compare` on the real stack: the CPU default at concurrency 1 and 8 on
one server start, and a second run at 4 compared against it question by question.

SmolLM2-135M scores about 0, so correctness rarely flips between runs; greedy outputs on CPU do change
with batching, so the answers that changed (same outcome) are the discordant signal checked here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, SHARED_GSM8K, require
from test_compare import compare_page_rows
from test_integration import SESSION, env, nox_argv, processes_writing_to
from test_report_browser import chromium, console_errors

from gsm8k_bench.verdicts import run_comparison

pytestmark = pytest.mark.integration
LIMIT = "10"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A: concurrency 1 then 8 on one server; B: concurrency 4 (another server start, another batching)."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    runs = {}
    for name, concurrency in (("A", "1,8"), ("B", "4")):
        results_dir = tmp_path_factory.mktemp(name)
        out = subprocess.run(nox_argv(SESSION, "--dataset-dir", str(SHARED_GSM8K), "--limit", LIMIT,
                                      "--concurrency", concurrency, "--results-dir", str(results_dir)),
                             cwd=ROOT, env=env(), capture_output=True, text=True, timeout=1800)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
        runs[name] = results_dir
    return runs


def answers_changed(a: list[dict], b: list[dict]) -> list[int]:
    return [x["doc_id"] for x, y in zip(a, b, strict=True)
            if (x["strict_answer"], x["flexible_answer"]) != (y["strict_answer"], y["flexible_answer"])]


def test_levels_on_one_server_start(two_runs):
    results_dir = two_runs["A"]
    doc = json.loads((results_dir / f"{SESSION}.json").read_text())
    block = doc["concurrency"]
    assert doc["config"]["concurrency"] == 1 and doc["config"]["concurrency_levels"] == [1, 8]
    assert block["levels"] == [1, 8] and block["gate_level"] == 1
    first, second = block["runs"]
    assert first["gating"] and first["metrics"] == doc["metrics"] and first["samples"] is None
    assert second["metrics"]["n"] == 10 and [s["doc_id"] for s in second["samples"]] == list(range(10))
    for run in block["runs"]:  # each level's requests reached the one server, counted by its own /metrics
        assert run["server_metrics"]["requests"] == 10 and run["eval_s"] > 0
    lm_eval = json.loads(next((results_dir / SESSION / "concurrency-8" / "lm-eval").rglob("results_*.json"))
                         .read_text())
    assert lm_eval["config"]["model_args"]["num_concurrent"] == 8  # parsed by lm-eval, as `lm_eval run` does
    assert second["metrics"]["strict_match"] == lm_eval["results"]["gsm8k_local"]["exact_match,strict-match"]
    assert doc["timings"]["eval_s"] == pytest.approx(first["eval_s"] + second["eval_s"], abs=0.01)
    server_log = (results_dir / SESSION / "server.log").read_text()
    assert server_log.count("Application startup complete") == 1  # the server started once
    assert not processes_writing_to(results_dir / SESSION / "server.log")

    (pair,) = block["comparisons"]
    assert (pair["reference"], pair["run"]) == (1, 8) and pair["metrics"]["strict_match"]["n"] == 10
    assert pair["answers_changed"] == answers_changed(doc["samples"], second["samples"])
    lost = sum(s["strict_correct"] and not t["strict_correct"] for s, t in zip(doc["samples"], second["samples"],
                                                                                strict=True))
    assert pair["metrics"]["strict_match"]["lost"] == lost


def test_compare_two_real_result_sets(two_runs, tmp_path):
    a, b = two_runs["A"], two_runs["B"]
    out = subprocess.run([sys.executable, "-m", "nox", "-s", "compare", "--", str(a), str(b), "--out", str(tmp_path)],
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    doc_a, doc_b = (json.loads((d / f"{SESSION}.json").read_text()) for d in (a, b))
    result = run_comparison.compare_documents(doc_a, doc_b, run_comparison.gate_settings())
    regressed = result["verdict"] == run_comparison.REGRESSION
    assert (out.returncode != 0) == regressed, out.stdout[-3000:] + out.stderr[-3000:]
    strict = result["metrics"]["strict_match"]
    row = f"| `{SESSION} (concurrency 1, 8 vs 4)` | 10 | {strict['reference']:.4f} → {strict['run']:.4f} |"
    assert row in out.stdout
    changed = answers_changed(doc_a["samples"], doc_b["samples"])
    flipped = [f["doc_id"] for f in result["flips"]]
    assert sorted(flipped + [c["doc_id"] for c in result["changed"]]) == changed
    if changed:
        assert f"{len(flipped)} flipped, {len(changed) - len(flipped)} answers changed" in out.stdout
    rows = [row for session in compare_page_rows((tmp_path / "compare.html").read_text()).values() for row in session]
    assert sorted(int(row[0].split(":")[0]) for row in rows) == changed
    for row in rows:  # both responses side by side
        doc_id = int(row[0].split(":")[0])
        assert (row[4], row[6]) == (doc_a["samples"][doc_id]["response"], doc_b["samples"][doc_id]["response"])


def test_report_of_both_levels_and_the_real_runs(two_runs, tmp_path):
    from gsm8k_bench.reporting import report

    paths = report.write_report(two_runs["A"], tmp_path, warn=pytest.fail)
    text = paths["markdown"].read_text()
    assert "| smollm2-135m | concurrency 8 vs 1 (gsm8k-smollm2-135m-cpu-vllm-fp16-tp1) | 10 |" in text
    assert paths["forest smollm2-135m"].read_bytes()[:4] == b"\x89PNG"
    # In the browser: the session's questions against its other level, the changed answers listed.
    from selenium.webdriver.support.ui import Select

    doc = json.loads((two_runs["A"] / f"{SESSION}.json").read_text())
    changed = doc["concurrency"]["comparisons"][0]["answers_changed"]
    with chromium(tmp_path / "profile") as driver:
        driver.get(paths["html"].as_uri())
        driver.find_element("css selector", "tr.session-row").click()
        assert len(driver.find_elements("css selector", "#questions tr.q")) == 10
        Select(driver.find_element("id", "compare-with")).select_by_visible_text("concurrency 8")
        Select(driver.find_element("id", "show")).select_by_value("changed")
        rows = driver.find_elements("css selector", "#questions tr.q")
        assert [int(r.find_element("css selector", "td").text) for r in rows] == changed
        for row in rows:
            assert "[concurrency 8]" in row.find_element("css selector", "td.resp").text
        driver.save_screenshot(str(tmp_path / "real-report.png"))
        assert console_errors(driver) == []
