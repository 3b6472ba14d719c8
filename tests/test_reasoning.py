"""Reasoning models: matrix schema and validation, server and lm-eval commands, protocol record and gate,
the answer extraction rule and the chat client's answer parsing (real lm-eval classes, no server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml
from conftest import MINIMAL, ROOT, parse, require
from test_commands import flag, plan_for

from gsm8k_bench.core.errors import ConfigError
from gsm8k_bench.evaluation import harness
from gsm8k_bench.serving import venvs
from gsm8k_bench.session.plan import dry_run_text
from gsm8k_bench.verdicts import gate
from gsm8k_bench.verdicts.protocol import REASONING_DEFAULTS

# A chat model with a reasoning block, on both frameworks of the minimal matrix.
THINKER = MINIMAL + """\
  thinker:
    checkpoint: org/thinker
    protocol: chat
    runners: [h100, mi355x]
    frameworks: [vllm, sglang]
    precisions: [fp8, fp4]
    tp: [1]
    max_model_len: 32768
    checkpoints: {fp4: org/thinker, fp8: org/thinker}
    checkpoint_quantization: {sglang: mxfp4}
    reasoning:
      parser: {vllm: openai_gptoss, sglang: gpt-oss}
      effort: low
"""


def test_reasoning_block_resolves_per_framework():
    m = parse(THINKER)
    vllm, sglang = m.get("gsm8k-thinker-mi355x-vllm-fp4-tp1"), m.get("gsm8k-thinker-mi355x-sglang-fp4-tp1")
    assert (vllm.reasoning_parser, sglang.reasoning_parser) == ("openai_gptoss", "gpt-oss")
    reasoning = vllm.model.reasoning
    assert (reasoning.effort, reasoning.extraction, reasoning.chat_template_kwargs) == ("low", "last-match", {})
    # No max_gen_toks: the budget comes from the context, capped (32768 - 4096 > 16384).
    assert vllm.model.max_gen_toks == 16384 and reasoning.budget_rule == "min(max_model_len - 4096, 16384)"
    # The model's own checkpoint method replaces the precision's (quark on amd) for SGLang only.
    assert (sglang.quantization, vllm.quantization) == ("mxfp4", None)
    assert parse(MINIMAL).get("gsm8k-tiny-mi355x-sglang-fp4-tp1").quantization == "quark"
    assert parse(MINIMAL).get("gsm8k-tiny-mi355x-sglang-fp4-tp1").reasoning_parser is None


def test_budget_from_a_smaller_context_and_an_explicit_one():
    small = parse(THINKER.replace("max_model_len: 32768", "max_model_len: 8192"))
    assert small.models["thinker"].max_gen_toks == 8192 - 4096
    explicit = parse(THINKER.replace("max_model_len: 32768", "max_model_len: 8192\n    max_gen_toks: 2048"))
    assert explicit.models["thinker"].max_gen_toks == 2048
    assert explicit.models["thinker"].reasoning.budget_rule == "max_gen_toks"


@pytest.mark.parametrize(("change", "message"), [
    (("parser: {vllm: openai_gptoss, sglang: gpt-oss}", "parser: {vllm: openai_gptoss}"),
     r"models\.thinker\.reasoning\.parser: missing the 'sglang' parser: the model runs on vllm, sglang"),
    (("parser: {vllm: openai_gptoss, sglang: gpt-oss}", "parser: {vllm: a, sglang: b, trtllm: c}"),
     r"models\.thinker\.reasoning\.parser\.trtllm: unknown key 'trtllm'.*Allowed: sglang, vllm"),
    (("effort: low", "effort: meduim"),
     r"models\.thinker\.reasoning\.effort: unknown reasoning effort 'meduim'; did you mean 'medium'"),
    (("effort: low", "effort: low\n      extraction: first"),
     r"models\.thinker\.reasoning\.extraction: unknown answer extraction 'first'.*Allowed: last-match, stock"),
    (("effort: low", "effort: low\n      parsr: x"), r"models\.thinker\.reasoning\.parsr: unknown key 'parsr'; "
                                                   "did you mean 'parser'"),
    (("protocol: chat", "protocol: completions"), r"models\.thinker\.reasoning: a reasoning model needs protocol: "
                                                  "chat"),
    (("max_model_len: 32768", "max_model_len: 4096"),
     r"models\.thinker\.max_model_len: a reasoning model's output budget is min\(max_model_len - 4096, 16384\); "
     "max_model_len 4096 leaves none"),
    (("max_model_len: 32768", "max_model_len: 8192\n    max_gen_toks: 8192"),
     r"models\.thinker\.max_gen_toks: 8192 leaves no room for the prompt in max_model_len 8192"),
    (("checkpoint_quantization: {sglang: mxfp4}", "checkpoint_quantization: {sglng: mxfp4}"),
     r"models\.thinker\.checkpoint_quantization\.sglng: unknown key 'sglng'; did you mean 'sglang'"),
    (("parser: {vllm: openai_gptoss, sglang: gpt-oss}", "parser: {vllm: openai_gptoss, sglang: ''}"),
     r"models\.thinker\.reasoning\.parser\.sglang: must not be empty"),
])
def test_bad_reasoning_blocks_name_file_line_and_key(change, message):
    old, new = change
    assert old in THINKER
    with pytest.raises(ConfigError, match=r"^matrix\.yaml:\d+: " + message):
        parse(THINKER.replace(old, new))


def test_server_commands_carry_the_parser(matrix):
    for name, parser in (("gsm8k-gpt-oss-120b-b200-vllm-fp4-tp1", "openai_gptoss"),
                         ("gsm8k-gpt-oss-120b-mi355x-sglang-fp4-tp8", "gpt-oss"),
                         ("gsm8k-deepseek-r1-h200-vllm-fp8-tp8", "deepseek_r1"),
                         ("gsm8k-deepseek-r1-mi355x-sglang-fp4-tp8", "deepseek-r1")):
        argv = plan_for(matrix, name).server_argv
        assert flag(argv, "--reasoning-parser") == parser, name
    # DeepSeek-R1's checkpoint is FP8 already: no online quantization flag; gpt-oss keeps its MXFP4.
    assert "--quantization" not in plan_for(matrix, "gsm8k-deepseek-r1-h200-sglang-fp8-tp8").server_argv
    assert flag(plan_for(matrix, "gsm8k-gpt-oss-120b-b200-sglang-fp4-tp1").server_argv, "--quantization") == "mxfp4"
    assert flag(plan_for(matrix, "gsm8k-deepseek-r1-b200-sglang-fp4-tp8").server_argv,
                "--model-path") == "nvidia/DeepSeek-R1-FP4"
    assert "--reasoning-parser" not in plan_for(matrix, "gsm8k-llama-3.3-70b-h100-vllm-fp16-tp4").server_argv


def test_lm_eval_command_and_protocol_record(matrix):
    plan = plan_for(matrix, "gsm8k-gpt-oss-120b-b200-vllm-fp4-tp8")
    argv = plan.lm_eval_argv
    assert flag(argv, "--model") == "local-chat-completions"  # the stock name; the driver runs our subclass
    assert "max_gen_toks=16384" in flag(argv, "--model_args")
    assert json.loads(flag(argv, "--gen_kwargs")) == {"reasoning_effort": "medium"}
    record = plan.settings.protocol_record()
    assert record["lm_eval_model"] == "local-chat-completions" and record["max_gen_toks"] == 16384
    assert {k: record[k] for k in REASONING_DEFAULTS} == {
        "reasoning_parser": "openai_gptoss", "reasoning_effort": "medium", "chat_template_kwargs": {},
        "answer_extraction": "last-match"}
    stock = plan_for(matrix, "gsm8k-llama-3.3-70b-h100-vllm-fp16-tp4")
    assert {k: stock.settings.protocol_record()[k] for k in REASONING_DEFAULTS} == REASONING_DEFAULTS
    assert "--gen_kwargs" not in stock.lm_eval_argv
    # --max-gen-toks overrides the context-derived budget, and says so.
    override = plan_for(matrix, "gsm8k-deepseek-r1-h200-vllm-fp8-tp8", "--max-gen-toks", "4096")
    assert override.settings.max_gen_toks == 4096 and override.settings.budget_rule == "--max-gen-toks"


def test_runs_with_other_reasoning_settings_are_never_gated_together(matrix):
    combo = matrix.get("gsm8k-gpt-oss-120b-b200-vllm-fp4-tp8")
    run = gate.protocol_of(plan_for(matrix, combo.name).settings.protocol_record(), {"until": ["Question:"]})
    metrics = {"strict_match": 0.2, "flexible_extract": 0.2, "n": 1319}
    same = gate.Baseline({"model": "gpt-oss-120b"}, 1319, run, {"strict_match": 0.95})
    assert gate.judge(gate.Baselines(gate.GateSettings(), (same,)), combo, run, metrics)["verdict"] == "regression"
    for key, other in (("reasoning_effort", "high"), ("answer_extraction", "stock"),
                       ("reasoning_parser", None), ("chat_template_kwargs", {"thinking": True})):
        baseline = gate.Baseline({"model": "gpt-oss-120b"}, 1319, {**run, key: other}, {"strict_match": 0.95})
        verdict = gate.judge(gate.Baselines(gate.GateSettings(), (baseline,)), combo, run, metrics)
        assert verdict["verdict"] == "not_gated" and key in verdict["reason"], key


def test_a_baseline_without_reasoning_keys_stands_for_a_stock_run(tmp_path):
    path = tmp_path / "baselines.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        baselines:
          - model: tiny
            n: 20
            protocol: {endpoint: /v1/completions, apply_chat_template: false, fewshot_as_multiturn: false,
                       num_fewshot: 5, max_gen_toks: 256, until: ["Question:"]}
            strict_match: 0.25
          - model: thinker
            n: 20
            protocol: {endpoint: /v1/chat/completions, apply_chat_template: true, fewshot_as_multiturn: true,
                       num_fewshot: 5, max_gen_toks: 16384, until: ["Question:"], reasoning_parser: gpt-oss,
                       reasoning_effort: low, chat_template_kwargs: {}, answer_extraction: last-match}
            strict_match: 0.9
        """))
    stock, thinker = gate.load_baselines(path).entries
    assert {k: stock.protocol[k] for k in REASONING_DEFAULTS} == REASONING_DEFAULTS
    assert thinker.protocol["reasoning_parser"] == "gpt-oss" and thinker.protocol["answer_extraction"] == "last-match"


def test_dry_runs_show_parser_and_budget_through_nox(tmp_path):
    env = {**os.environ, "GSM8K_BENCH_CACHE": str(tmp_path / "cache")}
    for session, parser in (("gsm8k-gpt-oss-120b-mi355x-sglang-fp4-tp1", "gpt-oss"),
                            ("gsm8k-deepseek-r1-b200-vllm-fp4-tp8", "deepseek_r1")):
        out = subprocess.run([sys.executable, "-m", "nox", "-s", session, "--", "--dry-run"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"--reasoning-parser {parser}" in out.stdout and "max_gen_toks=16384" in out.stdout
        assert f"reasoning: reasoning_parser={parser}," in out.stdout
        assert "output_budget=min(max_model_len - 4096, 16384)" in out.stdout
    assert not (tmp_path / "cache").exists()


def test_dry_run_text_names_the_reasoning_settings(matrix):
    text = dry_run_text(plan_for(matrix, "gsm8k-deepseek-r1-mi300x-sglang-fp8-tp8"))
    assert "--reasoning-parser deepseek-r1" in text and "answer_extraction=last-match" in text


# ----------------------------------------------------------------------------- in lm-eval's environment


def lm_eval_python():
    require(venvs.is_ready(venvs.LM_EVAL), "the shared lm-eval environment (nox -s setup)")
    return str(venvs.venv_python(venvs.LM_EVAL))


def run_in_lm_eval(script: str, *args: str) -> dict:
    out = subprocess.run([lm_eval_python(), "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                         timeout=120, cwd=ROOT / "gsm8k_bench" / "evaluation")
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_last_match_extraction_is_lm_evals_own_filter_taking_the_last_answer(tmp_path):
    stock = harness.stock_task_file(venvs.venv_dir(venvs.LM_EVAL)) if venvs.is_ready(venvs.LM_EVAL) else None
    require(stock is not None, "the shared lm-eval environment (nox -s setup)")
    harness.write_task(None, tmp_path / "stock", stock)
    harness.write_task(None, tmp_path / "last", stock, "last-match")
    assert "filter_list" not in (tmp_path / "stock" / "gsm8k.yaml").read_text()
    written = yaml.safe_load((tmp_path / "last" / "gsm8k.yaml").read_text())
    stock_filters = yaml.safe_load(stock.read_text())["filter_list"]
    strict = next(f for f in written["filter_list"] if f["name"] == "strict-match")
    assert [f for f in written["filter_list"] if f["name"] != "strict-match"] == [
        f for f in stock_filters if f["name"] != "strict-match"]  # flexible-extract untouched
    text = "The example said\n#### 72\nMine: 3 + 4 = 7\n#### 7"
    picked = run_in_lm_eval("""
        import json, sys
        from lm_eval.filters.extraction import RegexFilter
        step, text = json.loads(sys.argv[1]), sys.argv[2]
        stock = RegexFilter(regex_pattern=step["regex_pattern"])
        last = RegexFilter(**{k: v for k, v in step.items() if k != "function"})
        print(json.dumps({"stock": stock.apply([[text]], [{}])[0][0], "last": last.apply([[text]], [{}])[0][0]}))
        """, json.dumps(strict["filter"][0]), text)
    assert picked == {"stock": "72", "last": "7"}


def test_chat_client_scores_the_reasoning_field_only_when_content_is_empty():
    responses = [
        {"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "#### 5", "reasoning": "2+3"}}],
         "usage": {"completion_tokens": 9}},
        {"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": None, "reasoning": "so #### 6"}}]},
        {"choices": [{"index": 0, "finish_reason": "length",
                      "message": {"content": "", "reasoning_content": "thinking... #### 7"}}]},
        {"choices": [{"index": 0, "finish_reason": "length", "message": {"content": None}}]},
        {"choices": []},
    ]
    got = run_in_lm_eval("""
        import json, sys
        import lm_eval_client
        from lm_eval.models.openai_completions import LocalChatCompletion
        ours = lm_eval_client.ChatCompletions(base_url="http://127.0.0.1:9/v1/chat/completions",
                                              model="m", tokenizer_backend=None)
        stock = LocalChatCompletion(base_url="http://127.0.0.1:9/v1/chat/completions", model="m",
                                    tokenizer_backend=None)
        texts, records, stock_texts = [], [], []
        for i, response in enumerate(json.loads(sys.argv[1])):
            messages = [{"role": "user", "content": f"question {i}"}]
            ours._create_payload(messages, generate=True, gen_kwargs={})
            texts += ours.parse_generations(response)
            records.append(lm_eval_client.ANSWERS[lm_eval_client.prompt_key(messages)])
            stock_texts += stock.parse_generations(response)
        print(json.dumps({"texts": texts, "records": records, "stock": stock_texts}))
        """, json.dumps(responses))
    assert got["texts"] == ["#### 5", "so #### 6", "thinking... #### 7", None, ""]
    assert [r["source"] for r in got["records"]] == ["content", "reasoning", "reasoning_content", "none", "none"]
    assert [r["finish_reason"] for r in got["records"]] == ["stop", "stop", "length", "length", None]
    assert got["records"][0]["completion_tokens"] == 9
    # lm-eval's own client has nothing to score for the reasoning-only answers (lm-eval #3244).
    assert got["stock"][:4] == ["#### 5", None, "", None]


def test_adhoc_keeps_a_reasoning_model_on_chat(matrix):
    from gsm8k_bench.matrix.combinations import adhoc_combination

    combo = adhoc_combination(matrix, model="gpt-oss-120b", runner="b200", framework="sglang", precision="fp4", tp=2)
    assert combo.reasoning_parser == "gpt-oss" and combo.model.max_gen_toks == 16384
    with pytest.raises(ConfigError, match=r"--protocol completions: 'gpt-oss-120b' is a reasoning model"):
        adhoc_combination(matrix, model="gpt-oss-120b", runner="b200", framework="vllm", precision="fp4", tp=1,
                          protocol="completions")
