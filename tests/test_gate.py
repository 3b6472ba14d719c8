"""The regression gate's statistics and its edge cases (pure; no servers)."""

from __future__ import annotations

import math
import tempfile
import textwrap
from pathlib import Path

import pytest
from conftest import MINIMAL, ROOT, parse, require_module

from gsm8k_bench.core.errors import ConfigError
from gsm8k_bench.verdicts import gate
from gsm8k_bench.verdicts.protocol import PROTOCOL_KEYS, REASONING_DEFAULTS

binomtest = require_module("scipy.stats").binomtest
PROTOCOL = {"endpoint": "/v1/completions", "apply_chat_template": False, "fewshot_as_multiturn": False,
            "num_fewshot": 5, "max_gen_toks": 256, "until": ["Question:", "</s>", "<|im_end|>"],
            # a non-reasoning run's reasoning settings (a baseline that omits them means these)
            "reasoning_parser": None, "reasoning_effort": None, "chat_template_kwargs": {},
            "answer_extraction": "stock"}


def baselines(*entries, confidence=0.95, tolerance=0.02):
    return gate.Baselines(gate.GateSettings(confidence, tolerance), tuple(entries))


def entry(n=1319, strict=0.80, flexible=None, protocol=PROTOCOL, source="", **filters):
    accuracy = {"strict_match": strict} | ({"flexible_extract": flexible} if flexible is not None else {})
    return gate.Baseline({"model": "tiny", **filters}, n, protocol, accuracy, source)


@pytest.fixture(scope="module")
def combo():
    return parse(MINIMAL).get("gsm8k-tiny-h100-vllm-fp8-tp1")


def metrics(strict, n, flexible=None):
    return {"strict_match": strict, "flexible_extract": strict if flexible is None else flexible, "n": n}


def scipy_upper(k: int, n: int, confidence: float) -> float:
    """The same one-sided Wilson bound, computed by SciPy: an independent implementation."""
    return binomtest(k, n, alternative="less").proportion_ci(confidence_level=confidence, method="wilson").high


@pytest.mark.parametrize(("k", "n", "confidence"), [
    (950, 1319, 0.95), (0, 20, 0.95), (20, 20, 0.95), (7, 20, 0.99), (1, 1, 0.9), (50, 100, 0.95),
    (1000, 1319, 0.5), (3, 50, 0.999),
])
def test_wilson_upper_bound_matches_scipy(k, n, confidence):
    assert gate.wilson_upper(k / n, n, confidence) == pytest.approx(scipy_upper(k, n, confidence), abs=1e-12)


def test_the_gate_settings_are_pinned():
    # A doubled tolerance or a looser confidence would let real drops pass: the numbers are fixed here.
    # One metric gates (strict_match); a session run alone is a family of one.
    assert gate.GateSettings() == gate.GateSettings(confidence=0.95, tolerance=0.02, metric="strict_match", family=1)
    assert gate.load_baselines(ROOT / "baselines.yaml").settings == gate.GateSettings(0.95, 0.02, "strict_match")
    assert baselines_file_settings("version: 1\n") == gate.GateSettings(0.95, 0.02, "strict_match")
    assert baselines_file_settings("version: 1\ngate: {confidence: 0.5, tolerance: 0}\n") == \
        gate.GateSettings(0.5, 0.0)
    assert baselines_file_settings("version: 1\ngate: {metric: flexible_extract}\n").metric == "flexible_extract"


def baselines_file_settings(text: str) -> gate.GateSettings:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "baselines.yaml"
        path.write_text(text)
        return gate.load_baselines(path).settings


def test_a_full_verdict_against_an_independent_bound(combo):
    # 950/1319 = 0.7202 against 0.80 - 0.02: SciPy's bound is 0.7401 < 0.78, a regression on both metrics;
    # flexible 1100/1319 = 0.834 passes a 0.80 baseline.
    k, n = 950, 1319
    upper = scipy_upper(k, n, 0.95)
    verdict = gate.judge(baselines(entry(strict=0.80, flexible=0.80, source="run 7")), combo, PROTOCOL,
                         metrics(k / n, n, 1100 / n))
    strict_upper, flexible_upper = upper, scipy_upper(1100, n, 0.95)
    assert verdict == {
        "verdict": "regression", "confidence": 0.95, "tolerance": 0.02,
        "baseline": {"filters": {"model": "tiny"}, "n": 1319,
                     "accuracy": {"strict_match": 0.80, "flexible_extract": 0.80}, "source": "run 7"},
        "checks": [
            {"metric": "strict_match", "observed": k / n, "baseline": 0.80, "threshold": 0.80 - 0.02,
             "upper_bound": pytest.approx(strict_upper, abs=1e-9), "regression": True},
            {"metric": "flexible_extract", "observed": 1100 / n, "baseline": 0.80, "threshold": 0.80 - 0.02,
             "upper_bound": pytest.approx(flexible_upper, abs=1e-9), "regression": False},
        ],
        "reason": f"strict_match 0.7202: upper bound {strict_upper:.4f} < 0.7800 (baseline 0.8000 - 0.02); "
                  f"flexible_extract 0.8340: upper bound {flexible_upper:.4f} >= 0.7800 (baseline 0.8000 - 0.02)",
        "method": "scalar baseline: one-sided Wilson score bound",
    }
    assert round(strict_upper, 4) == 0.7401
    assert gate.describe_regression(verdict) == (
        "regression: strict_match 0.7202 (upper bound 0.7401 < 0.7800 at 95% one-sided; baseline 0.8000 - 0.02)")


def exactly_at_the_tolerance(tolerance: float) -> tuple[int, int, float]:
    """A run (k of n) and a baseline whose threshold `baseline - tolerance` equals the run's upper bound,
    to the last bit."""
    for n in range(20, 2000):
        k = n // 2
        upper = gate.wilson_upper(k / n, n, 0.95)
        if (upper + tolerance) - tolerance == upper:
            return k, n, upper + tolerance
    raise AssertionError("no exact case found")


def test_an_upper_bound_exactly_at_the_threshold_passes_and_just_below_fails(combo):
    k, n, expected = exactly_at_the_tolerance(0.02)
    at = gate.judge(baselines(entry(n=n, strict=expected)), combo, PROTOCOL, metrics(k / n, n))
    (check,) = at["checks"]
    assert check["threshold"] == gate.wilson_upper(k / n, n, 0.95)  # the bound sits on the threshold
    assert at["verdict"] == "pass" and check["regression"] is False
    # One more correct answer short, or a tolerance half as wide, and it is a regression.
    fewer = gate.judge(baselines(entry(n=n, strict=expected)), combo, PROTOCOL, metrics((k - 1) / n, n))
    assert fewer["verdict"] == "regression"
    tighter = gate.judge(baselines(entry(n=n, strict=expected), tolerance=0.01), combo, PROTOCOL,
                         metrics(k / n, n))
    assert tighter["verdict"] == "regression"
    higher = gate.judge(baselines(entry(n=n, strict=expected + 0.001)), combo, PROTOCOL, metrics(k / n, n))
    assert higher["verdict"] == "regression"


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


FULL_PROTOCOL = ("protocol: {endpoint: /v1/completions, apply_chat_template: false, fewshot_as_multiturn: false, "
                 "num_fewshot: 5, max_gen_toks: 256, until: [Q]}")
ENTRY_HEAD = f"version: 1\nbaselines:\n  - model: tiny\n    n: 5\n    {FULL_PROTOCOL}\n"


@pytest.mark.parametrize(("text", "message"), [
    ("version: 1\ngate: {confidence: 1.5}\n", "baselines.yaml:2: gate.confidence: must be in [0.5, 1), got 1.5"),
    ("version: 1\ngate: {confidence: 0.4}\n", "baselines.yaml:2: gate.confidence: must be in [0.5, 1), got 0.4"),
    ("version: 1\ngate: {confidence: 1}\n", "baselines.yaml:2: gate.confidence: must be in [0.5, 1), got 1.0"),
    # The key's own line, not its mapping's: each bad key comes second.
    ("version: 1\ngate:\n  confidence: 0.9\n  tolerance: 1\n",
     "baselines.yaml:4: gate.tolerance: must be in [0, 1), got 1.0"),
    ("version: 1\ngate:\n  confidence: 0.9\n  tolerance: -0.01\n",
     "baselines.yaml:4: gate.tolerance: must be in [0, 1), got -0.01"),
    ("version: 1\ngate:\n  confidence: 0.9\n  tolerance: high\n",
     "baselines.yaml:4: gate.tolerance: expected int or float, got 'high'"),
    ("version: 1\ngate:\n  tolerance: 0.1\n  confidence: yes\n",
     "baselines.yaml:4: gate.confidence: expected int or float, got True"),
    ("version: 1\ngate:\n  tolerance: 0.1\n  confidence: 0.3\n",
     "baselines.yaml:4: gate.confidence: must be in [0.5, 1), got 0.3"),
    ("version: 1\ngate: {tolerence: 0.1}\n", "baselines.yaml:2: gate.tolerence: unknown key 'tolerence'; did you "
     "mean 'tolerance'? Allowed: confidence, metric, tolerance"),
    ("version: 1\ngate:\n  tolerance: 0.02\n  metric: exact_match\n", "baselines.yaml:4: gate.metric: must be one "
     "of strict_match, flexible_extract, got 'exact_match'"),
    ("gate: {}\n", "baselines.yaml:1: (top level): missing required key 'version'"),
    ("version: 1\nmodels: {}\n", "baselines.yaml:2: (top level).models: unknown key 'models' Allowed: baselines, "
     "gate, version"),
    ("version: 1\nbaselines: {model: x}\n", "baselines.yaml:2: baselines: expected list, got {'model': 'x'}"),
    ("version: 1\nbaselines:\n  - model: tiny\n    n: 20\n    strict_match: 0.1\n    protocol: {}\n",
     "baselines.yaml:6: baselines[0].protocol: missing required key 'endpoint'"),
    (ENTRY_HEAD + "    strict_match: 2\n",
     "baselines.yaml:6: baselines[0].strict_match: an accuracy in [0, 1], got 2.0"),
    (ENTRY_HEAD + "    flexible_extract: -0.5\n",
     "baselines.yaml:6: baselines[0].flexible_extract: an accuracy in [0, 1], got -0.5"),
    (ENTRY_HEAD + "    strict_match: half\n",
     "baselines.yaml:6: baselines[0].strict_match: expected int or float, got 'half'"),
    (ENTRY_HEAD, "baselines.yaml:3: baselines[0]: needs at least one of strict_match, flexible_extract"),
    (ENTRY_HEAD.replace("n: 5", "n: 0") + "    strict_match: 0.5\n", "baselines.yaml:4: baselines[0].n: must be >= 1, "
     "got 0"),
    (ENTRY_HEAD.replace("[Q]}", "[Q], seed: 1}") + "    strict_match: 0.5\n",
     "baselines.yaml:5: baselines[0].protocol.seed: unknown key 'seed' Allowed: answer_extraction, "
     "apply_chat_template, chat_template_kwargs, endpoint, fewshot_as_multiturn, max_gen_toks, num_fewshot, "
     "reasoning_effort, reasoning_parser, until"),
    ("version: 1\nbaselines:\n  - {modle: tiny}\n", "baselines.yaml:3: baselines[0].modle: unknown key 'modle'; did "
     "you mean 'model'? Allowed: flexible_extract, framework, model, n, precision, protocol, runner, source, "
     "strict_match, tp"),
])
def test_bad_baselines_name_file_line_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        gate.load_baselines(write(tmp_path, text))
    assert str(info.value) == message


def test_a_yaml_syntax_error_names_the_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        gate.load_baselines(write(tmp_path, "version: 1\nbaselines: [\n"))
    assert str(info.value).startswith("baselines.yaml: YAML syntax error: while parsing a flow node\n")


def test_accuracy_bounds_are_inclusive_and_lists_become_plain(tmp_path):
    loaded = gate.load_baselines(write(tmp_path, ENTRY_HEAD + "    strict_match: 0\n    flexible_extract: 1\n"
                                       "    source: a run\n"))
    (b,) = loaded.entries
    assert b == gate.Baseline({"model": "tiny"}, 5, {**PROTOCOL, "until": ["Q"]}, {"strict_match": 0.0,
                              "flexible_extract": 1.0}, "a run")
    assert type(b.protocol["until"]) is list  # not the loader's line-numbered list


def test_confidence_changes_the_bound():
    assert gate.wilson_upper(0.7, 200, 0.99) > gate.wilson_upper(0.7, 200, 0.9)
    assert not math.isnan(gate.wilson_upper(0.0, 1, 0.95))


def test_every_filter_key_narrows_the_match(combo):
    for filters, matches in (({"framework": "vllm", "tp": 1, "precision": "fp8", "runner": "h100"}, True),
                             ({"framework": "sglang"}, False), ({"tp": 2}, False), ({"precision": "fp16"}, False),
                             ({"model": "other"}, False)):
        assert entry(**filters).matches(combo) is matches, filters


def test_not_gated_reasons_are_exact(combo):
    promote = ("to gate later runs question by question against this one: "
               "nox -s promote -- results/gsm8k-tiny-h100-vllm-fp8-tp1.json")
    assert gate.judge(baselines(), combo, PROTOCOL, metrics(0.1, 1319)) == {
        "verdict": "not_gated", "confidence": 0.95, "tolerance": 0.02, "baseline": None, "checks": [],
        "reason": f"no reference; no baseline for gsm8k-tiny-h100-vllm-fp8-tp1 in baselines.yaml; {promote}",
        "method": None}
    longer = gate.judge(baselines(entry()), combo, {**PROTOCOL, "max_gen_toks": 1024}, metrics(0.1, 1319))
    assert longer["reason"] == ("no reference; protocol differs from the baseline's (baseline, run): "
                                f"{{'max_gen_toks': (256, 1024)}}; {promote}")
    sizes = gate.judge(baselines(entry(n=1319), entry(n=20)), combo, PROTOCOL, metrics(0.1, 200))
    assert sizes["reason"] == ("no reference; baselines exist for n=[20, 1319], this run scored n=200; the first n "
                               f"questions are not a random sample, so runs of other sizes are not gated; {promote}")
    # A run that reports no n is never gated, not even against a one-question baseline.
    no_n = gate.judge(baselines(entry(n=1)), combo, PROTOCOL, {"strict_match": 0.0})
    assert no_n["verdict"] == "not_gated" and "this run scored n=0" in no_n["reason"]


def test_protocol_of_takes_the_stop_sequences_from_lm_eval():
    run = {**PROTOCOL, "until": ["ignored"], "lm_eval_model": "local-completions"}
    assert gate.protocol_of(run, {"until": ["Question:"], "do_sample": False}) == {**PROTOCOL,
                                                                                   "until": ["Question:"]}
    # A run recorded before the reasoning settings existed was a non-reasoning run.
    assert gate.protocol_of({}, {}) == {**dict.fromkeys(PROTOCOL_KEYS), **REASONING_DEFAULTS,
                                        "until": []}


def test_an_upper_bound_never_exceeds_one():
    # For p = 1 the formula is 1 exactly, but floating point lands just above it for some n (5, 7, 8, ...).
    bounds = [gate.wilson_upper(1.0, n, 0.95) for n in range(1, 60)]
    assert max(bounds) == 1.0 and min(bounds) > 1 - 1e-12


def test_the_loaders_refusals_name_the_file_and_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        gate.load_baselines(write(tmp_path, "version: 1\nversion: 1\n"))
    assert str(info.value) == "baselines.yaml:2: duplicate key 'version' (first at line 1)"
    with pytest.raises(ConfigError) as info:
        gate.load_baselines(write(tmp_path, "version: &v 1\ngate: {confidence: *v}\n"))
    assert str(info.value).startswith("baselines.yaml:1: YAML anchors and aliases")


@pytest.mark.parametrize(("line", "key"), [("model: tiny", "n"), ("model: tiny", "protocol"), ("n: 5", "model")])
def test_a_baseline_needs_model_n_and_protocol(tmp_path, line, key):
    text = ENTRY_HEAD.replace(f"    {line}\n" if key != "model" else "  - model: tiny\n    n: 5\n",
                              "" if key != "model" else "  - n: 5\n")
    text = text.replace(f"    {FULL_PROTOCOL}\n", "") if key == "protocol" else text
    text = text.replace("    n: 5\n", "") if key == "n" else text
    with pytest.raises(ConfigError) as info:
        gate.load_baselines(write(tmp_path, text + "    strict_match: 0.5\n"))
    assert str(info.value) == f"baselines.yaml:3: baselines[0]: missing required key '{key}'"


def test_a_baseline_without_source_has_an_empty_one_and_plain_mappings(tmp_path):
    loaded = gate.load_baselines(write(tmp_path, ENTRY_HEAD.replace("[Q]}", "[Q], chat_template_kwargs: {a: 1}}")
                                       + "    strict_match: 0.5\n"))
    (b,) = loaded.entries
    assert b.source == ""
    assert b.protocol["chat_template_kwargs"] == {"a": 1}
    assert type(b.protocol["chat_template_kwargs"]) is dict  # not the loader's line-numbered mapping


def test_a_scalar_verdict_and_its_regression_message_exactly(combo):
    verdict = gate.judge(baselines(entry(strict=0.8, flexible=0.9)), combo, PROTOCOL, metrics(0.5, 1319, 0.6))
    assert verdict["baseline"] == {"filters": {"model": "tiny"}, "n": 1319,
                                   "accuracy": {"strict_match": 0.8, "flexible_extract": 0.9}, "source": ""}
    upper_strict = round(gate.wilson_upper(0.5, 1319, 0.95), 4)
    upper_flexible = round(gate.wilson_upper(0.6, 1319, 0.95), 4)
    assert verdict["reason"] == (
        f"strict_match 0.5000: upper bound {upper_strict:.4f} < 0.7800 (baseline 0.8000 - 0.02); "
        f"flexible_extract 0.6000: upper bound {upper_flexible:.4f} < 0.8800 (baseline 0.9000 - 0.02)")
    assert gate.describe_regression(verdict) == (
        f"regression: strict_match 0.5000 (upper bound {upper_strict:.4f} < 0.7800 at 95% one-sided; baseline "
        f"0.8000 - 0.02); flexible_extract 0.6000 (upper bound {upper_flexible:.4f} < 0.8800 at 95% one-sided; "
        "baseline 0.9000 - 0.02)")

