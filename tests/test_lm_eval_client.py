"""The go-gated lm-eval client on the real stack: it sends nothing before its go, says when every answer
is in (before it writes its outputs), and its outputs are lm-eval's own — the same samples, field for
field, as `python -m lm_eval run` with the stock model, on the same server and questions, one request at
a time (greedy, so deterministic)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import SHARED_GSM8K, require

from gsm8k_bench.evaluation import harness, server_metrics
from gsm8k_bench.serving import venvs
from gsm8k_bench.session.warm_server import warm_server

QUESTIONS = 3
# Fields of lm-eval's results file that say when and where it ran, or which class ran (ours is
# registered under its own name), rather than what was evaluated.
RUN_FIELDS = {"date", "start_time", "end_time", "total_evaluation_time_seconds", "pretty_env_info",
              "model_source", "model_name", "model_name_sanitized", "git_hash", "upper_git_hash"}


@pytest.fixture(scope="module")
def warm(matrix, tmp_path_factory):
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    require(venvs.venv_python(venvs.LM_EVAL).is_file() and venvs.venv_python(venvs.VLLM_CPU).is_file(),
            "the shared lm-eval and vLLM CPU environments (nox -s setup)")
    with warm_server(matrix, ["--dataset-dir", str(SHARED_GSM8K)], tmp_path_factory.mktemp("warm")) as warm:
        yield warm


def in_flight(base_url: str) -> float:
    """Requests the server has finished, is running or has queued."""
    samples = server_metrics.scrape(base_url) or []
    names = ("vllm:request_success_total", "vllm:num_requests_running", "vllm:num_requests_waiting")
    return sum(value for name, _, value in samples if name in names)


def outputs(output_dir: Path) -> tuple[dict, list[dict]]:
    results_file, = output_dir.rglob("results_*.json")
    samples_file, = output_dir.rglob("samples_*.jsonl")
    samples = [json.loads(line) for line in samples_file.open(encoding="utf-8")]
    return json.loads(results_file.read_text()), samples


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["completions", "chat"])
def test_gated_client_sends_nothing_before_its_go_and_writes_lm_evals_own_samples(warm, tmp_path, protocol):
    # The reference: lm-eval's own CLI with the stock model, as before the client existed.
    stock = tmp_path / "stock"
    argv = warm.lm_eval_argv(stock, protocol=protocol, concurrency=1, limit=QUESTIONS)
    assert argv[1].endswith("lm_eval_driver.py")
    stock_argv = [argv[0], "-m", "lm_eval", "run", *argv[2:]]
    out = subprocess.run(stock_argv, capture_output=True, text=True, timeout=600,
                         env=harness.lm_eval_environment(SHARED_GSM8K, os.environ))
    assert out.returncode == 0, out.stderr[-3000:]

    gated = tmp_path / "gated"
    sent_before = in_flight(warm.plan.base_url)
    held = []
    answered = gated / "answered"
    warm.gated_eval([*warm.lm_eval_argv(gated / "lm-eval", protocol=protocol, concurrency=1, limit=QUESTIONS),
                     "--answered-file", str(answered)],
                    gated, before_go=lambda: held.append(in_flight(warm.plan.base_url)))
    assert held == [sent_before], "requests reached the server before the go"
    assert in_flight(warm.plan.base_url) == sent_before + QUESTIONS
    results_file, = (gated / "lm-eval").rglob("results_*.json")
    assert answered.stat().st_mtime_ns <= results_file.stat().st_mtime_ns

    stock_results, stock_samples = outputs(stock)
    gated_results, gated_samples = outputs(gated / "lm-eval")
    assert len(stock_samples) == 2 * QUESTIONS  # one line per question and filter
    # The client notes where each scored text came from (`text`, or the chat's `content`) and why it stopped.
    answers = [sample.pop("answer") for sample in gated_samples]
    assert {a["source"] for a in answers} == {"content" if protocol == "chat" else "text"}
    assert all(a["finish_reason"] in ("stop", "length") and "error" not in a for a in answers)
    assert gated_samples == stock_samples  # every field, in order
    assert {k: v for k, v in gated_results.items() if k not in RUN_FIELDS | {"config"}} == \
        {k: v for k, v in stock_results.items() if k not in RUN_FIELDS | {"config"}}
    config = {**gated_results["config"]}
    assert config.pop("model") == f"gsm8k-bench-local-{'chat-' if protocol == 'chat' else ''}completions"
    assert config == {k: v for k, v in stock_results["config"].items() if k != "model"}


@pytest.mark.parametrize("model", ["hf", "openai-completions"])
def test_driver_refuses_a_model_it_has_no_client_for(model, tmp_path):
    python = venvs.venv_python(venvs.LM_EVAL)
    require(python.is_file(), "the shared lm-eval environment (nox -s setup)")
    out = subprocess.run([str(python), str(harness.DRIVER), "--model", model, "--model_args", "model=x",
                          "--tasks", "gsm8k", "--include_path", str(tmp_path), "--num_fewshot", "0",
                          "--output_path", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert f"--model '{model}': allowed values are local-chat-completions, local-completions" in out.stderr
    assert not any(tmp_path.iterdir())
