"""The regression gate's statistics and its edge cases (pure; no servers)."""

from __future__ import annotations

import math
import textwrap

import pytest
from conftest import MINIMAL, parse

from gsm8k_bench import gate
from gsm8k_bench.errors import ConfigError

PROTOCOL = {"endpoint": "/v1/completions", "apply_chat_template": False, "fewshot_as_multiturn": False,
            "num_fewshot": 5, "max_gen_toks": 256, "until": ["Question:", "</s>", "<|im_end|>"]}


def baselines(*entries, confidence=0.95, tolerance=0.02):
    return gate.Baselines(gate.GateSettings(confidence, tolerance), tuple(entries))


def entry(n=1319, strict=0.80, flexible=None, protocol=PROTOCOL, **filters):
    accuracy = {"strict_match": strict} | ({"flexible_extract": flexible} if flexible is not None else {})
    return gate.Baseline({"model": "tiny", **filters}, n, protocol, accuracy)


@pytest.fixture(scope="module")
def combo():
    return parse(MINIMAL).get("gsm8k-tiny-h100-vllm-fp8-tp1")


def metrics(strict, n, flexible=None):
    return {"strict_match": strict, "flexible_extract": strict if flexible is None else flexible, "n": n}


def test_wilson_upper_bound_known_values():
    # p=0.5, n=100, 95% one-sided (z=1.6449): upper bound 0.5812 (Wilson score formula).
    assert gate.wilson_upper(0.5, 100, 0.95) == pytest.approx(0.5812, abs=1e-4)
    assert gate.wilson_upper(0.0, 20, 0.95) == pytest.approx(2.7055 / 20 / (1 + 2.7055 / 20), abs=1e-4)
    assert gate.wilson_upper(1.0, 5, 0.95) == 1.0
    assert gate.wilson_upper(0.3, 1319, 0.99) > 0.3


def test_a_real_drop_on_a_full_run_is_a_regression(combo):
    verdict = gate.judge(baselines(entry()), combo, PROTOCOL, metrics(0.72, 1319))
    assert verdict["verdict"] == "regression"
    (check,) = verdict["checks"]
    assert check["regression"] and check["upper_bound"] < 0.78
    assert "regression: strict_match 0.7200" in gate.describe_regression(verdict)


def test_the_same_drop_on_a_small_run_is_noise(combo):
    small = entry(n=20)
    assert gate.judge(baselines(small), combo, PROTOCOL, metrics(0.65, 20))["verdict"] == "pass"


def test_accuracy_zero_and_one(combo):
    assert gate.judge(baselines(entry(strict=0.0)), combo, PROTOCOL, metrics(0.0, 1319))["verdict"] == "pass"
    assert gate.judge(baselines(entry(strict=1.0)), combo, PROTOCOL, metrics(1.0, 1319))["verdict"] == "pass"
    dropped = gate.judge(baselines(entry(strict=1.0)), combo, PROTOCOL, metrics(0.9, 1319))
    assert dropped["verdict"] == "regression"
    collapse = gate.judge(baselines(entry(strict=0.5, n=50)), combo, PROTOCOL, metrics(0.0, 50))
    assert collapse["verdict"] == "regression"  # 0/50 is significant even on a small run


def test_a_run_above_its_baseline_passes(combo):
    verdict = gate.judge(baselines(entry(strict=0.5, flexible=0.6)), combo, PROTOCOL, metrics(0.9, 1319, 0.95))
    assert verdict["verdict"] == "pass" and len(verdict["checks"]) == 2
    assert not any(c["regression"] for c in verdict["checks"])


def test_either_metric_regressing_fails(combo):
    verdict = gate.judge(baselines(entry(strict=0.5, flexible=0.9)), combo, PROTOCOL, metrics(0.6, 1319, 0.7))
    assert verdict["verdict"] == "regression"
    assert [c["metric"] for c in verdict["checks"] if c["regression"]] == ["flexible_extract"]


def test_no_baseline_is_not_gated(combo):
    verdict = gate.judge(baselines(), combo, PROTOCOL, metrics(0.1, 1319))
    assert verdict["verdict"] == "not_gated" and "no baseline" in verdict["reason"]
    other_runner = entry(runner="mi355x")
    assert gate.judge(baselines(other_runner), combo, PROTOCOL, metrics(0.1, 1319))["verdict"] == "not_gated"


def test_protocol_mismatch_is_not_gated(combo):
    chat = {**PROTOCOL, "endpoint": "/v1/chat/completions", "apply_chat_template": True}
    verdict = gate.judge(baselines(entry(protocol=chat)), combo, PROTOCOL, metrics(0.1, 1319))
    assert verdict["verdict"] == "not_gated"
    assert "protocol differs" in verdict["reason"] and "endpoint" in verdict["reason"]
    longer = gate.judge(baselines(entry()), combo, {**PROTOCOL, "max_gen_toks": 1024}, metrics(0.1, 1319))
    assert longer["verdict"] == "not_gated" and "max_gen_toks" in longer["reason"]


def test_sample_count_mismatch_is_not_gated(combo):
    verdict = gate.judge(baselines(entry(n=1319)), combo, PROTOCOL, metrics(0.0, 200))
    assert verdict["verdict"] == "not_gated" and "n=[1319]" in verdict["reason"] and "n=200" in verdict["reason"]


def test_most_specific_baseline_wins(combo):
    general, specific = entry(strict=0.9), entry(strict=0.5, runner="h100", precision="fp8")
    verdict = gate.judge(baselines(general, specific), combo, PROTOCOL, metrics(0.6, 1319))
    assert verdict["verdict"] == "pass" and verdict["baseline"]["accuracy"]["strict_match"] == 0.5


def write(tmp_path, text):
    path = tmp_path / "baselines.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_load_baselines_file(tmp_path):
    loaded = gate.load_baselines(write(tmp_path, """\
        version: 1
        gate: {confidence: 0.99, tolerance: 0.01}
        baselines:
          - model: tiny
            runner: h100
            n: 20
            protocol: {endpoint: /v1/completions, apply_chat_template: false, fewshot_as_multiturn: false,
                       num_fewshot: 5, max_gen_toks: 256, until: ["Question:"]}
            strict_match: 0.25
        """))
    assert loaded.settings == gate.GateSettings(0.99, 0.01)
    (b,) = loaded.entries
    assert b.filters == {"model": "tiny", "runner": "h100"} and b.n == 20 and b.accuracy == {"strict_match": 0.25}
    with pytest.raises(ConfigError, match="no such baselines file"):
        gate.load_baselines(tmp_path / "absent.yaml")


@pytest.mark.parametrize(("text", "message"), [
    ("version: 1\ngate: {confidence: 1.5}\n", r"gate\.confidence: must be in \[0\.5, 1\)"),
    ("version: 1\nbaselines:\n  - {model: tiny, n: 20, strict_match: 0.1, protocol: {}}\n",
     r"baselines\[0\]\.protocol: missing required key 'endpoint'"),
    ("version: 1\nbaselines:\n  - {model: tiny, n: 5, strict_match: 2, protocol: {}}\n",
     r"baselines\[0\]\.strict_match: an accuracy in \[0, 1\]"),
    ("version: 1\nbaselines:\n  - {modle: tiny}\n", r"unknown key 'modle'; did you mean 'model'"),
])
def test_bad_baselines_name_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=r"^baselines\.yaml:\d*:? ?.*" + message):
        gate.load_baselines(write(tmp_path, text))


def test_confidence_changes_the_bound():
    assert gate.wilson_upper(0.7, 200, 0.99) > gate.wilson_upper(0.7, 200, 0.9)
    assert not math.isnan(gate.wilson_upper(0.0, 1, 0.95))
