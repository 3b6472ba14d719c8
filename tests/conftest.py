from __future__ import annotations

import importlib
import os
import resource
import shutil
import subprocess
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from gsm8k_bench.matrix.loader import load_matrix, parse_matrix
from gsm8k_bench.matrix.types import Matrix

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


# Every session matrix.yaml makes today, written out: a change to naming or to the product shows here.
SEED_SESSIONS = [
    "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1", "gsm8k-qwen2.5-coder-1.5b-cpu-vllm-fp16-tp1",
    "gsm8k-llama-3.1-8b-h100-vllm-fp16-tp1",
    "gsm8k-llama-3.1-8b-h100-vllm-fp8-tp1", "gsm8k-llama-3.1-8b-h100-sglang-fp16-tp1",
    "gsm8k-llama-3.1-8b-h100-sglang-fp8-tp1", "gsm8k-llama-3.1-8b-h200-vllm-fp16-tp1",
    "gsm8k-llama-3.1-8b-h200-vllm-fp8-tp1", "gsm8k-llama-3.1-8b-h200-sglang-fp16-tp1",
    "gsm8k-llama-3.1-8b-h200-sglang-fp8-tp1", "gsm8k-llama-3.1-8b-b200-vllm-fp16-tp1",
    "gsm8k-llama-3.1-8b-b200-vllm-fp8-tp1", "gsm8k-llama-3.1-8b-b200-vllm-fp4-tp1",
    "gsm8k-llama-3.1-8b-b200-sglang-fp16-tp1", "gsm8k-llama-3.1-8b-b200-sglang-fp8-tp1",
    "gsm8k-llama-3.1-8b-b200-sglang-fp4-tp1", "gsm8k-llama-3.1-8b-mi300x-vllm-fp16-tp1",
    "gsm8k-llama-3.1-8b-mi300x-vllm-fp8-tp1", "gsm8k-llama-3.1-8b-mi300x-sglang-fp16-tp1",
    "gsm8k-llama-3.1-8b-mi300x-sglang-fp8-tp1", "gsm8k-llama-3.1-8b-mi325x-vllm-fp16-tp1",
    "gsm8k-llama-3.1-8b-mi325x-vllm-fp8-tp1", "gsm8k-llama-3.1-8b-mi325x-sglang-fp16-tp1",
    "gsm8k-llama-3.1-8b-mi325x-sglang-fp8-tp1", "gsm8k-llama-3.1-8b-mi355x-vllm-fp16-tp1",
    "gsm8k-llama-3.1-8b-mi355x-vllm-fp8-tp1", "gsm8k-llama-3.1-8b-mi355x-sglang-fp16-tp1",
    "gsm8k-llama-3.1-8b-mi355x-sglang-fp8-tp1", "gsm8k-llama-3.3-70b-h100-vllm-fp16-tp4",
    "gsm8k-llama-3.3-70b-h100-vllm-fp16-tp8", "gsm8k-llama-3.3-70b-h100-vllm-fp8-tp4",
    "gsm8k-llama-3.3-70b-h100-vllm-fp8-tp8", "gsm8k-llama-3.3-70b-h100-sglang-fp16-tp4",
    "gsm8k-llama-3.3-70b-h100-sglang-fp16-tp8", "gsm8k-llama-3.3-70b-h100-sglang-fp8-tp4",
    "gsm8k-llama-3.3-70b-h100-sglang-fp8-tp8", "gsm8k-llama-3.3-70b-h200-vllm-fp16-tp4",
    "gsm8k-llama-3.3-70b-h200-vllm-fp16-tp8", "gsm8k-llama-3.3-70b-h200-vllm-fp8-tp4",
    "gsm8k-llama-3.3-70b-h200-vllm-fp8-tp8", "gsm8k-llama-3.3-70b-h200-sglang-fp16-tp4",
    "gsm8k-llama-3.3-70b-h200-sglang-fp16-tp8", "gsm8k-llama-3.3-70b-h200-sglang-fp8-tp4",
    "gsm8k-llama-3.3-70b-h200-sglang-fp8-tp8", "gsm8k-llama-3.3-70b-b200-vllm-fp16-tp4",
    "gsm8k-llama-3.3-70b-b200-vllm-fp16-tp8", "gsm8k-llama-3.3-70b-b200-vllm-fp8-tp4",
    "gsm8k-llama-3.3-70b-b200-vllm-fp8-tp8", "gsm8k-llama-3.3-70b-b200-vllm-fp4-tp4",
    "gsm8k-llama-3.3-70b-b200-vllm-fp4-tp8", "gsm8k-llama-3.3-70b-b200-sglang-fp16-tp4",
    "gsm8k-llama-3.3-70b-b200-sglang-fp16-tp8", "gsm8k-llama-3.3-70b-b200-sglang-fp8-tp4",
    "gsm8k-llama-3.3-70b-b200-sglang-fp8-tp8", "gsm8k-llama-3.3-70b-b200-sglang-fp4-tp4",
    "gsm8k-llama-3.3-70b-b200-sglang-fp4-tp8", "gsm8k-llama-3.3-70b-mi300x-vllm-fp16-tp4",
    "gsm8k-llama-3.3-70b-mi300x-vllm-fp16-tp8", "gsm8k-llama-3.3-70b-mi300x-vllm-fp8-tp4",
    "gsm8k-llama-3.3-70b-mi300x-vllm-fp8-tp8", "gsm8k-llama-3.3-70b-mi300x-sglang-fp16-tp4",
    "gsm8k-llama-3.3-70b-mi300x-sglang-fp16-tp8", "gsm8k-llama-3.3-70b-mi300x-sglang-fp8-tp4",
    "gsm8k-llama-3.3-70b-mi300x-sglang-fp8-tp8", "gsm8k-llama-3.3-70b-mi325x-vllm-fp16-tp4",
    "gsm8k-llama-3.3-70b-mi325x-vllm-fp16-tp8", "gsm8k-llama-3.3-70b-mi325x-vllm-fp8-tp4",
    "gsm8k-llama-3.3-70b-mi325x-vllm-fp8-tp8", "gsm8k-llama-3.3-70b-mi325x-sglang-fp16-tp4",
    "gsm8k-llama-3.3-70b-mi325x-sglang-fp16-tp8", "gsm8k-llama-3.3-70b-mi325x-sglang-fp8-tp4",
    "gsm8k-llama-3.3-70b-mi325x-sglang-fp8-tp8", "gsm8k-llama-3.3-70b-mi355x-vllm-fp16-tp4",
    "gsm8k-llama-3.3-70b-mi355x-vllm-fp16-tp8", "gsm8k-llama-3.3-70b-mi355x-vllm-fp8-tp4",
    "gsm8k-llama-3.3-70b-mi355x-vllm-fp8-tp8", "gsm8k-llama-3.3-70b-mi355x-vllm-fp4-tp4",
    "gsm8k-llama-3.3-70b-mi355x-vllm-fp4-tp8", "gsm8k-llama-3.3-70b-mi355x-sglang-fp16-tp4",
    "gsm8k-llama-3.3-70b-mi355x-sglang-fp16-tp8", "gsm8k-llama-3.3-70b-mi355x-sglang-fp8-tp4",
    "gsm8k-llama-3.3-70b-mi355x-sglang-fp8-tp8", "gsm8k-llama-3.3-70b-mi355x-sglang-fp4-tp4",
    "gsm8k-llama-3.3-70b-mi355x-sglang-fp4-tp8",
    # gpt-oss-120b: MXFP4 only, so fp4 on the chips that run it natively, at tp 1 and 8.
    "gsm8k-gpt-oss-120b-b200-vllm-fp4-tp1", "gsm8k-gpt-oss-120b-b200-vllm-fp4-tp8",
    "gsm8k-gpt-oss-120b-b200-sglang-fp4-tp1", "gsm8k-gpt-oss-120b-b200-sglang-fp4-tp8",
    "gsm8k-gpt-oss-120b-mi355x-vllm-fp4-tp1", "gsm8k-gpt-oss-120b-mi355x-vllm-fp4-tp8",
    "gsm8k-gpt-oss-120b-mi355x-sglang-fp4-tp1", "gsm8k-gpt-oss-120b-mi355x-sglang-fp4-tp8",
    # DeepSeek-R1: fp8 on h200 and every AMD chip and B200, fp4 where it is native; tp 8 only.
    "gsm8k-deepseek-r1-h200-vllm-fp8-tp8", "gsm8k-deepseek-r1-h200-sglang-fp8-tp8",
    "gsm8k-deepseek-r1-b200-vllm-fp8-tp8", "gsm8k-deepseek-r1-b200-vllm-fp4-tp8",
    "gsm8k-deepseek-r1-b200-sglang-fp8-tp8", "gsm8k-deepseek-r1-b200-sglang-fp4-tp8",
    "gsm8k-deepseek-r1-mi300x-vllm-fp8-tp8", "gsm8k-deepseek-r1-mi300x-sglang-fp8-tp8",
    "gsm8k-deepseek-r1-mi325x-vllm-fp8-tp8", "gsm8k-deepseek-r1-mi325x-sglang-fp8-tp8",
    "gsm8k-deepseek-r1-mi355x-vllm-fp8-tp8", "gsm8k-deepseek-r1-mi355x-vllm-fp4-tp8",
    "gsm8k-deepseek-r1-mi355x-sglang-fp8-tp8", "gsm8k-deepseek-r1-mi355x-sglang-fp4-tp8",
]

# precision, framework, vendor, pre-quantized checkpoint? -> (--dtype, --quantization, --kv-cache-dtype), as the
# precision table in docs/matrix.md states them; written out, never read from the objects the command builder reads.
SERVER_FLAGS = {
    ("fp16", "vllm", "nvidia", False): ("bfloat16", None, None),
    ("fp16", "vllm", "amd", False): ("bfloat16", None, None),
    ("fp16", "vllm", "cpu", False): ("bfloat16", None, None),
    ("fp16", "sglang", "nvidia", False): ("bfloat16", None, None),
    ("fp16", "sglang", "amd", False): ("bfloat16", None, None),
    # FP8: a pre-quantized checkpoint carries its method; without one the server quantizes online.
    ("fp8", "vllm", "nvidia", True): ("bfloat16", None, "fp8"),
    ("fp8", "vllm", "amd", True): ("bfloat16", None, "fp8"),
    ("fp8", "sglang", "nvidia", True): ("bfloat16", None, "fp8_e4m3"),
    ("fp8", "sglang", "amd", True): ("bfloat16", None, "fp8_e4m3"),
    ("fp8", "vllm", "nvidia", False): ("bfloat16", "fp8", "fp8"),
    ("fp8", "vllm", "amd", False): ("bfloat16", "fp8", "fp8"),
    ("fp8", "sglang", "nvidia", False): ("bfloat16", "fp8", "fp8_e4m3"),
    ("fp8", "sglang", "amd", False): ("bfloat16", "fp8", "fp8_e4m3"),
    # FP4: pre-quantized only; vLLM reads the method from the checkpoint, SGLang is told it per vendor.
    ("fp4", "vllm", "nvidia", True): ("bfloat16", None, None),
    ("fp4", "vllm", "amd", True): ("bfloat16", None, None),
    ("fp4", "sglang", "nvidia", True): ("bfloat16", "modelopt_fp4", None),
    ("fp4", "sglang", "amd", True): ("bfloat16", "quark", None),
}


# A model whose checkpoint carries another method than its precision's: (model, framework) -> quantization.
MODEL_QUANTIZATION = {("gpt-oss-120b", "sglang"): "mxfp4"}


def expected_server_flags(combo) -> tuple[str | None, str | None, str | None]:
    # Pre-quantized when matrix.yaml lists a checkpoint for the precision (on this vendor): DeepSeek-R1's
    # and gpt-oss's own checkpoints are FP8 and MXFP4, listed under their names.
    listed = combo.model.checkpoints.get(combo.precision.name, {})
    prequantized = combo.runner.vendor in listed or "*" in listed
    dtype, quantization, kv_cache = SERVER_FLAGS[combo.precision.name, combo.framework.name, combo.runner.vendor,
                                                 prequantized]
    if prequantized and quantization:
        quantization = MODEL_QUANTIZATION.get((combo.model.name, combo.framework.name), quantization)
    return dtype, quantization, kv_cache


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):  # matrix.yaml and baselines.yaml refuse anchors and aliases
        return True


def yaml_text(data) -> str:
    """YAML for a test's own matrix or baselines file, every repeated value written out."""
    return yaml.dump(data, Dumper=_NoAliases, sort_keys=False)


@pytest.fixture
def small_disk(tmp_path):
    """A real 32 MB tmpfs (mounting needs root), unmounted when the test ends; fill_disk takes its space."""
    require(os.geteuid() == 0 and shutil.which("mount") is not None, "root and mount(8), for a real tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)  # lazy: a process still in it cannot block


def fill_disk(disk: Path) -> None:
    """Write to `disk` until it has no free byte left."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                continue
    finally:
        os.close(fd)


MUTANT_CPU_S = 60  # a mutant's tests take a few CPU seconds; one that loops forever is stopped here


def pytest_configure(config):
    """Under mutmut, a mutant's tests are bounded by the CPU time they use, not by the wall clock:
    `nox -s ci` runs the mutation score at idle CPU priority, where a worker may wait minutes for a core,
    and a wait must not pass for a hang (mutmut counts a timeout as a kill).  pyproject's [tool.mutmut]
    sets its wall-clock limit past any such wait; the kernel stops a mutant that loops (SIGXCPU, which
    mutmut reads as a timeout)."""
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    limit = int(usage.ru_utime + usage.ru_stime) + MUTANT_CPU_S
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (limit, limit + 1 if hard == resource.RLIM_INFINITY else
                                             min(limit + 1, hard)))


def pytest_collection_modifyitems(config, items):
    """Under mutmut (`nox -s mutation`), a mutant's tests run cheapest first: mutmut stops at the first
    failure (-x) but hands them over in no order, so a killed mutant otherwise often pays for a slow test
    (a nox subprocess, a plot) that a fast one would have killed just as surely.  The durations are those
    of mutmut's own stats run, which each forked worker inherits."""
    if "MUTANT_UNDER_TEST" not in os.environ:
        return
    try:
        from mutmut.state import state
    except ImportError:
        return
    durations = state().duration_by_test
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
