"""lm-eval's outputs read back, the local dataset task, the session JSON written atomically and masked."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from conftest import SHARED_GSM8K, fill_disk, require

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import ConfigError, EvalError
from gsm8k_bench.evaluation import fingerprint, harness
from gsm8k_bench.serving import venvs


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_dummy_lm_eval(tmp_path, output_dir, limit):
    """lm-eval itself (its own CLI: the session's driver only runs the API models), with its `dummy` model
    (it answers "lol"), on GSM8K's files, with the session's flags."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    python = venvs.ensure_venv(venvs.LM_EVAL)
    task = harness.write_task(SHARED_GSM8K, tmp_path / "task",
                               harness.stock_task_file(venvs.venv_dir(venvs.LM_EVAL)))
    settings = harness.EvalSettings("completions", num_fewshot=5, limit=limit, concurrency=1,
                                     request_timeout_s=5, max_retries=0, max_gen_toks=256)
    argv = harness.lm_eval_command(python, settings, served_name="dummy", base_url="http://127.0.0.1:9",
                                    output_dir=output_dir, task=task, include_path=tmp_path / "task")
    argv[argv.index("--model") + 1], argv[argv.index("--model_args") + 1] = "dummy", ""
    argv = [argv[0], "-m", "lm_eval", "run", *argv[2:]]  # the driver's flags are lm_eval's own
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return task


@pytest.mark.integration
def test_parse_outputs_of_a_real_lm_eval_run_and_the_newest_wins(tmp_path):
    output_dir = tmp_path / "lm-eval"
    run_dummy_lm_eval(tmp_path, output_dir, limit=2)
    time.sleep(0.01)  # the second run's files are strictly newer, by name and by mtime
    task = run_dummy_lm_eval(tmp_path, output_dir, limit=3)
    results_files = sorted(output_dir.rglob("results_*.json"))
    assert len(results_files) == 2 and len(list(output_dir.rglob(f"samples_{task}_*.jsonl"))) == 2

    output = harness.parse_outputs(output_dir, task)
    newest = json.loads(results_files[-1].read_text())
    assert output.results_file == results_files[-1] and newest["n-samples"][task]["effective"] == 3
    assert output.samples_file.name == f"samples_{task}_{results_files[-1].name.removeprefix('results_')}l"
    scores = newest["results"][task]
    assert output.metrics == {"strict_match": scores["exact_match,strict-match"],
                              "strict_match_stderr": scores["exact_match_stderr,strict-match"],
                              "flexible_extract": scores["exact_match,flexible-extract"],
                              "flexible_extract_stderr": scores["exact_match_stderr,flexible-extract"],
                              # the stock model's client records nothing: no sources, no labels
                              "n": 3, "answer_sources": None, "truncated": None, "outcomes": None}
    assert output.lm_eval_version == "0.4.13"
    assert output.generation == newest["configs"][task]["generation_kwargs"]
    assert output.generation["until"] == ["Question:", "</s>", "<|im_end|>"]
    # The protocol fingerprint of what lm-eval sent, from its own samples file: the smoke run of 2 and the
    # run of 3 share the template (few-shot examples, format), not the requests.
    smaller = sorted(output_dir.rglob(f"samples_{task}_*.jsonl"))[0]
    three = fingerprint.of_outputs(output.samples_file, output.results_file)
    two = fingerprint.of_outputs(smaller, results_files[0])
    assert (three["n"], two["n"]) == (3, 2) and three["parts"]["chat_template"] is None
    assert {p for p in fingerprint.PARTS if three["parts"][p] != two["parts"][p]} == {"requests"}
    first = json.loads(output.samples_file.read_text(encoding="utf-8").splitlines()[0])
    assert first["arguments"]["gen_args_0"]["arg_1"]["until"] == ["Question:", "</s>", "<|im_end|>"]
    rows = [json.loads(line) for line in (SHARED_GSM8K / "test.jsonl").open(encoding="utf-8")][:3]
    assert output.samples == [
        {"doc_id": i, "question": row["question"], "target": row["answer"], "response": "lol",
         "strict_answer": "[invalid]", "strict_correct": False,
         "flexible_answer": "[invalid]", "flexible_correct": False, "outcome": None}
        for i, row in enumerate(rows)]


def test_parse_outputs_without_results_is_an_error(tmp_path):
    with pytest.raises(EvalError, match="wrote no results_"):
        harness.parse_outputs(tmp_path, "gsm8k")


def make_dataset(path, answer="x\n#### 4"):
    path.mkdir(exist_ok=True)
    for split in ("train", "test"):
        write_jsonl(path / f"{split}.jsonl", [{"question": "2+2?", "answer": answer}])
    return path


def test_dataset_dir_validation_names_the_file(tmp_path):
    harness.validate_dataset_dir(make_dataset(tmp_path / "ok"))
    with pytest.raises(ConfigError, match="not a directory"):
        harness.validate_dataset_dir(tmp_path / "absent")
    missing = make_dataset(tmp_path / "missing")
    (missing / "train.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"missing/train\.jsonl: missing"):
        harness.validate_dataset_dir(missing)
    garbled = make_dataset(tmp_path / "garbled")
    (garbled / "test.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match=r"garbled/test\.jsonl:1: not JSON lines"):
        harness.validate_dataset_dir(garbled)
    with pytest.raises(ConfigError, match="must end with '#### <number>'"):
        harness.validate_dataset_dir(make_dataset(tmp_path / "noanswer", answer="four"))


def test_local_task_includes_the_stock_task_and_swaps_the_files(tmp_path):
    import yaml

    data = make_dataset(tmp_path / "data")
    stock = tmp_path / "stock" / "gsm8k.yaml"
    assert harness.write_task(None, tmp_path / "hub", stock) == "gsm8k"
    assert yaml.safe_load((tmp_path / "hub" / "gsm8k.yaml").read_text()) == {"include": str(stock)}
    assert harness.write_task(data, tmp_path / "task", stock) == "gsm8k_local"
    task = yaml.safe_load((tmp_path / "task" / "gsm8k_local.yaml").read_text())
    assert task == {"include": str(tmp_path / "stock" / "gsm8k.yaml"), "task": "gsm8k_local",
                    "dataset_path": "json", "dataset_name": None,
                    "dataset_kwargs": {"data_files": {"train": str(data / "train.jsonl"),
                                                      "test": str(data / "test.jsonl")}}}


def test_write_atomic_masks_secrets_and_leaves_no_temp_file(tmp_path, monkeypatch):
    secret = "hf_" + "Z" * 34
    monkeypatch.setenv("HF_TOKEN", secret)
    path = results.write_atomic(tmp_path / "s.json", {"schema": 1, "session": "s", "status": "failed",
                                                      "error": {"message": "server start: exited",
                                                                "log_tail": f"Bearer {secret} refused"}})
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


@pytest.mark.integration
def test_lm_eval_outputs_cut_short_by_a_full_disk_are_an_eval_error(tmp_path, small_disk):
    """lm-eval writes its outputs onto a real full filesystem: reading them back is a clear EvalError
    naming the file, never a JSONDecodeError."""
    output_dir = small_disk / "lm-eval"
    output_dir.mkdir()
    fill_disk(small_disk)
    task = run_dummy_lm_eval(tmp_path, output_dir, limit=3)
    with pytest.raises(EvalError, match=r"lm-eval's output is cut short \(a full disk\?\)"):
        harness.parse_outputs(output_dir, task)
