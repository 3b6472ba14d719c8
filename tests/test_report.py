"""Report: Markdown, plot and step summary from session JSONs; server /metrics parsing."""

from __future__ import annotations

import pytest
from conftest import require_module

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.evaluation import server_metrics
from gsm8k_bench.reporting import report


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
