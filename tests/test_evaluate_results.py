"""lm-eval's outputs read back, the local dataset task, the session JSON written atomically and masked."""

from __future__ import annotations

import json
import os

import pytest

from gsm8k_bench import evaluate, results
from gsm8k_bench.errors import ConfigError, EvalError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def fake_lm_eval_output(root, task="gsm8k_local"):
    """The layout and field shapes lm-eval 0.4.13 writes (some fields as Python reprs)."""
    out = root / "model"
    out.mkdir(parents=True)
    (out / "results_2026-01-01T00-00-00.json").write_text(json.dumps({
        "results": {task: {"exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": 0.5,
                           "exact_match,flexible-extract": 1.0, "exact_match_stderr,flexible-extract": 0.0}},
        "n-samples": {task: {"original": 1319, "effective": 2}},
        "configs": {task: {"generation_kwargs": {"until": ["Question:"], "do_sample": False}}},
        "lm_eval_version": "0.4.13",
    }))
    doc0 = {"question": "Two apples and one more?", "answer": "2+1=3\n#### 3"}
    doc1 = {"question": "Ten minus four?", "answer": "10-4=6\n#### 6"}
    rows = []
    for flt, answers, correct in (("strict-match", ["3", "[invalid]"], [1.0, 0.0]),
                                  ("flexible-extract", ["3", "6"], [1.0, 1.0])):
        rows.append({"doc_id": 0, "doc": doc0, "target": doc0["answer"], "resps": [[" 2+1=3\n#### 3"]],
                     "filtered_resps": [answers[0]], "filter": flt, "exact_match": correct[0]})
        rows.append({"doc_id": 1, "doc": repr(doc1), "target": doc1["answer"],
                     "resps": repr([[" It is 6."]]), "filtered_resps": [answers[1]], "filter": flt,
                     "exact_match": correct[1]})
    write_jsonl(out / f"samples_{task}_2026-01-01T00-00-00.jsonl", rows)
    return root


def test_parse_outputs_merges_filters_per_question(tmp_path):
    output = evaluate.parse_outputs(fake_lm_eval_output(tmp_path), "gsm8k_local")
    assert output.metrics == {"strict_match": 0.5, "strict_match_stderr": 0.5, "flexible_extract": 1.0,
                              "flexible_extract_stderr": 0.0, "n": 2,
                              "answer_sources": None, "truncated": None}  # a completions run records none
    first, second = output.samples
    assert first == {"doc_id": 0, "question": "Two apples and one more?", "target": "2+1=3\n#### 3",
                     "response": " 2+1=3\n#### 3", "strict_answer": "3", "strict_correct": True,
                     "flexible_answer": "3", "flexible_correct": True}
    assert second["question"] == "Ten minus four?" and second["response"] == " It is 6."
    assert (second["strict_correct"], second["flexible_correct"]) == (False, True)
    assert output.generation == {"until": ["Question:"], "do_sample": False}


def test_parse_outputs_without_results_is_an_error(tmp_path):
    with pytest.raises(EvalError, match="wrote no results_"):
        evaluate.parse_outputs(tmp_path, "gsm8k")


def make_dataset(path, answer="x\n#### 4"):
    path.mkdir(exist_ok=True)
    for split in ("train", "test"):
        write_jsonl(path / f"{split}.jsonl", [{"question": "2+2?", "answer": answer}])
    return path


def test_dataset_dir_validation_names_the_file(tmp_path):
    evaluate.validate_dataset_dir(make_dataset(tmp_path / "ok"))
    with pytest.raises(ConfigError, match="not a directory"):
        evaluate.validate_dataset_dir(tmp_path / "absent")
    missing = make_dataset(tmp_path / "missing")
    (missing / "train.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"missing/train\.jsonl: missing"):
        evaluate.validate_dataset_dir(missing)
    garbled = make_dataset(tmp_path / "garbled")
    (garbled / "test.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match=r"garbled/test\.jsonl:1: not JSON lines"):
        evaluate.validate_dataset_dir(garbled)
    with pytest.raises(ConfigError, match="must end with '#### <number>'"):
        evaluate.validate_dataset_dir(make_dataset(tmp_path / "noanswer", answer="four"))


def test_local_task_includes_the_stock_task_and_swaps_the_files(tmp_path):
    import yaml

    data = make_dataset(tmp_path / "data")
    stock = tmp_path / "stock" / "gsm8k.yaml"
    assert evaluate.write_task(None, tmp_path / "hub", stock) == "gsm8k"
    assert yaml.safe_load((tmp_path / "hub" / "gsm8k.yaml").read_text()) == {"include": str(stock)}
    assert evaluate.write_task(data, tmp_path / "task", stock) == "gsm8k_local"
    task = yaml.safe_load((tmp_path / "task" / "gsm8k_local.yaml").read_text())
    assert task == {"include": str(tmp_path / "stock" / "gsm8k.yaml"), "task": "gsm8k_local",
                    "dataset_path": "json", "dataset_name": None,
                    "dataset_kwargs": {"data_files": {"train": str(data / "train.jsonl"),
                                                      "test": str(data / "test.jsonl")}}}


def test_write_atomic_masks_secrets_and_leaves_no_temp_file(tmp_path, monkeypatch):
    secret = "hf_" + "Z" * 34
    monkeypatch.setenv("HF_TOKEN", secret)
    path = results.write_atomic(tmp_path / "s.json", {"schema": 1, "session": "s",
                                                      "error": {"log_tail": f"Bearer {secret} refused"}})
    text = path.read_text()
    assert secret not in text and "Bearer *** refused" in text
    assert os.listdir(tmp_path) == ["s.json"]
    assert results.read(path)["session"] == "s"
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a gsm8k-bench session JSON"):
        results.read(tmp_path / "other.json")


def test_mask_ignores_short_and_non_secret_values():
    env = {"HF_TOKEN": "abc", "PATH": "/usr/bin", "MY_API_KEY": "sk-123456"}
    assert results.mask("abc /usr/bin sk-123456", env) == "abc /usr/bin ***"
