"""Outcome labels beyond right and wrong: truncated, empty, aborted, server error.

Unit tests label recorded lm-eval outputs and judge recorded samples.  The integration tests inject the
faults for real: tests/fakes/vllm (a real HTTP server on 127.0.0.1) aborts, errs, resets, answers
nothing or HTML, or stops at the token limit on every other prompt, and the real lm-eval, through this
project's client, asks it (one server start for both endpoints); a whole session against it fails
naming the aborted requests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SHARED_GSM8K, require
from test_faults import FAKE_SESSION, fake_argv, fake_env, read_json
from test_integration import processes_writing_to
from test_paired_gate import SESSION, against, judge, reference_of, session_doc

from gsm8k_bench.core.errors import ConfigError, EvalError
from gsm8k_bench.core.session_result import Metrics, Sample, ServerMetrics
from gsm8k_bench.evaluation import harness
from gsm8k_bench.reporting import console_summary
from gsm8k_bench.serving import venvs
from gsm8k_bench.serving.launchers import reserve_port, wait_ready
from gsm8k_bench.serving.launchers.process import process_server
from gsm8k_bench.verdicts import gate, levels, references, run_comparison

# --------------------------------------------------------------------------- labels of recorded outputs

TASK = "gsm8k_local"


def recorded_outputs(folder: Path, rows: list[tuple[str, bool, dict | None]]) -> Path:
    """lm-eval's results and samples files as the driver writes them: per question its response, whether
    both filters scored it right, and the client's `answer` record (None: a stock client's sample)."""
    folder.mkdir()
    results = {"results": {TASK: {"exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": 0.1,
                                  "exact_match,flexible-extract": 0.5, "exact_match_stderr,flexible-extract": 0.1}},
               "n-samples": {TASK: {"effective": len(rows)}}, "configs": {TASK: {"generation_kwargs": {}}}}
    (folder / "results_2026-12-06T10-00-00.json").write_text(json.dumps(results))
    with (folder / f"samples_{TASK}_2026-12-06T10-00-00.jsonl").open("w") as handle:
        for doc_id, (response, right, answer) in enumerate(rows):
            for name in ("strict-match", "flexible-extract"):
                row = {"doc_id": doc_id, "doc": {"question": f"q{doc_id}"}, "target": "7", "resps": [[response]],
                       "filtered_resps": ["7" if right else "[invalid]"], "filter": name, "exact_match": float(right)}
                handle.write(json.dumps({**row, **({"answer": answer} if answer else {})}) + "\n")
    return folder


def answer(finish: str | None, source: str = "text", error: str | None = None) -> dict:
    return {"source": source, "finish_reason": finish, "completion_tokens": 3, **({"error": error} if error else {})}


def test_each_recorded_sample_gets_its_label_and_the_metrics_count_them(tmp_path):
    output = harness.parse_outputs(recorded_outputs(tmp_path / "out", [
        (" #### 7", True, answer("stop")),
        (" #### 8", False, answer("stop")),
        (" The answer is", False, answer("length")),
        (" #### 7 and on", True, answer("length")),  # right, yet cut: truncation is its own label
        ("", False, answer("stop")),
        ("  \n", False, answer("stop", source="content")),
        ("", False, answer("abort")),
        ("", False, answer(None, source="none", error="HTTP 500")),
        ("", False, answer(None, source="none", error="a completion without text (text: null)")),
        ("", False, answer("stop", source="none")),  # a chat whose content was null: the model said nothing
    ]), TASK)
    assert [s["outcome"] for s in output.samples] == [
        "correct", "wrong", "truncated", "truncated", "empty", "empty", "aborted", "server_error", "server_error",
        "empty"]
    assert output.samples[7]["answer_error"] == "HTTP 500"
    assert output.metrics["outcomes"] == {"correct": 1, "wrong": 1, "truncated": 2, "empty": 3, "aborted": 1,
                                          "server_error": 2}
    assert output.metrics["truncated"] == 2 and output.metrics["answer_sources"] == {"content": 1, "none": 3,
                                                                                     "text": 6}
    for sample in output.samples:  # each fits the session JSON's model
        assert Sample.model_validate(sample).outcome == sample["outcome"]


def test_a_stock_clients_samples_are_not_labelled(tmp_path):
    """Without the client's record a truncated or aborted answer cannot be told from a wrong one."""
    output = harness.parse_outputs(recorded_outputs(tmp_path / "out", [(" #### 7", True, None), ("", False, None)]),
                                   TASK)
    assert [s["outcome"] for s in output.samples] == [None, None] and output.metrics["outcomes"] is None


def test_a_concurrency_level_with_an_aborted_request_fails_the_session(tmp_path):
    gating = recorded_outputs(tmp_path / "c1", [(" #### 7", True, answer("stop")), ("", False, answer("stop"))])
    loaded = recorded_outputs(tmp_path / "c64", [(" #### 7", True, answer("stop")), ("", False, answer("abort"))])
    output = harness.parse_outputs(gating, TASK)
    runs = [levels.LevelRun(c, 1.0, ServerMetrics(), folder, TASK) for c, folder in ((1, gating), (64, loaded))]
    with pytest.raises(EvalError, match=r"^at concurrency 64: the server aborted 1 of 2 requests \(doc_ids 1\): "):
        levels.record(runs, 1, Metrics.model_validate(output.metrics), output.samples, gate.GateSettings())


def test_the_session_json_takes_the_six_labels_and_refuses_others():
    for label in harness.OUTCOMES:
        assert Sample.model_validate({"doc_id": 0, "outcome": label, "answer_error": "HTTP 500"}).outcome == label
    with pytest.raises(ValueError, match=r"outcome\n  Input should be 'correct', 'wrong', 'truncated', 'empty', "
                                         r"'aborted' or 'server_error'"):
        Sample.model_validate({"doc_id": 0, "outcome": "timeout"})


# --------------------------------------------------------------------------- the verdict on labelled samples


def labelled(doc: dict, labels: dict[int, str]) -> dict:
    """doc's samples labelled as the session labels them; `labels` overrides some (doc_id -> label)."""
    for sample in doc["samples"]:
        label = labels.get(sample["doc_id"]) or ("correct" if sample["strict_correct"] else "wrong")
        sample["outcome"] = label
        if label in ("aborted", "server_error", "empty"):
            sample.update(response="", strict_correct=False, flexible_correct=False)
        if label == "server_error":
            sample["answer_error"] = "a completion without text (text: null)"
    return doc


def test_an_aborting_server_is_named_not_scored_as_a_regression_of_the_model(tmp_path):
    """Measured before labels: every other request aborted (HTTP 200, finish_reason abort, no text) was
    "lost 10" against a clean reference, McNemar p 0.002, a regression of the model.  Now the session
    fails on this message before any verdict (session/run.py, Scored.check)."""
    run = labelled(session_doc([True] * 20), dict.fromkeys(range(1, 20, 2), "aborted"))
    assert gate.unanswered(run["samples"]) == (
        "the server aborted 10 of 20 requests (doc_ids 1, 3, 5, 7, 9, 11, 13, 15, 17, 19): those are not wrong "
        "answers, so the run is not judged (the server's log says why; rerun once it answers every request)")
    assert gate.unanswered(labelled(session_doc([True, False] * 10), {})["samples"]) is None


def test_compare_does_not_pair_a_run_with_aborted_requests(tmp_path):
    """`nox -s compare`, the report's siblings and the concurrency levels pair runs too: never with them."""
    clean = labelled(session_doc([True] * 20), {})
    aborting = labelled(session_doc([True] * 20), dict.fromkeys(range(1, 20, 2), "aborted"))
    result = run_comparison.compare_documents(clean, aborting, gate.GateSettings())
    assert result["verdict"] == "not_compared"
    assert result["reason"] == (
        "the run: the server aborted 10 of 20 requests (doc_ids 1, 3, 5, 7, 9, 11, 13, 15, 17, 19): those are not "
        "wrong answers, so the run is not judged (the server's log says why; rerun once it answers every request)")
    assert run_comparison.compare_documents(clean, clean, gate.GateSettings())["verdict"] == "within_tolerance"


def test_null_texts_and_failed_requests_are_named_with_their_reasons(tmp_path):
    run = labelled(session_doc([True] * 6), {1: "server_error", 4: "server_error", 5: "aborted"})
    run["samples"][4]["answer_error"] = "HTTP 500"
    assert gate.unanswered(run["samples"]) == (
        "the server aborted 1 of 6 requests (doc_ids 5); 2 of 6 requests failed after every retry (a completion "
        "without text (text: null): 1, HTTP 500: 1; doc_ids 1, 4): those are not wrong answers, so the run is not "
        "judged (the server's log says why; rerun once it answers every request)")
    assert gate.unanswered(labelled(session_doc([True, False]), {1: "empty"})["samples"]) is None  # the model's


def test_a_run_that_truncates_more_is_a_truncation_regression_named_as_such(tmp_path):
    reference = references.load(references.write(
        tmp_path / f"{SESSION}.json", references.from_session(labelled(session_doc([True] * 20), {3: "truncated"}))),
        SESSION)
    assert reference.truncated and len(reference.truncated) == 1
    # Right as often as the reference (strict-match), but 10 more answers ran to the token limit.
    more = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    run = labelled(session_doc([True] * 20), dict.fromkeys([3, *more], "truncated"))
    verdict = judge(against(reference), run)
    assert verdict["verdict"] == "regression" and not any(c["regression"] for c in verdict["checks"])
    # The shares of truncated answers 11/20 and 1/20; the bounds are Newcombe's on the share *not*
    # truncated (as for accuracy), mirrored; the rule is accuracy's: one-sided McNemar, 10 more, 0 fewer ->
    # 1 / 2**10 <= the level, which is half the session's: truncation is its second test (Bonferroni).
    assert verdict["truncation"] == {
        "n": 20, "observed": 0.55, "reference": 0.05, "difference": 0.5, "more": 10, "fewer": 0,
        "test": "McNemar exact", "reference_runs": 1, "p": 1 / 2**10, "mcnemar_p": 1 / 2**10, "split": None,
        "lower_bound": pytest.approx(0.2699, abs=5e-5),
        "upper_bound": pytest.approx(0.6703, abs=5e-5), "level": pytest.approx(0.025), "regression": True,
        "more_doc_ids": more}
    assert (verdict["tests"], verdict["level"]) == (2, pytest.approx(0.025))
    assert verdict["reason"].endswith(
        "; truncation regression: truncation 0.5500 vs 0.0500 (truncated now, not before: 10, the reverse: 0, "
        "one-sided McNemar p 0.0009766 <= 0.025)")
    assert gate.describe_regression(verdict) == (
        f"truncation regression against {tmp_path / SESSION}.json: 0.5500 of the answers hit the token limit vs "
        "0.0500 over 20 questions (one-sided McNemar p 0.0009766 <= 0.025); truncated now, not before: 10: "
        "doc_ids 0, 2, 4, 6, 8, 10, 12, 14, 16, 18")
    # Both regressed: both named, accuracy first.
    both = judge(against(reference), labelled(session_doc([False] * 10 + [True] * 10), dict.fromkeys([3, *more],
                                                                                                  "truncated")))
    message = gate.describe_regression(both)
    assert message.startswith(f"regression against {tmp_path / SESSION}.json: strict_match 0.5000 vs 1.0000")
    assert "lost 10: doc_ids 0, 1, 2, 3, 4, 5, 6, 7, 8, 9; truncation regression against " in message
    # The session's last lines show it as a row of their table.
    printed = console_summary.lines({**run, "gate": verdict}, tmp_path / "result.json")
    row = r"^  truncated +0\.5500 +\+0\.5000 \(>= \+0\.\d{4}\) +0\.000977 <= 0\.025 +20  truncation regression$"
    assert re.search(row, "\n".join(printed), re.M)


def test_the_same_truncation_passes_and_an_unlabelled_reference_is_not_checked(tmp_path):
    labelled_ref = references.load(references.write(
        tmp_path / f"{SESSION}.json", references.from_session(labelled(session_doc([True] * 20), {3: "truncated"}))),
        SESSION)
    run = labelled(session_doc([True] * 20), {3: "truncated", 5: "truncated"})  # one more: noise
    verdict = judge(against(labelled_ref), run)
    assert verdict["verdict"] == "pass" and verdict["truncation"]["more"] == 1
    assert not verdict["truncation"]["regression"] and verdict["reason"].endswith(
        "; truncation 0.1000 vs 0.0500 (truncated now, not before: 1, the reverse: 0, one-sided McNemar p 0.5 "
        "> 0.025)")
    # An accuracy regression stays one when truncation did not change.
    dropped = judge(against(labelled_ref), labelled(session_doc([False] * 10 + [True] * 10), {3: "truncated"}))
    assert dropped["verdict"] == "regression" and not dropped["truncation"]["regression"]
    assert "truncation regression" not in gate.describe_regression(dropped)
    # No question in common (every text changed): nothing to pair.
    changed = labelled(session_doc([True] * 20), {})
    for sample in changed["samples"]:
        sample["question"] += " (edited)"
    assert gate.judge_truncation(labelled_ref, changed["samples"], gate.GateSettings(), 0.025) is None

    older = reference_of([True] * 20, tmp_path)
    assert older.truncated is None  # promoted from a run without labels
    verdict = judge(against(older), labelled(session_doc([True] * 20), dict.fromkeys(range(20), "truncated")))
    assert verdict["verdict"] == "pass" and "truncation" not in verdict


def test_a_reference_with_a_bad_truncated_list_names_the_key(tmp_path):
    document = references.from_session(labelled(session_doc([True, False]), {0: "truncated"}))
    assert document["truncated"] == {next(iter(document["questions"])): 1}  # runs it was truncated in
    document["truncated"] = {"0:0123456789": 1}
    path = tmp_path / f"{SESSION}.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError,
                       match=rf"^{SESSION}\.json: truncated: expected question ids listed in questions"):
        references.load(path, SESSION)


# --------------------------------------------------------------------------- faults injected for real

FAKE = Path(__file__).resolve().parent / "fakes" / "vllm"
FAULTS = ("abort", "null", "http500", "reset", "not-json", "length", "empty", "wrong")
QUESTIONS = 2 * len(FAULTS)  # every other prompt meets a fault: each fault once per run
RETRIES = 3  # lm-eval's attempts per request in all
# The label each fault must get, per endpoint: a completion's `text` must be a string (null is a malformed
# body), a chat message's `content` may be null (the model said nothing).
EXPECTED = {None: "correct", "abort": "aborted", "null": "server_error", "http500": "server_error",
            "reset": "server_error", "not-json": "server_error", "length": "truncated", "empty": "empty",
            "wrong": "wrong"}


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory):
    """One fake server for both endpoints' lm-eval runs; its fault log says which question met which fault."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    require(venvs.venv_python(venvs.LM_EVAL).is_file(), "the shared lm-eval environment (nox -s setup)")
    work = tmp_path_factory.mktemp("faults")
    claim = reserve_port("127.0.0.1", 18200)
    argv = [str(FAKE), "serve", "m", "--host", "127.0.0.1", "--port", str(claim.port), "--served-model-name", "fake"]
    claim.release()
    fault_log = work / "faults.jsonl"
    environ = fake_env(FAKE_VLLM_FAULTS=",".join(FAULTS), FAKE_VLLM_GSM8K=str(SHARED_GSM8K / "test.jsonl"),
                       FAKE_VLLM_FAULT_LOG=str(fault_log))
    with process_server(argv, base_url=f"http://127.0.0.1:{claim.port}", env=environ,
                        log_path=work / "server.log") as server:
        wait_ready(server, "fake", 60, lambda line: None)
        yield work, f"http://127.0.0.1:{claim.port}", fault_log
    assert not processes_writing_to(work / "server.log")


def requests_seen(work: Path) -> int:
    return (work / "server.log").read_text().count("request for model=")


def lm_eval_against(fault_server, protocol: str, concurrency: int) -> tuple[harness.EvalOutput, dict[str, str], int]:
    """lm-eval's outputs read back, the faults the server gave during this run (question -> fault), and the
    requests it received."""
    work, base_url, fault_log = fault_server
    before = len(fault_log.read_text().splitlines()) if fault_log.exists() else 0
    requests_before = requests_seen(work)
    python = venvs.venv_python(venvs.LM_EVAL)
    task = harness.write_task(SHARED_GSM8K, work / "task", harness.stock_task_file(venvs.venv_dir(venvs.LM_EVAL)))
    settings = harness.EvalSettings(protocol, num_fewshot=1, limit=QUESTIONS, concurrency=concurrency,
                                     request_timeout_s=30, max_retries=RETRIES, max_gen_toks=64)
    output_dir = work / protocol
    argv = harness.lm_eval_command(python, settings, served_name="fake", base_url=base_url, output_dir=output_dir,
                                    task=task, include_path=work / "task")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                         env=harness.lm_eval_environment(SHARED_GSM8K, os.environ))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return (harness.parse_outputs(output_dir, task), faults_met(fault_log, after=before),
            requests_seen(work) - requests_before)


def faults_met(fault_log: Path, after: int = 0) -> dict[str, str]:
    return {row["question"]: row["fault"] for row in map(json.loads, fault_log.read_text().splitlines()[after:])}


# Completions one request at a time (lm-eval's blocking path), chat concurrently (its asyncio path): each
# path retries and records its own way.
@pytest.mark.integration
@pytest.mark.parametrize(("protocol", "concurrency"), [("completions", 1), ("chat", 4)])
def test_real_lm_eval_against_a_faulty_server_labels_every_request(fault_server, protocol, concurrency):
    output, met, requests = lm_eval_against(fault_server, protocol, concurrency)
    faults = [met.get(s["question"].strip()) for s in output.samples]
    assert sorted(f for f in faults if f) == sorted(FAULTS), "each fault met once"
    expected = [("empty" if protocol == "chat" and f == "null" else EXPECTED[f]) for f in faults]
    assert [s["outcome"] for s in output.samples] == expected
    errors = {f: s.get("answer_error") for f, s in zip(faults, output.samples, strict=True) if f}
    assert errors["http500"] == "HTTP 500" and errors["not-json"] == "the body is not JSON"
    assert errors["reset"] and not re.match("HTTP|the body", errors["reset"])  # the connection's own error
    if protocol == "completions":
        assert errors["null"] == "a completion without text (text: null)"
    for sample, label in zip(output.samples, expected, strict=True):
        assert ("answer_error" in sample) == (label == "server_error")
    finish = {f: s["answer_finish_reason"] for f, s in zip(faults, output.samples, strict=True)}
    assert (finish[None], finish["abort"], finish["length"]) == ("stop", "abort", "length")  # completions too
    assert output.metrics["outcomes"] == {label: expected.count(label) for label in harness.OUTCOMES}
    # Every attempt but the last raised, so lm-eval retried each failed request before it was recorded.
    assert requests == QUESTIONS + (RETRIES - 1) * expected.count("server_error")


@pytest.mark.integration
def test_a_session_against_a_server_that_aborts_every_other_request_fails_naming_them(tmp_path):
    """Before labels this session passed (not gated, the aborted answers scored as wrong)."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    fault_log = tmp_path / "faults.jsonl"
    out = subprocess.run(fake_argv(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=fake_env(FAKE_VLLM_FAULTS="abort", FAKE_VLLM_FAULT_LOG=str(fault_log)))
    doc = read_json(tmp_path / f"{FAKE_SESSION}.json")
    assert out.returncode != 0 and doc["status"] == "failed" and doc["gate"] is None
    aborted = [s["doc_id"] for s in doc["samples"] if s["outcome"] == "aborted"]
    met = faults_met(fault_log)
    assert aborted == [s["doc_id"] for s in doc["samples"] if s["question"].strip() in met] and len(aborted) == 2
    assert doc["metrics"]["outcomes"]["aborted"] == 2 and doc["metrics"]["outcomes"]["server_error"] == 0
    assert doc["error"]["message"] == (
        f"evaluation: the server aborted 2 of 5 requests (doc_ids {', '.join(map(str, aborted))}): those are not "
        "wrong answers, so the run is not judged (the server's log says why; rerun once it answers every request)")
    assert doc["error"]["message"] in out.stdout + out.stderr


@pytest.mark.integration
def test_a_server_answering_wrong_is_a_regression_that_fails_the_session_after_writing_its_json(tmp_path):
    """The counterpart of an abort: every answer there and wrong (tests/fakes/vllm says 42 to each question)
    is the model's regression against a scalar baseline of 0.9, and fails the session once its JSON is written."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    stock = yaml.safe_load((ROOT / "baselines.yaml").read_text())
    entry = {**stock["baselines"][0], "runner": "h100", "n": 5, "strict_match": 0.9, "flexible_extract": 0.9}
    baselines = tmp_path / "baselines.yaml"
    baselines.write_text(yaml.safe_dump({**stock, "baselines": [entry]}))
    out = subprocess.run(fake_argv(tmp_path, "--baselines", str(baselines)), cwd=ROOT, env=fake_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    doc = read_json(tmp_path / f"{FAKE_SESSION}.json")
    assert doc["status"] == "failed" and doc["gate"]["verdict"] == "regression", doc["gate"]
    assert doc["metrics"]["n"] == 5 and doc["metrics"]["outcomes"]["wrong"] == 5
    assert doc["error"]["message"].startswith("gate: regression: strict_match")
    assert not processes_writing_to(tmp_path / FAKE_SESSION / "server.log")
