"""Report: Markdown, plot and step summary from session JSONs; server /metrics parsing."""

from __future__ import annotations

import html
import json

import pytest
from conftest import require_module

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.evaluation import server_metrics
from gsm8k_bench.reporting import html_page, overview, report
from gsm8k_bench.verdicts import run_comparison, siblings


def session_doc(name, status="passed", strict=0.5, n=20, verdict="pass", baseline=0.45):
    return {
        "schema": 1, "session": name, "status": status,
        "error": None if status == "passed" else {"message": "server exited with code 1", "log_tail": ""},
        "config": {"model": name.split("-")[1]},
        "metrics": {"strict_match": strict, "strict_match_stderr": 0.1, "flexible_extract": strict,
                    "flexible_extract_stderr": 0.1, "n": n} if status == "passed" else None,
        "gate": {"verdict": verdict, "baseline": {"accuracy": {"strict_match": baseline}}},
        "server_metrics": {"output_tokens_per_s": 123.4, "requests_per_s": 1.5, "latency_p50_s": 2.0,
                           "latency_p90_s": 4.5},
        "timings": {"server_ready_s": 30.0, "eval_s": 12.0, "total_s": 50.0},
    }


def test_markdown_rows_and_failures():
    text = report.markdown([session_doc("gsm8k-a-cpu-vllm-fp16-tp1"),
                            session_doc("gsm8k-b-cpu-vllm-fp16-tp1", status="failed")])
    assert ("| `gsm8k-a-cpu-vllm-fp16-tp1` | passed | 0.5000 ± 0.1000 | 0.5000 ± 0.1000 | 20 | 0.4500 | pass | "
            "123.4 | 1.50 | 2.00 / 4.50 | 30 | 12 | 50 |") in text
    assert "- `gsm8k-b-cpu-vllm-fp16-tp1`: failed: server exited with code 1" in text


def test_summary_stays_under_the_limit():
    docs = [session_doc(f"gsm8k-m{i}-cpu-vllm-fp16-tp1") for i in range(400)]
    text = report.markdown(docs, limit_bytes=20_000)
    assert len(text.encode()) < 20_000 and "more sessions: see the artifacts" in text


def test_write_report_skips_foreign_files_and_plots(tmp_path):
    require_module("matplotlib")
    results.write_atomic(tmp_path / "gsm8k-a-cpu-vllm-fp16-tp1.json", session_doc("gsm8k-a-cpu-vllm-fp16-tp1"))
    results.write_atomic(tmp_path / "gsm8k-b-h100-vllm-fp8-tp1.json", session_doc("gsm8k-b-h100-vllm-fp8-tp1"))
    (tmp_path / "notes.json").write_text('{"hello": "world"}')
    warnings = []
    paths = report.write_report(tmp_path, tmp_path / "out", warnings.append)
    assert warnings == [f"skipping {tmp_path / 'notes.json'}: not a session JSON"]
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gsm8k-b-h100-vllm-fp8-tp1" in paths["markdown"].read_text()


def test_a_file_that_does_not_fit_the_model_is_skipped_naming_the_key(tmp_path):
    results.write_atomic(tmp_path / "gsm8k-a-cpu-vllm-fp16-tp1.json", session_doc("gsm8k-a-cpu-vllm-fp16-tp1"))
    odd = {**session_doc("gsm8k-b-cpu-vllm-fp16-tp1"), "timings": {"eval_s": 12.0, "warp_s": 1.0}}
    results.write_atomic(tmp_path / "gsm8k-b-cpu-vllm-fp16-tp1.json", odd)
    warnings = []
    documents = report.load_results(tmp_path, warnings.append)
    assert [d["session"] for d in documents] == ["gsm8k-a-cpu-vllm-fp16-tp1"]
    assert warnings == [f"skipping {tmp_path / 'gsm8k-b-cpu-vllm-fp16-tp1.json'}: timings.warp_s: Extra inputs are "
                        "not permitted"]


def test_empty_or_missing_results_dir_is_a_clear_error(tmp_path):
    with pytest.raises(BenchError, match="no session JSON found"):
        report.load_results(tmp_path, print)
    with pytest.raises(BenchError, match="no such results directory"):
        report.load_results(tmp_path / "absent", print)


PROMETHEUS = """\
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} %(tokens)s
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} %(stop)s
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} %(length)s
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="m"} %(b1)s
vllm:e2e_request_latency_seconds_bucket{engine="0",le="2.0",model_name="m"} %(b2)s
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} %(binf)s
"""


def test_server_metrics_are_deltas_over_the_eval():
    before = server_metrics.parse(PROMETHEUS % {"tokens": 100, "stop": 2, "length": 0, "b1": 2, "b2": 2,
                                                "binf": 2})
    after = server_metrics.parse(PROMETHEUS % {"tokens": 1100, "stop": 10, "length": 2, "b1": 6, "b2": 12,
                                               "binf": 12})
    summary = server_metrics.summarize("vllm", before, after, eval_s=10.0)
    assert summary["output_tokens"] == 1000 and summary["output_tokens_per_s"] == 100.0
    assert summary["requests"] == 10 and summary["requests_per_s"] == 1.0 and summary["truncations"] == 2
    # Over the eval: 4 requests took <= 1 s, 6 more <= 2 s; the median lies 1/6 into the (1, 2] bucket.
    assert summary["latency_p50_s"] == pytest.approx(1.167)
    assert summary["latency_p90_s"] == pytest.approx(1.833)
    assert server_metrics.summarize("vllm", None, after, 10.0)["output_tokens"] is None


def test_invalid_rates():
    samples = [{"strict_answer": "[invalid]", "flexible_answer": "3"}, {"strict_answer": "4", "flexible_answer": "4"}]
    assert server_metrics.invalid_rates(samples) == {"strict_invalid_rate": 0.5, "flexible_invalid_rate": 0.0}


def overview_set(tmp_path):
    from test_report_browser import OVERVIEW_MATRIX, overview_results

    (tmp_path / "matrix.yaml").write_text(OVERVIEW_MATRIX)
    return overview_results(tmp_path / "results"), tmp_path / "matrix.yaml"


def test_summary_leads_with_the_counts_the_regressions_and_a_grid_per_model(tmp_path, monkeypatch):
    from test_report_browser import ERRORED, REGRESSED

    results_dir, matrix_file = overview_set(tmp_path)
    monkeypatch.setenv("GSM8K_MATRIX", str(matrix_file))  # as nox -s report reads it
    assert report.main([str(results_dir), str(tmp_path / "out")]) == 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    lines = summary.splitlines()
    assert lines[:3] == ["## GSM8k matrix overview", "", "✅ **4** passed · ❌ **1** regressed · 💥 **1** errored · "
                         "⚪ **1** not gated · · **1** not run (of 8 in matrix.yaml)"]
    attention = lines[lines.index("### Regressions and errors") + 2:][:2]
    assert attention[0].startswith(f"- ❌ `{REGRESSED}`: regression against references/{REGRESSED}.json: "
                                   "strict_match 0.7075 vs 0.8000")
    assert attention[1] == f"- 💥 `{ERRORED}`: failed: server start: server exited with code 1"
    assert attention[0].endswith("…") and "flexible_extract" not in attention[0]  # brief; report.md has it all
    full = (tmp_path / "out" / "report.md").read_text()
    assert f"- ❌ `{REGRESSED}`: regression against" in full and " / 1 sessions); lost " in full
    grid = lines[lines.index("### m") + 2:][:4]
    assert grid == ["| precision tp | h100 vllm | h100 sglang | mi355x vllm | mi355x sglang |", "|---|---|---|---|---|",
                    "| fp16 tp1 | ✅ 0.800 (+0.0) | ✅ 0.800 | 💥 | ✅ 0.800 |",
                    "| fp8 tp1 | ❌ 0.708 (-9.2) | ⚪ 0.800 (+0.0) | · | ✅ 0.790 (-1.0) |"]
    assert summary.index("## GSM8k matrix overview") < summary.index("## GSM8k results")
    assert (tmp_path / "out" / "report.md").read_text().startswith("## GSM8k matrix overview\n")


def test_a_partial_dispatch_counts_as_not_run_only_the_sessions_it_dispatched(tmp_path, monkeypatch):
    """The workflow passes the plan's sessions: matrix.yaml's other sessions are not "not run" (their cell is
    blank), and a dispatched session with no result -- an ad-hoc one outside matrix.yaml too -- is."""
    from test_report_browser import NOT_RUN

    results_dir, matrix_file = overview_set(tmp_path)
    monkeypatch.setenv("GSM8K_MATRIX", str(matrix_file))
    ran = sorted(json.loads(path.read_text())["session"] for path in results_dir.glob("*.json"))
    adhoc = "gsm8k-m-h100-vllm-fp16-tp1-label-x"
    assert report.main([str(results_dir), str(tmp_path / "out"), "--dispatched", " ".join([*ran, adhoc])]) == 0
    lines = (tmp_path / "out" / "summary.md").read_text().splitlines()
    assert lines[2] == ("✅ **4** passed · ❌ **1** regressed · 💥 **1** errored · ⚪ **1** not gated · "
                        "· **1** not run (of 8 dispatched)")
    grid = lines[lines.index("### m") + 2:][:4]
    assert grid[3] == "| fp8 tp1 | ❌ 0.708 (-9.2) | ⚪ 0.800 (+0.0) |  | ✅ 0.790 (-1.0) |"  # NOT_RUN: not dispatched
    assert "blank: no such combination, or not dispatched." in "\n".join(lines)
    assert lines[lines.index("### m") + 7] == f"Not in a grid (no config, not in matrix.yaml): · `{adhoc}`"
    page = (tmp_path / "out" / "report.html").read_text()
    assert " of 8 sessions dispatched" in page and NOT_RUN not in page
    assert f"title='dispatched, no result'>{adhoc} (not run)</span>" in page


def test_report_refuses_a_broken_matrix_naming_it(tmp_path, monkeypatch, capsys):
    results_dir, matrix_file = overview_set(tmp_path)
    matrix_file.write_text("version: 1\nrunners: {}\n")
    monkeypatch.setenv("GSM8K_MATRIX", str(matrix_file))
    assert report.main([str(results_dir)]) == 1
    assert capsys.readouterr().err == "error: matrix.yaml:1: (top level): missing required key 'frameworks'\n"
    assert not (results_dir / "report.html").exists()


def test_an_unknown_verdict_is_its_own_outcome_and_markdown_cells_are_escaped():
    strange = session_doc("gsm8k-a-cpu-vllm-fp16-tp1", verdict="not_comparable")
    strange["config"] = {"model": "a", "runner": "cpu", "framework": "vllm", "precision": "fp16", "tp": 1}
    strange["gate"]["reason"] = "reference | <b>older</b> protocol"
    view = overview.build([strange], [], None)
    assert view.headline() == [("passed", 0), ("regressed", 0), ("errored", 0), ("not_gated", 0),
                               ("not_comparable", 1)]
    assert overview.css_class("not_comparable") == "v-other v-verdict-not-comparable"
    text = overview.markdown(view)
    assert "- ❔ `gsm8k-a-cpu-vllm-fp16-tp1`: passed: reference \\| &lt;b&gt;older&lt;/b&gt; protocol" in text
    assert "| fp16 tp1 | ❔ not_comparable 0.500 |" in text
    page = html_page.render([strange], [], [], view)
    assert ("<td class='cell v-other v-verdict-not-comparable' data-outcome='not_comparable' title='"
            "gsm8k-a-cpu-vllm-fp16-tp1\nnot_comparable · strict-match 0.5000 (n=20)") in page
    assert "<b>older</b>" not in page


def test_the_page_embeds_answers_up_to_its_budget_regressions_and_named_sessions_first(tmp_path):
    from test_report_browser import ERRORED, REGRESSED

    results_dir, _ = overview_set(tmp_path)
    documents = report.load_results(results_dir, print)
    deltas = siblings.deltas(documents, run_comparison.gate_settings())
    view = overview.build(documents, deltas, None)
    sessions, _, blocks = html_page.page_data(documents, deltas, view)
    one = len(html_page._json_text(blocks["0"]).encode())  # every session here answers 400 questions alike
    budget = 2 * one + one // 2
    kept = html_page.embedded_blocks(sessions, blocks, budget)
    embedded = {s["session"] for s in sessions if s["embedded"]}
    assert embedded == {REGRESSED, ERRORED, "gsm8k-m-h100-sglang-fp16-tp1"}  # the errored one has no answers
    assert set(kept) == {s["key"] for s in sessions if s["embedded"]}
    named = html_page.embedded_blocks(sessions, blocks, budget, first=["gsm8k-m-mi355x-sglang-*"])
    assert {s["session"] for s in sessions if s["embedded"]} == {
        "gsm8k-m-mi355x-sglang-fp16-tp1", "gsm8k-m-mi355x-sglang-fp8-tp1", ERRORED}
    assert len(named) == 3

    page = html.unescape(html_page.render(documents, deltas, [], view, budget=budget))
    assert page.count("<script type='application/json' id='data-s-") == 3
    assert ("Per-question answers of 3 of 7 sessions are in this page (it embeds at most 0 MB of them: regressions "
            "and errors first, then by name); the other sessions' stay in their session JSONs. To put chosen "
            "sessions' answers in the page first: nox -s report -- RESULTS_DIR OUT_DIR --questions 'PATTERN'") in page
    assert "every session's are here" in html.unescape(html_page.render(documents, deltas, [], view))


def test_report_command_embeds_the_named_sessions_first(tmp_path, monkeypatch):
    results_dir, matrix_file = overview_set(tmp_path)
    monkeypatch.setenv("GSM8K_MATRIX", str(matrix_file))
    fp8 = json.loads((results_dir / "gsm8k-m-mi355x-sglang-fp8-tp1.json").read_text())
    _, _, blocks = html_page.page_data([fp8], [])
    monkeypatch.setattr(html_page, "QUESTION_BUDGET_BYTES", len(html_page._json_text(blocks["0"]).encode()))
    assert report.main([str(results_dir), "--questions", "gsm8k-m-mi355x-sglang-fp8-*"]) == 0
    page = (results_dir / "report.html").read_text()
    assert "Per-question answers of 1 of 7 sessions" in page
    keys = {s["session"]: s["key"] for s in json.loads(page.split("id='data-sessions'>")[1].split("</script>")[0])}
    assert page.count("id='data-s-") == 1 and f"id='data-s-{keys['gsm8k-m-mi355x-sglang-fp8-tp1']}'" in page


def test_plots_beyond_their_budget_are_links_to_the_files_beside_the_page(tmp_path, monkeypatch):
    require_module("matplotlib")
    results_dir, _ = overview_set(tmp_path)
    paths = report.write_report(results_dir, tmp_path / "out")
    assert paths["html"].read_text().count("src='data:image/png;base64,") == 2  # report.png, forest-m.png
    monkeypatch.setattr(html_page, "PLOT_BUDGET_BYTES", paths["plot"].stat().st_size)
    page = report.write_report(results_dir, tmp_path / "out")["html"].read_text()
    assert page.count("src='data:image/png;base64,") == 1
    assert "<a href='forest-m.png'><img alt='forest-m.png' src='forest-m.png' loading='lazy'></a>" in page
    assert "1 of 2 plots are not in this page" in html.unescape(page)
    assert (tmp_path / "out" / "forest-m.png").is_file()
