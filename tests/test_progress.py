"""The progress line and the session's last lines: their text, pure (the real runs are in
test_progress_integration.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.evaluation import progress
from gsm8k_bench.evaluation.progress import Snapshot, format_line, question_count, stall_reason
from gsm8k_bench.reporting import console_summary
from gsm8k_bench.session.options import parse_session_args

PLAIN = re.compile(r"^[\x20-\x7e–]*$")  # printable, no carriage return or escape sequence


def snap(**changes) -> Snapshot:
    values = {"elapsed_s": 40.0, "answered": 10, "total": 50, "in_flight": 8, "answering": True,
              "tokens_per_s": 123.45, "idle_s": 1.0}
    return Snapshot(**{**values, **changes})


def test_the_line_says_answered_in_flight_rate_and_eta():
    line = format_line(snap(), stall_timeout_s=300)
    assert line == "eval 10/50 answered | 8 in flight | 123.5 output tok/s | 40 s elapsed | ETA 2 min 40 s"
    assert PLAIN.match(line)
    assert "ETA" not in format_line(snap(answered=0), 300)  # nothing to extrapolate from
    assert "ETA" not in format_line(snap(answered=50), 300)
    assert "– output tok/s" in format_line(snap(tokens_per_s=None), 300)


def test_the_line_says_when_nothing_moves_and_when_it_stalled():
    assert "no progress" not in format_line(snap(idle_s=9), 300)
    assert format_line(snap(idle_s=75), 300).endswith("| no progress for 1 min 15 s (stall limit 5 min 00 s)")
    stalled = format_line(snap(idle_s=301, answering=False), 300)
    assert "8 in flight when /metrics last answered" in stalled
    assert stalled.endswith("STALLED: no progress for 5 min 01 s")
    assert stall_reason(snap(idle_s=301)) == ("no progress for 301 s with 8 requests in flight: "
                                              "the server looks hung")
    assert stall_reason(snap(idle_s=301, answering=False)).endswith("hung (it no longer answers /metrics)")


def test_question_count_is_the_first_limit_questions(tmp_path: Path):
    assert question_count(None, None) == progress.GSM8K_TEST_QUESTIONS == 1319
    assert question_count(20, None) == 20
    (tmp_path / "test.jsonl").write_text('{"q": 1}\n{"q": 2}\n{"q": 3}\n\n')
    assert question_count(None, tmp_path) == 3
    assert question_count(2, tmp_path) == 2 and question_count(10, tmp_path) == 3


def test_progress_options_and_their_defaults():
    options = parse_session_args("gsm8k-x", [])
    assert (options.progress_interval_s, options.stall_timeout_s) == (30.0, 300.0)
    options = parse_session_args("gsm8k-x", ["--progress-interval", "2", "--stall-timeout", "20"])
    assert (options.progress_interval_s, options.stall_timeout_s) == (2.0, 20.0)
    with pytest.raises(BenchError, match=r"--stall-timeout: must be >= 1\.0"):
        parse_session_args("gsm8k-x", ["--stall-timeout", "0"])


def document(gate: dict | None, status: str = "passed") -> dict:
    return {
        "session": "gsm8k-m-cpu-vllm-fp16-tp1", "status": status,
        "error": None if status == "passed" else {"message": "gate: regression: strict_match ..."},
        "metrics": {"strict_match": 0.55, "flexible_extract": 0.6, "n": 200},
        "gate": gate, "server_metrics": {"output_tokens_per_s": 812.34},
        "timings": {"server_ready_s": 29.81, "eval_s": 55.04},
    }


def test_summary_table_of_a_gated_run():
    gate = {"verdict": "regression", "confidence": 0.95, "tolerance": 0.02, "reason": "...", "checks": [
        {"metric": "strict_match", "observed": 0.55, "threshold": 0.68, "upper_bound": 0.6062, "regression": True},
        {"metric": "flexible_extract", "observed": 0.6, "threshold": 0.6, "upper_bound": 0.6543,
         "regression": False}]}
    lines = console_summary.lines(document(gate, "failed"), Path("/r/x.json"))
    assert lines == [
        "gsm8k-m-cpu-vllm-fp16-tp1: failed: gate: regression: strict_match ...",
        "  metric            accuracy  upper bound (95%)  baseline - tol    n  verdict",
        "  strict-match        0.5500             0.6062          0.6800  200  regression",
        "  flexible-extract    0.6000             0.6543          0.6000  200  pass",
        "  output tokens/s  812.3",
        "  time to ready    29.8 s",
        "  eval time        55.0 s",
        "  result           /r/x.json",
    ]


def test_summary_table_of_an_ungated_run_still_shows_the_bound():
    from gsm8k_bench.verdicts.gate import wilson_upper

    gate = {"verdict": "not_gated", "confidence": 0.95, "checks": [], "reason": "no baseline for it"}
    lines = console_summary.lines(document(gate), Path("x.json"))
    assert lines[0] == "gsm8k-m-cpu-vllm-fp16-tp1: passed"
    assert lines[2].split() == ["strict-match", "0.5500", f"{wilson_upper(0.55, 200, 0.95):.4f}", "–", "200",
                                "not", "gated"]
    assert "  not gated: no baseline for it" in lines
    assert all(PLAIN.match(line) for line in lines)
