"""Staged evaluation end to end: a session with a per-question reference asks the questions in stages and
stops once the group-sequential test decides.

The integration tests run whole sessions (`nox -s gsm8k`) against tests/fakes/vllm (a real HTTP server on
127.0.0.1) answering from a scripted per-question correctness, with the real lm-eval from the shared
environment: one full run makes the reference (200 questions, all right), then a healthy script stops early
and passes, a degraded one stops early and fails naming the lost questions, a borderline one runs to the
end.  Design: 4 looks of 50 questions at the gate's level 0.05 (sequential.decide's numbers for these
counts are in the comments).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_GSM8K, require
from test_faults import FAKE_SESSION, fake_argv, fake_env, nothing_left, read_json
from test_paired_gate import against, reference_of, session_doc

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.core.session_result import SessionResult
from gsm8k_bench.evaluation import harness
from gsm8k_bench.serving import venvs
from gsm8k_bench.session import staging
from gsm8k_bench.session.options import parse_session_args
from gsm8k_bench.session.plan import host_facts, plan_session
from gsm8k_bench.verdicts import gate, levels, promote, references

QUESTIONS, LOOKS = 200, 4
ORDER = staging.question_order(QUESTIONS)
STAGE = QUESTIONS // LOOKS
CONCURRENCY = 8  # below a stage's size: the client keeps the server busy across stage boundaries


def test_the_order_is_seeded_and_each_question_once():
    assert staging.question_order(QUESTIONS) == ORDER and sorted(ORDER) == list(range(QUESTIONS))
    assert ORDER[:STAGE] != list(range(STAGE))  # a random sample, not the first 50


def test_a_session_stages_only_with_a_reference_one_level_and_enough_questions(matrix, tmp_path):
    """Everything else is asked whole, as before: the reason is what the console says."""
    combo = matrix.get("gsm8k-smollm2-135m-cpu-vllm-fp16-tp1")
    reference = reference_of([True] * 20, tmp_path)

    def why(*args: str, with_reference: bool = True, runs: int = 1) -> str:
        options = parse_session_args(combo.name, ["--results-dir", str(tmp_path), *args])
        plan = plan_session(combo, options, matrix.defaults, host_facts(combo, options, {}),
                            baselines=against(dataclasses.replace(reference, runs=runs) if with_reference else None))
        return staging.why_not_staged(plan, len(levels.level_plans(plan)))

    assert why("--limit", "200", "--looks", "4") == "" and why("--limit", "160") == ""  # 8 looks of 20
    assert why("--limit", "200", "--looks", "4", with_reference=False) == "no per-question reference to pair with"
    assert why("--limit", "200", "--full") == "--full"
    assert why("--limit", "200", "--looks", "4", runs=2) == (
        "a two-run reference is judged by its exact test over every question")
    assert why("--limit", "200", "--looks", "4", "--concurrency", "1,8") == (
        "several concurrency levels compare full runs")
    assert why("--limit", "16") == "16 questions are too few for 8 stages of at least 20 (--looks)"
    assert why("--limit", "79", "--looks", "4") == "79 questions are too few for 4 stages of at least 20 (--looks)"


def test_unasked_questions_are_dropped_and_the_metrics_count_the_asked(tmp_path):
    """lm-eval scores the questions a stopped run never sent as "" (wrong): they are not the run's."""
    task = "gsm8k_local"
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "results_2026-12-06T10-00-00.json").write_text(json.dumps({
        "results": {task: {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.2,
                           "exact_match,flexible-extract": 0.25, "exact_match_stderr,flexible-extract": 0.2}},
        "n-samples": {task: {"effective": 4}}, "configs": {task: {"generation_kwargs": {}}}}))
    rows = [(" #### 7", True, {"source": "text", "finish_reason": "stop", "completion_tokens": 3}),
            (" #### 8", False, {"source": "text", "finish_reason": "stop", "completion_tokens": 3}),
            ("", False, {"source": "none", "finish_reason": None, "completion_tokens": None, "not_asked": True}),
            ("", False, {"source": "none", "finish_reason": None, "completion_tokens": None, "not_asked": True})]
    with (folder / f"samples_{task}_2026-12-06T10-00-00.jsonl").open("w") as handle:
        for doc_id, (response, right, answer) in enumerate(rows):
            for name in ("strict-match", "flexible-extract"):
                handle.write(json.dumps({"doc_id": doc_id, "doc": {"question": f"q{doc_id}"}, "target": "7",
                                         "resps": [[response]], "filtered_resps": ["7" if right else "[invalid]"],
                                         "filter": name, "exact_match": float(right), "answer": answer}) + "\n")
    output = harness.parse_outputs(folder, task)
    assert [s["doc_id"] for s in output.samples] == [0, 1]
    assert output.metrics["n"] == 2 and output.metrics["strict_match"] == 0.5
    assert output.metrics["strict_match_stderr"] == pytest.approx(0.5)  # sqrt(0.5 / 2), lm-eval's n - 1 variance
    assert output.metrics["outcomes"] == {"correct": 1, "wrong": 1, "truncated": 0, "empty": 0, "aborted": 0,
                                          "server_error": 0}


def test_promote_refuses_a_run_that_stopped_early(tmp_path):
    doc = session_doc([True] * 20)
    runs = tmp_path / "runs"
    runs.mkdir()
    look = {"look": 1, "asked": 20, "lost": 0, "gained": 0, "z": 0.0, "p": 1.0, "efficacy": 2.8, "nominal": 0.003,
            "futility": 0.5, "drift": 2.0, "decision": "no_regression"}
    doc["staged"] = {"seed": staging.SEED, "method": "m", "questions": 40, "stopped_early": True, "looks": [look],
                     "design": {"looks": 2, "fractions": [0.5, 1.0], "design_drop": 0.02, "beta": 0.15,
                                "level": 0.05, "stage_ends": [20, 40]}}
    (runs / f"{doc['session']}.json").write_text(json.dumps(doc))
    with pytest.raises(BenchError, match=r"a staged run that stopped early \(20 of 40 questions asked\): a "
                                        r"reference must cover the set; run the session with --full"):
        promote.promote([str(runs / f"{doc['session']}.json"), "--references-dir", str(tmp_path / "refs")],
                        tmp_path, gate.GateSettings(), print)
    assert not (tmp_path / "refs").exists() or not list((tmp_path / "refs").iterdir())


# --------------------------------------------------------------------------- sessions on the fake server


def questions() -> list[str]:
    rows = [json.loads(line) for line in (SHARED_GSM8K / "test.jsonl").open(encoding="utf-8")][:QUESTIONS]
    return [row["question"].strip() for row in rows]


def run_session(tmp_path: Path, name: str, wrong: list[int], *extra: str) -> tuple[subprocess.CompletedProcess[str],
                                                                                     dict, list[str]]:
    """A session of the first 200 questions whose answers to the doc_ids `wrong` are wrong; the process, its
    JSON and the questions the server was asked."""
    results = tmp_path / name
    results.mkdir()
    script = results / "script.json"
    script.write_text(json.dumps({questions()[d]: False for d in wrong}))
    asked = results / "asked.jsonl"
    out = subprocess.run(fake_argv(results, "--limit", str(QUESTIONS), "--looks", str(LOOKS), "--concurrency",
                                   str(CONCURRENCY), *extra), cwd=ROOT,
                         capture_output=True, text=True, timeout=600,
                         env=fake_env(FAKE_VLLM_GSM8K=str(SHARED_GSM8K / "test.jsonl"),
                                      FAKE_VLLM_SCRIPT=str(script), FAKE_VLLM_ASKED=str(asked)))
    doc = read_json(results / f"{FAKE_SESSION}.json")
    assert nothing_left(Path(doc["artifacts"]["work_dir"])), "a server or lm-eval process is left running"
    return out, doc, [json.loads(line) for line in asked.read_text().splitlines()] if asked.exists() else []


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    """A full run's reference: every one of the 200 questions answered right."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    require(venvs.venv_python(venvs.LM_EVAL).is_file(), "the shared lm-eval environment (nox -s setup)")
    work = tmp_path_factory.mktemp("staged")
    refs = work / "references"
    refs.mkdir()
    out, doc, asked = run_session(work, "full", [], "--references", str(refs))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "staged" not in doc and len(doc["samples"]) == QUESTIONS and len(asked) == QUESTIONS
    references.write(references.reference_path(refs, FAKE_SESSION), references.from_session(doc))
    return refs


def looks_of(doc: dict) -> list[tuple[int, int, int, str]]:
    return [(look["asked"], look["lost"], look["gained"], look["decision"]) for look in doc["staged"]["looks"]]


def asked_first(asked: list[str], count: int, concurrency: int = CONCURRENCY) -> None:
    """The server was asked the seeded order's first `count` questions, each once, and maybe some of the
    next stage's (sent beside the stopping stage's last answers, so the server never waited; not scored;
    one request at a time, none)."""
    first = {questions()[d] for d in ORDER[:count]}
    ahead = set(asked) - first
    assert len(asked) == len(set(asked)) and first <= set(asked)
    assert ahead <= ({questions()[d] for d in ORDER[count:count + STAGE]} if concurrency > 1 else set())


@pytest.mark.integration
@pytest.mark.parametrize("concurrency", [1, CONCURRENCY])  # a stage's requests one by one, or pipelined
def test_a_healthy_staged_run_stops_early_and_passes(tmp_path, reference_dir, concurrency):
    # Nothing lost: z 0 falls below the futility boundary at look 3 (0.29; -0.78 and -0.18 before).
    out, doc, asked = run_session(tmp_path, "healthy", [], "--references", str(reference_dir), "--concurrency",
                                  str(concurrency))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert doc["status"] == "passed" and doc["gate"]["verdict"] == "pass"
    assert looks_of(doc) == [(50, 0, 0, "continue"), (100, 0, 0, "continue"), (150, 0, 0, "no_regression")]
    assert doc["staged"]["stopped_early"] is True and doc["staged"]["seed"] == staging.SEED
    design = doc["staged"]["design"]
    assert design["stage_ends"] == [50, 100, 150, 200] and design["level"] == pytest.approx(0.05)
    asked_first(asked, 150, concurrency)
    assert sorted(s["doc_id"] for s in doc["samples"]) == sorted(ORDER[:150]) and doc["metrics"]["n"] == 150
    assert "staged look 3/4: 150 of 200 questions asked, lost 0, gained 0" in out.stdout + out.stderr
    assert "no regression: stop, pass" in out.stdout + out.stderr
    SessionResult.model_validate(doc)
    # A run that stopped early cannot become the reference.
    with pytest.raises(BenchError, match=r"a staged run that stopped early \(150 of 200 questions asked\)"):
        promote.promote([str(tmp_path / "healthy" / f"{FAKE_SESSION}.json"), "--references-dir",
                         str(tmp_path / "refs")], tmp_path, gate.GateSettings(), print)


@pytest.mark.integration
def test_a_degraded_staged_run_stops_early_and_fails_naming_the_lost_questions(tmp_path, reference_dir):
    wrong = sorted(ORDER[::2])  # every other question of the order: 25 lost by look 1, p 3e-8 <= its 0.0001
    out, doc, asked = run_session(tmp_path, "degraded", wrong, "--references", str(reference_dir))
    assert out.returncode != 0 and doc["status"] == "failed", out.stdout[-3000:] + out.stderr[-3000:]
    assert doc["gate"]["verdict"] == "regression", doc["error"]
    assert looks_of(doc) == [(50, 25, 0, "regression")] and doc["staged"]["stopped_early"] is True
    asked_first(asked, 50)
    lost = sorted(ORDER[:STAGE:2])
    check = next(c for c in doc["gate"]["checks"] if c["gates"])
    assert check["lost_doc_ids"] == lost and check["regression"] is True
    assert doc["error"]["message"].startswith(f"gate: regression against {reference_dir / FAKE_SESSION}.json: ")
    assert f"lost 25: doc_ids {', '.join(map(str, lost))}" in doc["error"]["message"]
    assert "staged look 1/4: 50 of 200 questions asked, lost 25, gained 0" in out.stdout + out.stderr


@pytest.mark.integration
def test_a_borderline_staged_run_runs_to_the_end(tmp_path, reference_dir):
    # One lost per stage: z 1.0, 1.41, 1.73 stay between the boundaries; at look 4, p 0.0625 > 0.0427.
    wrong = [ORDER[k * STAGE] for k in range(LOOKS)]
    out, doc, asked = run_session(tmp_path, "borderline", wrong, "--references", str(reference_dir))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert looks_of(doc) == [(50, 1, 0, "continue"), (100, 2, 0, "continue"), (150, 3, 0, "continue"),
                             (200, 4, 0, "no_regression")]
    assert doc["staged"]["stopped_early"] is False and doc["gate"]["verdict"] == "pass"
    assert "staged: look 4 of 4 decided no_regression after 200 of 200 questions" in doc["gate"]["reason"]
    asked_first(asked, QUESTIONS)
    assert len(doc["samples"]) == QUESTIONS and doc["metrics"]["strict_match"] == (QUESTIONS - 4) / QUESTIONS


@pytest.mark.integration
def test_full_asks_every_question_with_a_reference(tmp_path, reference_dir):
    """--full: the unstaged path (no stage folder for lm-eval), judged by the fixed paired test."""
    wrong = [ORDER[0]]
    out, doc, asked = run_session(tmp_path, "full", wrong, "--references", str(reference_dir), "--full")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "staged" not in doc and len(asked) == QUESTIONS and len(doc["samples"]) == QUESTIONS
    assert doc["gate"]["verdict"] == "pass" and doc["gate"]["checks"][0]["lost_doc_ids"] == wrong
    assert "every question is asked: --full" in out.stdout + out.stderr
    assert not (Path(doc["artifacts"]["work_dir"]) / staging.STAGE_DIR).exists()
