"""The CPU default on the real stack: vLLM's CPU build serving SmolLM2, the real lm-eval, GSM8K's files.

Each test runs `nox -s ...` as a user would, in a subprocess, and then checks what is left behind:
the session JSON, and no server process (found by its open log file, which its children share).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SHARED_GSM8K, require, require_module

pytestmark = pytest.mark.integration
SESSION = "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1"


def nox_argv(session: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "nox", "-s", session, "--", *args]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def processes_writing_to(log: Path) -> list[int]:
    """PIDs whose stdout is this log file: the server and every process it spawned."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "fd" / "1") == str(log):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def gsm8k_normalize(text: str) -> str:
    """lm-eval's gsm8k exact_match normalisation (regexes_to_ignore, ignore_case)."""
    for pattern in (",", r"\$", r"(?s).*#### ", r"\.$"):
        text = re.sub(pattern, "", text)
    return text.lower().strip()


@pytest.fixture(scope="module")
def dataset() -> Path:
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    return SHARED_GSM8K


def baselines_file(path: Path, n: int, strict: float) -> Path:
    """A baselines file for the CPU default at n questions, with the stock protocol."""
    stock = yaml.safe_load((ROOT / "baselines.yaml").read_text())
    entry = {**stock["baselines"][0], "n": n, "strict_match": strict, "flexible_extract": strict}
    path.write_text(yaml.safe_dump({**stock, "baselines": [entry]}))
    return path


@pytest.fixture(scope="module")
def cpu_run(dataset, tmp_path_factory):
    results_dir = tmp_path_factory.mktemp("results")
    baselines = baselines_file(results_dir.parent / "baselines-n5.yaml", n=5, strict=0.0)
    out = subprocess.run(nox_argv(SESSION, "--dataset-dir", str(dataset), "--limit", "5",
                                  "--results-dir", str(results_dir), "--baselines", str(baselines)),
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=3000)
    return out, results_dir


def test_cpu_session_end_to_end(cpu_run):
    out, results_dir = cpu_run
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    doc = json.loads((results_dir / f"{SESSION}.json").read_text())
    assert doc["schema"] == 1 and doc["session"] == SESSION and doc["status"] == "passed"
    assert doc["error"] is None
    config = doc["config"]
    assert (config["runner"], config["framework"], config["launcher"], config["precision"]) == (
        "cpu", "vllm", "process", "fp16")
    assert config["dtype_used"] == "bfloat16" and config["num_fewshot"] == 5 and config["limit"] == 5
    assert config["endpoint"] == "/v1/completions" and config["dataset"]["source"] == "local"
    assert config["generation"]["until"] and config["generation"]["max_gen_toks"] == 256
    assert doc["environment"]["lm_eval"] == "0.4.13" and doc["environment"]["framework_version"]
    timings = doc["timings"]
    assert 0 < timings["server_ready_s"] < timings["total_s"] and 0 < timings["eval_s"] < timings["total_s"]

    # Metrics are lm-eval's own numbers for this run.
    lm_eval = json.loads(Path(doc["artifacts"]["lm_eval_results"]).read_text())["results"]["gsm8k_local"]
    metrics = doc["metrics"]
    assert metrics["n"] == 5
    assert metrics["strict_match"] == lm_eval["exact_match,strict-match"]
    assert metrics["flexible_extract"] == lm_eval["exact_match,flexible-extract"]
    assert metrics["strict_match_stderr"] == lm_eval["exact_match_stderr,strict-match"]
    assert metrics["flexible_extract_stderr"] == lm_eval["exact_match_stderr,flexible-extract"]

    samples = doc["samples"]
    questions = [json.loads(line)["question"] for line in (SHARED_GSM8K / "test.jsonl").open()][:5]
    assert [s["doc_id"] for s in samples] == [0, 1, 2, 3, 4]
    assert [s["question"] for s in samples] == questions
    for sample in samples:
        assert sample["response"], sample
        for kind in ("strict", "flexible"):
            expected = gsm8k_normalize(sample[f"{kind}_answer"]) == gsm8k_normalize(sample["target"])
            assert sample[f"{kind}_correct"] == expected, sample
    assert sum(s["strict_correct"] for s in samples) / 5 == pytest.approx(metrics["strict_match"])
    assert sum(s["flexible_correct"] for s in samples) / 5 == pytest.approx(metrics["flexible_extract"])
    assert not processes_writing_to(results_dir / SESSION / "server.log")

    # Beside accuracy: the server's own counters over the eval, and the share of unparsable answers.
    served = doc["server_metrics"]
    assert served["source"] == "vllm /metrics" and served["requests"] == 5
    assert served["output_tokens"] > 0 and served["output_tokens_per_s"] > 0 and served["requests_per_s"] > 0
    assert 0 <= served["truncations"] <= 5 and 0 < served["latency_p50_s"] <= served["latency_p90_s"]
    invalid = sum(s["strict_answer"] == "[invalid]" for s in samples) / 5
    assert metrics["strict_invalid_rate"] == pytest.approx(invalid)
    # Gated against a baseline of the same protocol and n.
    verdict = doc["gate"]
    assert verdict["verdict"] == "pass" and verdict["baseline"]["n"] == 5
    assert {c["metric"] for c in verdict["checks"]} == {"strict_match", "flexible_extract"}
    # The file fits the checked-in JSON Schema of the typed result (schema/session-result.schema.json).
    jsonschema = require_module("jsonschema")
    jsonschema.validate(doc, json.loads((ROOT / "schema" / "session-result.schema.json").read_text()))


def test_report_of_the_real_run(cpu_run, tmp_path):
    require_module("matplotlib")
    from gsm8k_bench.reporting import report

    _, results_dir = cpu_run
    paths = report.write_report(results_dir, tmp_path, warn=pytest.fail)
    text = paths["markdown"].read_text()
    assert f"| `{SESSION}` | passed |" in text and "| pass |" in text
    assert paths["plot"].stat().st_size > 1000
    # The step summary has the same results table; the per-session cost table stays in report.md.
    summary = paths["summary"].read_text()
    rows = [line for line in text.splitlines() if line.startswith(f"| `{SESSION}` | passed |")]
    assert len(rows) == 1 and rows[0] in summary.splitlines()
    assert "GPU-hours" in summary and f"| `{SESSION}` | 0 |" in text and f"| `{SESSION}` | 0 |" not in summary


def kill_during_eval(argv: list[str], work: Path, kill) -> tuple[int, str]:
    """Start a session, call kill() once lm-eval runs, and return its exit code and output; the session
    must end within 60 s of the kill."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (work / ".start-eval").exists(), 600, "the evaluation to start")
        time.sleep(3)
        kill()
        killed_at = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        assert time.monotonic() - killed_at < 60
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, output


def server_leader(log: Path) -> int:
    """The server's own process: it leads the process group its workers (vLLM's engine core) share."""
    (leader,) = [pid for pid in processes_writing_to(log) if os.getpgid(pid) == pid]
    return leader


def test_server_killed_during_eval_fails_within_60_s(dataset, cpu_run, tmp_path):
    work = tmp_path / SESSION
    killed = []

    def kill_server():
        # Only the server process dies, as in a crash; its engine core is left for the session to stop.
        leader = server_leader(work / "server.log")
        assert len(processes_writing_to(work / "server.log")) > 1  # the engine core runs beside it
        os.kill(leader, signal.SIGKILL)
        killed.append(leader)

    returncode, output = kill_during_eval(nox_argv(SESSION, "--dataset-dir", str(dataset), "--limit", "60",
                                                   "--results-dir", str(tmp_path)), work, kill_server)
    assert returncode != 0 and killed
    doc = json.loads((tmp_path / f"{SESSION}.json").read_text())
    assert doc["status"] == "failed"
    assert doc["error"]["message"] == "evaluation: server exited with code -9 during the evaluation"
    assert doc["error"]["log_tail"]
    assert "rerun: nox -s " + SESSION in output
    assert not processes_writing_to(work / "server.log")
    assert not processes_writing_to(work / "lm-eval.log")


def test_bad_model_path_fails_fast_with_the_servers_own_error(dataset, cpu_run, tmp_path):
    missing = tmp_path / "no-such-model"
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "nox", "-s", "gsm8k", "--", "--model", "broken", "--checkpoint", str(missing),
         "--runner", "cpu", "--framework", "vllm", "--precision", "fp16", "--dataset-dir", str(dataset),
         "--results-dir", str(tmp_path)],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    assert out.returncode != 0
    assert elapsed < 120, elapsed
    doc = json.loads((tmp_path / "gsm8k-broken-cpu-vllm-fp16-tp1.json").read_text())
    assert doc["status"] == "failed"
    assert re.fullmatch(r"server start: server exited with code 1 before it was ready \(\d+ s\)",
                        doc["error"]["message"]), doc["error"]["message"]
    assert str(missing) in doc["error"]["log_tail"]  # vLLM's own complaint about the path
    assert not processes_writing_to(tmp_path / "gsm8k-broken-cpu-vllm-fp16-tp1" / "server.log")


def started(work: Path, phase: str) -> bool:
    """The server process exists (server start), or lm-eval was let go (evaluation)."""
    if phase == "server start":
        return bool(processes_writing_to(work / "server.log"))
    return (work / ".start-eval").exists()


@pytest.mark.parametrize("phase", ["server start", "evaluation"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_nothing_running_and_writes_the_json(dataset, cpu_run, tmp_path, sig, phase):
    work = tmp_path / SESSION
    proc = subprocess.Popen(nox_argv(SESSION, "--dataset-dir", str(dataset), "--limit", "60",
                                     "--results-dir", str(tmp_path)),
                            cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: started(work, phase), 600, f"the {phase}")
        time.sleep(2)
        assert proc.poll() is None and processes_writing_to(work / "server.log")
        if sig == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole foreground group
        else:
            proc.send_signal(signal.SIGTERM)  # CI cancelling the job signals nox itself
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert not processes_writing_to(work / "server.log")
    assert not processes_writing_to(work / "lm-eval.log")
    doc = json.loads((tmp_path / f"{SESSION}.json").read_text())
    cause = f"signal {sig.name}"  # the session's handler turns SIGINT, like SIGTERM, into an unwind
    assert doc["status"] == "failed"
    assert doc["error"]["message"] == f"interrupted during {phase} ({cause})"
