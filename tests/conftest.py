from __future__ import annotations

import importlib
import os
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from gsm8k_bench.matrix import Matrix, load_matrix, parse_matrix

ROOT = Path(__file__).resolve().parent.parent
# GSM8K's real files: the CI folder beside the checkout, or wherever GSM8K_DATASET_DIR points.
SHARED_GSM8K = Path(os.environ.get("GSM8K_DATASET_DIR", ROOT.parent / "shared" / "gsm8k")).resolve()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally when a real part is missing; in CI a missing part is a failure, never a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_module(name: str) -> ModuleType:
    """A test dependency, imported; missing, it is a skip locally and a failure in CI (unlike importorskip)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        require(False, f"Python package {name} ({exc})")


@pytest.fixture(scope="session")
def matrix() -> Matrix:
    return load_matrix(ROOT / "matrix.yaml")


MINIMAL = """\
version: 1
runners:
  h100: {vendor: nvidia, gpus: 8, label: h100-cr, precisions: [fp16, fp8]}
  mi355x: {vendor: amd, gpus: 8, label: mi355x-amd, precisions: [fp16, fp8, fp4]}
  cpu: {vendor: cpu, gpus: 0, label: ubuntu-24.04, precisions: [fp16]}
frameworks:
  vllm:
    port: 8000
    images: {nvidia: vllm/vllm-openai:v1, amd: vllm/vllm-openai-rocm:v1, cpu: local/vllm-cpu:1}
  sglang:
    port: 30000
    images: {nvidia: lmsysorg/sglang:v1, amd: lmsysorg/sglang:v1-rocm}
precisions:
  fp16: {vllm: {dtype: bfloat16}, sglang: {dtype: bfloat16}}
  fp8:
    vllm: {dtype: bfloat16, online_quantization: fp8, kv_cache_dtype: fp8}
    sglang: {dtype: bfloat16, online_quantization: fp8, kv_cache_dtype: fp8_e4m3}
  fp4:
    checkpoint_required: true
    vllm: {dtype: bfloat16}
    sglang: {dtype: bfloat16, checkpoint_quantization: {amd: quark}}
models:
  tiny:
    checkpoint: org/tiny
    runners: [h100, mi355x]
    frameworks: [vllm, sglang]
    precisions: [fp16, fp8, fp4]
    tp: [1, 2]
    checkpoints:
      fp4: {amd: org/tiny-mxfp4}
"""


def parse(text: str, name: str = "matrix.yaml") -> Matrix:
    return parse_matrix(textwrap.dedent(text), Path(name))
