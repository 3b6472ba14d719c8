"""Fleet cost: GPU-hours = wall x GPUs held, and the share spent before the first request."""

from __future__ import annotations

import pytest

from gsm8k_bench.reporting import fleet_cost, report


def doc(session, gpus, timings, vendor="nvidia", status="passed"):
    return {"session": session, "status": status, "timings": timings,
            "config": {"vendor": vendor, "tp": len(gpus) or 1, "gpus": {"ids": gpus} if gpus else None}}


TP4 = doc("gsm8k-a-h100-vllm-fp16-tp4", [0, 1, 2, 3],
          {"env_setup_s": 10.0, "model_prep_s": 0.0, "server_ready_s": 350.0, "eval_s": 1000.0, "total_s": 1440.0})
TP1 = doc("gsm8k-b-h100-vllm-fp16-tp1", [4], {"server_ready_s": 60.0, "total_s": 360.0})
CPU = doc("gsm8k-c-cpu-vllm-fp16-tp1", [], {"server_ready_s": 20.0, "total_s": 40.0}, vendor="cpu")
DIED = {"session": "gsm8k-d-h100-vllm-fp16-tp2", "status": "failed", "timings": {"total_s": 720.0},
        "config": {"tp": 2, "vendor": "nvidia", "gpus": None}}  # a Slurm job that died: the stub's fields


def test_session_cost():
    cost = fleet_cost.session_cost(TP4)
    assert cost["gpus"] == 4 and cost["gpu_hours"] == pytest.approx(1.6)
    assert cost["before_first_request_share"] == pytest.approx(360 / 1440)
    assert fleet_cost.session_cost(CPU)["gpu_hours"] == 0
    died = fleet_cost.session_cost(DIED)
    assert died["gpus"] == 2 and died["gpu_hours"] == pytest.approx(0.4) and died["before_first_request_share"] is None


def test_run_cost_weights_by_gpus():
    total = fleet_cost.run_cost([TP4, TP1, CPU, DIED])
    assert total["gpu_hours"] == pytest.approx(1.6 + 0.1 + 0 + 0.4)
    assert total["before_first_request_gpu_hours"] == pytest.approx((360 * 4 + 60) / 3600)
    # Shares count sessions that reached their first request: the one that died is left out.
    assert total["before_first_request_share"] == pytest.approx((360 * 4 + 60) / 3600 / 1.7)
    assert total["before_first_request_wall_share"] == pytest.approx((360 + 60 + 20) / (1440 + 360 + 40))


def test_report_has_the_fleet_section():
    text = report.markdown([TP4, TP1, CPU])
    assert "### Fleet cost" in text and "| `gsm8k-a-h100-vllm-fp16-tp4` | 4 | 1440 | 1.600 | 25% |" in text
    assert "Run: 1.700 GPU-hours over 3 session(s)" in text
    assert "| `gsm8k-a" not in report.markdown([TP4], limit_bytes=10_000).split("### Fleet cost")[1]


def test_summary_lines_compare_with_one_by_one():
    lines = fleet_cost.summary_lines([TP4, TP1], elapsed_s=1500)
    assert lines[-1].startswith("2 session(s) in 1500 s; one by one they took 1800 s; 1.700 GPU-hours")
