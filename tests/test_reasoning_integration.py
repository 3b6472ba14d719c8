"""Reasoning answers on the real stack: vLLM's CPU build serving SmolLM2 behind a reasoning parser (a plugin,
tests/vllm_plugins/think_text.py) that puts the model's whole output into the response's reasoning field, so
`content` is empty: lm-eval #3244's case.  The session scores it exactly as the same chat run without the
parser, question by question.  lm-eval's stock chat client has nothing to score on such a server: shown on
tests/fakes/vllm sending what that server sent (no content, the whole answer in the reasoning field), since
what is proven there is lm-eval's, not vLLM's.

Greedy at concurrency 1 on both runs: CPU batching changes numerics, one request at a time does not.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests
import yaml
from conftest import ROOT, SHARED_GSM8K, require, yaml_text
from test_integration import env, nox_argv, processes_writing_to

from gsm8k_bench.evaluation import harness
from gsm8k_bench.matrix.loader import load_matrix
from gsm8k_bench.serving import venvs
from gsm8k_bench.serving.launchers import reserve_port, wait_ready
from gsm8k_bench.serving.launchers.process import process_server
from gsm8k_bench.session.options import parse_session_args
from gsm8k_bench.session.plan import HOST, host_facts, plan_session
from gsm8k_bench.verdicts import gate
from gsm8k_bench.verdicts.protocol import PROTOCOL_KEYS

pytestmark = pytest.mark.integration
PLUGIN = ROOT / "tests" / "vllm_plugins" / "think_text.py"
LIMIT = 5
PLAIN, THINKS = "gsm8k-smollm2-chat-cpu-vllm-fp16-tp1", "gsm8k-smollm2-thinks-cpu-vllm-fp16-tp1"
THINKS_FAKE = "gsm8k-smollm2-thinks-h100-vllm-fp16-tp1"  # served by tests/fakes/vllm as a process
FAKES = ROOT / "tests" / "fakes"


def reasoning_matrix(path: Path) -> Path:
    """The real matrix's runners, frameworks and precisions, with two chat models that differ only by the
    reasoning parser (and keep lm-eval's stock extraction, so the scoring rule is the same)."""
    data = yaml.safe_load((ROOT / "matrix.yaml").read_text())
    model = {"checkpoint": "HuggingFaceTB/SmolLM2-135M-Instruct", "protocol": "chat", "runners": ["cpu"],
             "frameworks": ["vllm"], "precisions": ["fp16"], "tp": [1], "max_model_len": 2048,
             "max_gen_toks": 256, "server_args": {"vllm": ["--enforce-eager"]}}
    thinks = {**model, "runners": ["cpu", "h100"],
              "server_args": {"vllm": ["--enforce-eager", "--reasoning-parser-plugin", str(PLUGIN)]},
              "reasoning": {"parser": {"vllm": "think-text"}, "extraction": "stock"}}
    data["models"] = {"smollm2-chat": model, "smollm2-thinks": thinks}
    data.pop("exclude", None)
    data.pop("include", None)
    path.write_text(yaml_text(data))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    require(venvs.is_ready(venvs.VLLM_CPU) and venvs.is_ready(venvs.LM_EVAL), "the shared environments (nox -s setup)")
    work = tmp_path_factory.mktemp("reasoning")
    matrix_file = reasoning_matrix(work / "matrix.yaml")
    args = ["--dataset-dir", str(SHARED_GSM8K), "--limit", str(LIMIT), "--concurrency", "1",
            "--results-dir", str(work), "--baselines", str(ROOT / "baselines.yaml")]
    docs = {}
    for session in (PLAIN, THINKS):
        out = subprocess.run(nox_argv(session, *args), cwd=ROOT, env={**env(), "GSM8K_MATRIX": str(matrix_file)},
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        docs[session] = json.loads((work / f"{session}.json").read_text())
        assert not processes_writing_to(work / session / "server.log")
    return docs, load_matrix(matrix_file), work, args


def test_answers_only_in_the_reasoning_field_score_as_without_the_parser(runs):
    docs, _, _, _ = runs
    plain, thinks = docs[PLAIN], docs[THINKS]
    assert plain["status"] == thinks["status"] == "passed"
    assert "--reasoning-parser think-text" in thinks["config"]["server_command"]
    assert "--reasoning-parser" not in plain["config"]["server_command"]
    # Where each scored text came from: all from content without the parser, all from vLLM's reasoning
    # field with it (content was empty every time).
    assert plain["metrics"]["answer_sources"] == {"content": LIMIT}
    assert thinks["metrics"]["answer_sources"] == {"reasoning": LIMIT}
    assert [s["answer_source"] for s in thinks["samples"]] == ["reasoning"] * LIMIT
    # Question by question: the same text, the same extracted answers, the same verdicts.
    fields = ("doc_id", "response", "strict_answer", "flexible_answer", "strict_correct", "flexible_correct",
              "answer_finish_reason")
    for before, after in zip(plain["samples"], thinks["samples"], strict=True):
        assert {k: after[k] for k in fields} == {k: before[k] for k in fields}
        assert after["response"].strip()
    for metric in ("strict_match", "flexible_extract", "n", "strict_invalid_rate", "flexible_invalid_rate",
                   "truncated"):
        assert thinks["metrics"][metric] == plain["metrics"][metric], metric
    # Truncations are counted from each answer's finish reason, and agree with the server's own counter.
    truncated = sum(s["answer_finish_reason"] == "length" for s in thinks["samples"])
    assert thinks["metrics"]["truncated"] == truncated == thinks["server_metrics"]["truncations"]
    # lm-eval sent the budget the protocol records.
    assert thinks["config"]["generation"]["max_gen_toks"] == 256 == thinks["config"]["protocol"]["max_gen_toks"]


def test_the_two_runs_differ_in_protocol_and_are_never_gated_together(runs):
    docs, matrix, _, _ = runs
    plain, thinks = docs[PLAIN]["config"]["protocol"], docs[THINKS]["config"]["protocol"]
    assert (plain["reasoning_parser"], thinks["reasoning_parser"]) == (None, "think-text")
    assert plain["answer_extraction"] == thinks["answer_extraction"] == "stock"
    assert thinks["lm_eval_model"] == "local-chat-completions"
    run = {k: thinks[k] for k in PROTOCOL_KEYS}
    baseline = gate.Baseline({"model": "smollm2-thinks"}, LIMIT, {k: plain[k] for k in PROTOCOL_KEYS},
                             {"strict_match": 1.0})
    verdict = gate.judge(gate.Baselines(gate.GateSettings(), (baseline,)), matrix.get(THINKS), run,
                         docs[THINKS]["metrics"])
    assert verdict["verdict"] == "not_gated" and "reasoning_parser" in verdict["reason"]


def test_lm_evals_stock_chat_client_has_nothing_to_score_on_such_a_server(runs):
    """The same questions, lm-eval's own CLI and chat client, against tests/fakes/vllm answering every
    question right but only in the reasoning field: every answer lm-eval scores is empty."""
    docs, matrix, work, args = runs
    combo = matrix.get(THINKS_FAKE)
    claim = reserve_port(HOST, combo.framework.port)
    options = parse_session_args(combo.name, [*args, "--launcher", "process"])
    plan = plan_session(combo, options, matrix.defaults, host_facts(combo, options), port=claim.port)
    stock_dir = work / "stock"
    task = harness.write_task(plan.dataset_dir, stock_dir / "task",
                               harness.stock_task_file(venvs.venv_dir(venvs.LM_EVAL)))
    ours = harness.lm_eval_command(plan.lm_eval_python, plan.settings, served_name=combo.model.name,
                                    base_url=plan.base_url, output_dir=stock_dir / "lm-eval", task=task,
                                    include_path=stock_dir / "task")
    argv = [ours[0], "-m", "lm_eval", "run", *ours[2:]]  # the driver's flags are lm_eval's own
    fake = {"PATH": f"{FAKES}:{os.environ['PATH']}", "FAKE_VLLM_REASONING": "1",
            "FAKE_VLLM_GSM8K": str(SHARED_GSM8K / "test.jsonl")}
    with process_server(plan.server_argv, base_url=plan.base_url, env={**os.environ, **plan.server_env, **fake},
                        log_path=stock_dir / "server.log") as server:
        wait_ready(server, combo.model.name, 600, lambda _: None)
        # What the server sends: no content, the whole answer in vLLM's reasoning field.
        message = requests.post(f"{plan.base_url}/v1/chat/completions", timeout=120, json={
            "model": combo.model.name, "max_tokens": 32, "temperature": 0,
            "messages": [{"role": "user", "content": "What is 2 + 3?"}]}).json()["choices"][0]["message"]
        assert message["content"] is None and message["reasoning"].strip()
        out = subprocess.run(argv, env={**env(), "HF_DATASETS_OFFLINE": "1"}, capture_output=True, text=True,
                             timeout=600)
    claim.release()
    assert out.returncode == 0, out.stderr[-3000:]
    assert not processes_writing_to(stock_dir / "server.log")
    stock = harness.parse_outputs(stock_dir / "lm-eval", task)
    assert [s["response"] for s in stock.samples] == [""] * LIMIT
    assert {s["strict_answer"] for s in stock.samples} == {s["flexible_answer"] for s in stock.samples} == {
        "[invalid]"}
    assert stock.metrics["strict_match"] == stock.metrics["flexible_extract"] == 0.0
    # The session on vLLM behind the parser found an answer to extract where lm-eval finds none.
    ours = docs[THINKS]["samples"]
    assert any(s["flexible_answer"] != "[invalid]" for s in ours)
