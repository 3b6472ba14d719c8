"""The go-gated lm-eval client on the real stack: it sends nothing before its go, says when every answer
is in (before it writes its outputs), and its outputs are lm-eval's own — the same requests, in the same
order, and the same samples, field for field, as `python -m lm_eval run` with the stock model, on the same
server and questions, one request at a time.

Two generations of a real server are not guaranteed equal, even greedy at concurrency 1 (prefix-cache
hits take other kernels; CPU reductions change order under load): both runs go through a recording proxy
that forwards a request it has not seen to the real server and replays the recorded answer to one it
has, so the text comes from one source and what is compared is the client's own doing."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import SHARED_GSM8K, require

from gsm8k_bench.evaluation import harness, server_metrics
from gsm8k_bench.serving import venvs
from gsm8k_bench.session.plan import HOST
from gsm8k_bench.session.warm_server import warm_server

QUESTIONS = 3
# What is compared is the client's doing, not the model's: short prompts and answers keep each run to
# seconds of a loaded 2-core machine's time.
SETTINGS = {"concurrency": 1, "limit": QUESTIONS, "num_fewshot": 1, "max_gen_toks": 48}
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


class ReplayingProxy(ThreadingHTTPServer):
    """A loopback proxy in front of `upstream`: logs every POST (path, JSON payload) in arrival order,
    forwards one it has not seen and replays the recorded response bytes to one it has."""

    def __init__(self, upstream: str) -> None:
        super().__init__((HOST, 0), _ProxyHandler)
        self.upstream = upstream
        self.received: list[tuple[str, dict]] = []
        self.forwarded = 0
        self.recorded: dict[tuple[str, bytes], tuple[int, bytes]] = {}
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]


class _ProxyHandler(BaseHTTPRequestHandler):
    server: ReplayingProxy

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.relay(None)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.received.append((self.path, json.loads(body)))
        self.relay(body)

    def relay(self, body: bytes | None) -> None:
        key = (self.path, body or b"")
        with self.server.lock:
            found = self.server.recorded.get(key) if body is not None else None
        if found is None:
            request = urllib.request.Request(self.server.upstream + self.path, data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=600) as response:
                found = response.status, response.read()
            if body is not None:
                with self.server.lock:
                    self.server.recorded[key] = found
                    self.server.forwarded += 1
        self.send_response(found[0])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(found[1])))
        self.end_headers()
        self.wfile.write(found[1])


@pytest.fixture
def proxy(warm) -> Iterator[ReplayingProxy]:
    server = ReplayingProxy(warm.plan.base_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def outputs(output_dir: Path) -> tuple[dict, list[dict]]:
    results_file, = output_dir.rglob("results_*.json")
    samples_file, = output_dir.rglob("samples_*.jsonl")
    samples = [json.loads(line) for line in samples_file.open(encoding="utf-8")]
    return json.loads(results_file.read_text()), samples


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["completions", "chat"])
def test_gated_client_sends_nothing_before_its_go_and_writes_lm_evals_own_samples(warm, proxy, tmp_path,
                                                                                    protocol):
    proxied = dataclasses.replace(warm, plan=dataclasses.replace(warm.plan, port=proxy.port))
    # The reference: lm-eval's own CLI with the stock model, as before the client existed; its answers are
    # the real server's, recorded by the proxy.
    stock = tmp_path / "stock"
    argv = proxied.lm_eval_argv(stock, protocol=protocol, **SETTINGS)
    assert argv[1].endswith("lm_eval_driver.py")
    stock_argv = [argv[0], "-m", "lm_eval", "run", *argv[2:]]
    served_before = in_flight(warm.plan.base_url)
    out = subprocess.run(stock_argv, capture_output=True, text=True, timeout=1800,
                         env=harness.lm_eval_environment(SHARED_GSM8K, os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    assert proxy.forwarded == len(proxy.received) == QUESTIONS
    assert in_flight(warm.plan.base_url) == served_before + QUESTIONS  # the real server answered them
    stock_requests = list(proxy.received)

    gated = tmp_path / "gated"
    held = []
    answered = gated / "answered"
    proxied.gated_eval([*proxied.lm_eval_argv(gated / "lm-eval", protocol=protocol, **SETTINGS),
                        "--answered-file", str(answered)],
                       gated, before_go=lambda: held.append(len(proxy.received)))
    assert held == [QUESTIONS], "requests were sent before the go"
    # The same requests, payload for payload and in order; none new, so every answer was a replay.
    assert proxy.received[QUESTIONS:] == stock_requests
    assert proxy.forwarded == QUESTIONS
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
