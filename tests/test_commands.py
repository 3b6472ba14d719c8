"""The exact server, container and lm-eval commands each combination produces (pure; no servers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MINIMAL, ROOT, SEED_SESSIONS, expected_server_flags, parse

from gsm8k_bench.core.errors import BenchError, ConfigError
from gsm8k_bench.serving import venvs
from gsm8k_bench.serving.frameworks import FRAMEWORKS, ServeTarget
from gsm8k_bench.session.options import parse_session_args
from gsm8k_bench.session.plan import dry_run_text, host_facts, plan_session

MINIMAL_WITH_ARGS = MINIMAL + ("    server_args: {sglang: [--trust-remote-code, --mem-fraction-static], "
                               "vllm: [--enforce-eager]}\n")
TOKEN = "hf_" + "Q" * 34  # shaped like a real token; must never be printed


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def plan_for(matrix, name, *args, environ=None):
    combo = matrix.get(name)
    options = parse_session_args(name, list(args))
    return plan_session(combo, options, matrix.defaults, host_facts(combo, options, environ or {}))


def test_every_combination_builds_its_precision_into_the_server_command(matrix):
    for combo in matrix.combinations:
        target = ServeTarget(combo.checkpoint, combo.model.name, "127.0.0.1", combo.framework.port)
        argv = FRAMEWORKS[combo.framework.name].server_command(combo, target)
        dtype, quantization, kv_cache = expected_server_flags(combo)
        tp_flag = "--tensor-parallel-size" if combo.framework.name == "vllm" else "--tp"
        assert flag(argv, tp_flag) == str(combo.tp), combo.name
        assert flag(argv, "--dtype") == dtype, combo.name
        assert flag(argv, "--quantization") == quantization, combo.name
        assert flag(argv, "--kv-cache-dtype") == kv_cache, combo.name
        assert flag(argv, "--served-model-name") == combo.model.name
        assert flag(argv, "--port") == str(combo.framework.port)
        if combo.framework.name == "vllm":
            assert argv[:3] == ["vllm", "serve", combo.checkpoint]
            assert flag(argv, "--max-model-len") == str(combo.model.max_model_len)
        else:
            assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
            assert flag(argv, "--model-path") == combo.checkpoint
            assert flag(argv, "--context-length") == str(combo.model.max_model_len)


@pytest.mark.parametrize(
    ("session", "quantization", "kv_cache", "checkpoint"),
    [
        ("gsm8k-llama-3.1-8b-h100-vllm-fp16-tp1", None, None, "meta-llama/Llama-3.1-8B-Instruct"),
        # A pre-quantized FP8 checkpoint: vLLM reads the method from its config.
        ("gsm8k-llama-3.1-8b-h100-vllm-fp8-tp1", None, "fp8", "RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8"),
        ("gsm8k-llama-3.1-8b-b200-vllm-fp4-tp1", None, None, "nvidia/Llama-3.1-8B-Instruct-FP4"),
        ("gsm8k-llama-3.1-8b-b200-sglang-fp4-tp1", "modelopt_fp4", None, "nvidia/Llama-3.1-8B-Instruct-FP4"),
        ("gsm8k-llama-3.3-70b-mi355x-sglang-fp4-tp8", "quark", None, "amd/Llama-3.3-70B-Instruct-MXFP4-Preview"),
        ("gsm8k-llama-3.3-70b-mi300x-sglang-fp8-tp4", None, "fp8_e4m3", "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic"),
    ],
)
def test_precision_mapping_examples(matrix, session, quantization, kv_cache, checkpoint):
    plan = plan_for(matrix, session)
    assert flag(plan.server_argv, "--quantization") == quantization
    assert flag(plan.server_argv, "--kv-cache-dtype") == kv_cache
    assert checkpoint in plan.server_argv


@pytest.mark.parametrize("session", ["gsm8k-llama-3.1-8b-h200-vllm-fp8-tp1", "gsm8k-llama-3.1-8b-mi300x-vllm-fp8-tp1",
                                     "gsm8k-llama-3.1-8b-h200-sglang-fp8-tp1",
                                     "gsm8k-llama-3.1-8b-mi325x-sglang-fp8-tp1"])
def test_online_fp8_quantization_when_the_model_has_no_fp8_checkpoint(session):
    text = (ROOT / "matrix.yaml").read_text().replace("      fp8: RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8\n", "")
    combo = parse(text).get(session)
    assert combo.checkpoint == "meta-llama/Llama-3.1-8B-Instruct"
    argv = FRAMEWORKS[combo.framework.name].server_command(combo, ServeTarget("m", "s", "127.0.0.1", 8000))
    dtype, quantization, kv_cache = expected_server_flags(combo)
    assert quantization == "fp8"
    assert (flag(argv, "--dtype"), flag(argv, "--quantization"), flag(argv, "--kv-cache-dtype")) == (
        dtype, quantization, kv_cache)


def test_nvidia_container_spec(matrix):
    spec = plan_for(matrix, "gsm8k-llama-3.3-70b-h100-vllm-fp8-tp4").container
    assert spec.image == "vllm/vllm-openai:v0.32.0"
    assert spec.device.gpu_ids == ("0", "1", "2", "3") and spec.device.devices == ()
    assert spec.device.ipc_mode == "host" and spec.device.shm_size
    assert spec.network_mode == "host"
    assert spec.secret_env == ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    assert "HF_TOKEN" not in spec.environment
    run = spec.docker_run_argv()
    assert run[run.index("--gpus") + 1] == '"device=0,1,2,3"'
    assert "--env=HF_TOKEN" in run
    assert any(a.startswith("--volume=") and a.endswith(":/root/.cache/huggingface") for a in run)
    assert run[run.index("--entrypoint") + 1: run.index("--entrypoint") + 4] == [
        "vllm", "vllm/vllm-openai:v0.32.0", "serve"]


def test_amd_container_spec(matrix):
    plan = plan_for(matrix, "gsm8k-llama-3.1-8b-mi300x-vllm-fp16-tp1")
    spec = plan.container
    assert spec.device.devices == ("/dev/kfd", "/dev/dri")  # no KFD topology here: narrowed by variables
    assert spec.environment["ROCR_VISIBLE_DEVICES"] == "0"
    assert spec.device.group_add == ("video", "render")
    assert spec.device.security_opt == ("seccomp=unconfined",)
    assert spec.device.ipc_mode == "host" and spec.device.gpu_ids == ()
    assert spec.environment["VLLM_ROCM_USE_AITER"] == "1"
    sglang = plan_for(matrix, "gsm8k-llama-3.3-70b-mi355x-sglang-fp16-tp8").container
    assert sglang.image.endswith("-mi35x")  # the runner-specific image wins over the vendor's
    assert sglang.environment["SGLANG_USE_AITER"] == "1"


def test_cpu_defaults_to_the_process_launcher_with_the_shared_vllm_env(matrix):
    plan = plan_for(matrix, "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1")
    assert plan.launcher == "process" and plan.container is None
    assert plan.server_argv[:3] == [str(venvs.venv_python(venvs.VLLM_CPU)), "-m",
                                    "vllm.entrypoints.openai.api_server"]
    assert plan.server_env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert plan.settings.limit == 20  # the model's CPU default
    assert "--enforce-eager" in plan.server_argv
    docker = plan_for(matrix, "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1", "--launcher", "docker",
                      "--model-source", "package")
    assert docker.container.device.gpu_ids == () and docker.container.device.devices == ()
    assert docker.server_argv[:2] == ["python3", "-m"]
    mount = next(m for m in docker.container.mounts if m.target.startswith("/models/"))
    assert mount.read_only and flag(docker.server_argv, "--model") == mount.target


def test_lm_eval_command_follows_the_protocol(matrix, tmp_path):
    completions = plan_for(matrix, "gsm8k-llama-3.1-8b-h100-vllm-fp16-tp1", "--limit", "7",
                           "--num-fewshot", "3", "--dataset-dir", str(tmp_path))
    argv = completions.lm_eval_argv
    assert flag(argv, "--model") == "local-completions"
    args = dict(kv.split("=", 1) for kv in flag(argv, "--model_args").split(","))
    assert args["base_url"] == "http://127.0.0.1:8000/v1/completions"
    assert args["tokenized_requests"] == "False" and args["num_concurrent"] == "64"
    assert flag(argv, "--limit") == "7" and flag(argv, "--num_fewshot") == "3"
    assert flag(argv, "--tasks") == "gsm8k_local" and flag(argv, "--include_path")
    assert "--apply_chat_template" not in argv
    chat = plan_for(matrix, "gsm8k-llama-3.3-70b-h100-vllm-fp16-tp4").lm_eval_argv
    assert flag(chat, "--model") == "local-chat-completions"
    assert "--apply_chat_template" in chat and "--fewshot_as_multiturn" in chat
    assert flag(chat, "--tasks") == "gsm8k" and flag(chat, "--include_path")
    assert "--limit" not in chat  # full run unless asked


def test_dataset_dir_from_the_environment(matrix, tmp_path):
    plan = plan_for(matrix, "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1",
                    environ={"GSM8K_DATASET_DIR": str(tmp_path)})
    assert plan.dataset_dir == tmp_path.resolve() and plan.task == "gsm8k_local"


def test_dry_run_prints_everything_and_no_secret(matrix):
    plan = plan_for(matrix, "gsm8k-llama-3.1-8b-b200-sglang-fp4-tp1")
    os.environ["HF_TOKEN"] = TOKEN
    try:
        text = dry_run_text(plan)
    finally:
        del os.environ["HF_TOKEN"]
    for needle in ("server command:", "sglang.launch_server", "--quantization modelopt_fp4", "container:",
                   "image: lmsysorg/sglang", "gpu_ids: ['0']", "ipc: host", "shm_size: 32g",
                   "env_by_name: ['HF_TOKEN'", "lm-eval command:", "local-completions"):
        assert needle in text, needle
    assert TOKEN not in text


def test_dry_run_through_nox_answers_fast_and_installs_nothing(tmp_path):
    env = {**os.environ, "HF_TOKEN": TOKEN, "GSM8K_BENCH_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "nox", "-s", "gsm8k-llama-3.1-8b-mi325x-vllm-fp8-tp1",
                          "--", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "vllm serve RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8" in out.stdout
    assert "--device=/dev/kfd" in out.stdout
    assert TOKEN not in out.stdout + out.stderr
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--limit", "0"], "--limit: must be >= 1"),
    (["--launcher", "podman"], "invalid choice: 'podman'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_session_arguments_name_the_session(args, message):
    with pytest.raises(BenchError) as info:
        parse_session_args("gsm8k-x", args)
    assert message in str(info.value) and "nox -s gsm8k-x --" in str(info.value)


def test_docker_launcher_needs_an_image(matrix):
    from dataclasses import replace

    combo = matrix.get("gsm8k-smollm2-135m-cpu-vllm-fp16-tp1")
    no_image = replace(combo, framework=replace(combo.framework, images={}))
    with pytest.raises(ConfigError, match="pass --image"):
        options = parse_session_args(combo.name, ["--launcher", "docker"])
        plan_session(no_image, options, matrix.defaults, host_facts(no_image, options, {}))


def test_matrix_session_prints_ci_json(tmp_path):
    out_file = tmp_path / "github_output"
    env = {**os.environ, "GITHUB_OUTPUT": str(out_file)}
    out = subprocess.run([sys.executable, "-m", "nox", "-s", "matrix", "--", "-k", "b200 and fp4",
                          "--github-output"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert rows and {r["runner"] for r in rows} == {"b200"} and {r["precision"] for r in rows} == {"fp4"}
    assert set(rows[0]) == {"session", "model", "checkpoint", "runner", "runner_label", "vendor",
                            "framework", "precision", "tp"}
    assert rows[0]["runner_label"] == "b200-nv"
    matrix_line, sessions_line = out_file.read_text().splitlines()
    assert matrix_line.startswith("matrix=") and json.loads(matrix_line[len("matrix="):]) == rows
    assert sessions_line == f"sessions={len(rows)}"  # the gate's family, for the summary job's verdict


def test_nox_lists_sessions_and_a_broken_matrix_gives_one_message(tmp_path):
    listed = subprocess.run([sys.executable, "-m", "nox", "-l"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0
    sessions = [line.split()[1] for line in listed.stdout.splitlines() if line.startswith("- gsm8k-")]
    assert sessions == SEED_SESSIONS and len(sessions) == 106
    assert "[smollm2-135m,cpu,cpu,vllm,fp16,tp1]" in listed.stdout
    assert "* lint" in listed.stdout and "* tests" in listed.stdout  # the only default sessions

    broken = (ROOT / "matrix.yaml").read_text().replace("runners: [cpu]", "runners: [cpux]")
    (tmp_path / "matrix.yaml").write_text(broken)
    out = subprocess.run([sys.executable, "-m", "nox", "-l"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "GSM8K_MATRIX": str(tmp_path / "matrix.yaml")})
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "matrix.yaml:" in out.stderr and "models.smollm2-135m.runners[0]: unknown runner 'cpux'" in out.stderr
    assert "did you mean 'cpu'?" in out.stderr


def test_nox_tags_select_a_slice():
    out = subprocess.run([sys.executable, "-m", "nox", "-l", "-t", "mi355x"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    selected = [line for line in out.stdout.splitlines() if line.startswith("* gsm8k-")]
    assert selected and all("-mi355x-" in line for line in selected)


def test_root_files_exist():
    for path in ("noxfile.py", "matrix.yaml", "README.md", "pyproject.toml", "benchmarks", "runners",
                 ".github/workflows", ".ci/run"):
        assert Path(ROOT, path).exists(), path


def test_bad_input_still_writes_a_json_that_says_what_failed(matrix, tmp_path):
    from gsm8k_bench.session import commands

    combo = matrix.get("gsm8k-smollm2-135m-cpu-vllm-fp16-tp1")
    with pytest.raises(ConfigError, match="no such baselines file"):
        commands.run_combination(matrix, combo, ["--baselines", str(tmp_path / "none.yaml"),
                                                     "--results-dir", str(tmp_path)])
    doc = json.loads((tmp_path / f"{combo.name}.json").read_text())
    assert doc["status"] == "error" and "no such baselines file" in doc["error"]["message"]


def test_adhoc_run_of_a_matrix_checkpoint_on_a_label_is_the_matrix_session(tmp_path):
    argv = ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--runner", "h100-cr", "--framework", "vllm",
            "--precision", "fp16", "--tp", "1", "--image", "vllm/vllm-openai:latest", "--dry-run"]
    out = subprocess.run([sys.executable, "-m", "nox", "-s", "gsm8k", "--", *argv], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "GSM8K_BENCH_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    assert "session: gsm8k-llama-3.1-8b-h100-vllm-fp16-tp1" in out.stdout
    assert "image: vllm/vllm-openai:latest" in out.stdout
    assert "vllm serve meta-llama/Llama-3.1-8B-Instruct" in out.stdout


def test_the_json_says_when_the_image_is_an_override(matrix):
    from gsm8k_bench.session.provenance import config_of

    name = "gsm8k-llama-3.1-8b-h100-vllm-fp16-tp1"
    assert config_of(plan_for(matrix, name)).document()["image_override"] is False
    override = config_of(plan_for(matrix, name, "--image", "vllm/vllm-openai:latest")).document()
    assert override["image_override"] is True and override["image"] == "vllm/vllm-openai:latest"


@pytest.mark.parametrize(("session", "python", "argv"), [
    ("gsm8k-llama-3.3-70b-mi355x-sglang-fp4-tp8", None, [
        "python3", "-m", "sglang.launch_server", "--model-path", "/w", "--host", "127.0.0.1", "--port", "1234",
        "--served-model-name", "served", "--tp", "8", "--context-length", "8192", "--dtype", "bfloat16",
        "--quantization", "quark", "--enable-metrics"]),
    ("gsm8k-llama-3.1-8b-h100-vllm-fp8-tp1", None, [
        "vllm", "serve", "/w", "--host", "127.0.0.1", "--port", "1234", "--served-model-name", "served",
        "--tensor-parallel-size", "1", "--max-model-len", "4096", "--dtype", "bfloat16", "--kv-cache-dtype", "fp8"]),
    ("gsm8k-smollm2-135m-cpu-vllm-fp16-tp1", "/env/bin/python", [
        "/env/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/w", "--host", "127.0.0.1",
        "--port", "1234", "--served-model-name", "served", "--tensor-parallel-size", "1", "--max-model-len", "2048",
        "--dtype", "bfloat16", "--enforce-eager"]),
    # Reasoning models: the parser by each framework's name for it, before the model's own arguments.
    ("gsm8k-gpt-oss-120b-b200-sglang-fp4-tp1", None, [
        "python3", "-m", "sglang.launch_server", "--model-path", "/w", "--host", "127.0.0.1", "--port", "1234",
        "--served-model-name", "served", "--tp", "1", "--context-length", "20480", "--dtype", "bfloat16",
        "--quantization", "mxfp4", "--reasoning-parser", "gpt-oss", "--enable-metrics"]),
    ("gsm8k-deepseek-r1-h200-vllm-fp8-tp8", None, [
        "vllm", "serve", "/w", "--host", "127.0.0.1", "--port", "1234", "--served-model-name", "served",
        "--tensor-parallel-size", "8", "--max-model-len", "20480", "--dtype", "bfloat16", "--kv-cache-dtype", "fp8",
        "--reasoning-parser", "deepseek_r1", "--trust-remote-code"]),
])
def test_exact_server_commands(matrix, session, python, argv):
    combo = matrix.get(session)
    target = ServeTarget("/w", "served", "127.0.0.1", 1234, python)
    assert FRAMEWORKS[combo.framework.name].server_command(combo, target) == argv


def container(vendor, gpus=None, command=("vllm", "serve", "m"), **extra):
    from gsm8k_bench.serving.containers import container_spec

    return container_spec(vendor=vendor, gpus=gpus, image="img:1", command=list(command), name="n", session="sess",
                          hf_home=Path("/hf"), **{"environment": {}, **extra})


WARM = "/root/.cache/gsm8k-bench-warm"
WARM_ENV = {"VLLM_CACHE_ROOT": f"{WARM}/vllm", "TORCHINDUCTOR_CACHE_DIR": f"{WARM}/torchinductor",
            "TRITON_CACHE_DIR": f"{WARM}/triton", "FLASHINFER_WORKSPACE_BASE": f"{WARM}/flashinfer",
            "SGLANG_DG_CACHE_DIR": f"{WARM}/deep_gemm"}
WARM_ARGS = [f"--volume=$GSM8K_BENCH_CACHE/warm/<image-id>:{WARM}", "--env=HF_HOME=/root/.cache/huggingface",
             *(f"--env={k}={v}" for k, v in WARM_ENV.items())]


def test_exact_amd_container():
    from gsm8k_bench.serving.containers.spec import Mount
    from gsm8k_bench.serving.gpus import GpuAssignment

    nodes = ("/dev/dri/renderD136", "/dev/dri/renderD144", "/dev/dri/renderD152", "/dev/dri/renderD160")
    spec = container("amd", gpus=GpuAssignment((4, 5, 6, 7), "--gpus", nodes), environment={"A": "1"},
                     extra_mounts=(Mount("/src", "/models/x", True),))
    run = ["docker", "run", "--rm", "--name", "n", "--network=host", "--label=gsm8k-bench.session=sess",
           "--device=/dev/kfd", "--device=/dev/dri/renderD136", "--device=/dev/dri/renderD144",
           "--device=/dev/dri/renderD152", "--device=/dev/dri/renderD160", "--group-add=video", "--group-add=render",
           "--security-opt=seccomp=unconfined", "--ipc=host", "--shm-size=32g",
           "--volume=/hf:/root/.cache/huggingface", "--volume=/src:/models/x:ro", *WARM_ARGS,
           "--env=A=1", "--env=ROCR_VISIBLE_DEVICES=0,1,2,3", "--env=HIP_VISIBLE_DEVICES=0,1,2,3",
           "--env=HF_TOKEN", "--env=HUGGING_FACE_HUB_TOKEN", "--entrypoint", "vllm", "img:1", "serve", "m"]
    assert spec.docker_run_argv() == run
    described = spec.describe()
    assert described.pop("docker_run").startswith("docker run --rm --name n --network=host")
    assert described == {
        "image": "img:1", "name": "n", "command": ["vllm", "serve", "m"], "devices": ["/dev/kfd", *nodes],
        "gpu_ids": [], "group_add": ["video", "render"], "security_opt": ["seccomp=unconfined"],
        "ipc": "host", "shm_size": "32g", "network": "host",
        "mounts": ["/hf:/root/.cache/huggingface", "/src:/models/x:ro"],
        "env": {"HF_HOME": "/root/.cache/huggingface", **WARM_ENV, "A": "1", "ROCR_VISIBLE_DEVICES": "0,1,2,3",
                "HIP_VISIBLE_DEVICES": "0,1,2,3"},
        "env_by_name": ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"], "labels": {"gsm8k-bench.session": "sess"},
        "warm_cache": WARM}


def test_exact_nvidia_and_cpu_containers():
    from gsm8k_bench.serving.gpus import GpuAssignment

    head = ["docker", "run", "--rm", "--name", "n", "--network=host", "--label=gsm8k-bench.session=sess"]
    tail = ["--volume=/hf:/root/.cache/huggingface", *WARM_ARGS, "--env=HF_TOKEN", "--env=HUGGING_FACE_HUB_TOKEN",
            "--entrypoint"]
    assert container("nvidia", gpus=GpuAssignment((2, 3), "--gpus")).docker_run_argv() == [
        *head, "--gpus", '"device=2,3"', "--ipc=host", "--shm-size=32g", *tail, "vllm", "img:1", "serve", "m"]
    assert container("cpu", command=("python3", "-m", "x")).docker_run_argv() == [
        *head, "--shm-size=2g", *tail, "python3", "img:1", "-m", "x"]


def test_a_models_server_args_go_to_its_framework_only():
    combo = parse(MINIMAL_WITH_ARGS).get("gsm8k-tiny-h100-sglang-fp16-tp1")
    argv = FRAMEWORKS["sglang"].server_command(combo, ServeTarget("m", "s", "127.0.0.1", 1))
    assert argv[-3:] == ["--trust-remote-code", "--mem-fraction-static", "--enable-metrics"]
    vllm = parse(MINIMAL_WITH_ARGS).get("gsm8k-tiny-h100-vllm-fp16-tp1")
    assert FRAMEWORKS["vllm"].server_command(vllm, ServeTarget("m", "s", "127.0.0.1", 1))[-1] == "--enforce-eager"


def test_exact_create_arguments_match_the_printed_command():
    """The Docker launcher's SDK arguments: the same translation of the spec as docker_run_argv, so they
    name the same devices, mounts and variables; secret values come only from the environment given."""
    from gsm8k_bench.serving.containers.spec import Mount
    from gsm8k_bench.serving.gpus import GpuAssignment
    from gsm8k_bench.serving.launchers.docker import create_kwargs

    nodes = ("/dev/dri/renderD136", "/dev/dri/renderD144")
    spec = container("amd", gpus=GpuAssignment((4, 5), "--gpus", nodes), environment={"A": "1"},
                     extra_mounts=(Mount("/src", "/models/x", True),))
    kwargs = create_kwargs(spec, "n-1a2b3c", {"HF_TOKEN": "hf_x", "UNRELATED": "y"}, Path("/cache/warm/img"))
    assert kwargs == {
        "image": "img:1", "entrypoint": ["vllm"], "command": ["serve", "m"], "name": "n-1a2b3c",
        "network_mode": "host", "labels": {"gsm8k-bench.session": "sess"}, "init": True, "detach": True,
        "devices": ["/dev/kfd:/dev/kfd:rwm", *(f"{node}:{node}:rwm" for node in nodes)],
        "group_add": ["video", "render"], "security_opt": ["seccomp=unconfined"], "ipc_mode": "host",
        "shm_size": "32g",
        "volumes": {"/hf": {"bind": "/root/.cache/huggingface", "mode": "rw"},
                    "/src": {"bind": "/models/x", "mode": "ro"}, "/cache/warm/img": {"bind": WARM, "mode": "rw"}},
        "environment": {"HF_HOME": "/root/.cache/huggingface", **WARM_ENV, "A": "1", "ROCR_VISIBLE_DEVICES": "0,1",
                        "HIP_VISIBLE_DEVICES": "0,1", "HF_TOKEN": "hf_x"},
    }
    nvidia = create_kwargs(container("nvidia", gpus=GpuAssignment((2, 3), "--gpus")), "c", {})
    (request,) = nvidia["device_requests"]
    assert (request["DeviceIDs"], request["Capabilities"]) == (["2", "3"], [["gpu"]])
    assert (nvidia["ipc_mode"], nvidia["shm_size"]) == ("host", "32g") and "HF_TOKEN" not in nvidia["environment"]
    cpu = create_kwargs(container("cpu", command=("python3", "-m", "x")), "c", {})
    assert (cpu["entrypoint"], cpu["command"], cpu["shm_size"]) == (["python3"], ["-m", "x"], "2g")
    assert cpu["volumes"] == {"/hf": {"bind": "/root/.cache/huggingface", "mode": "rw"}}  # no warm folder given
    assert not {"devices", "device_requests", "group_add", "security_opt", "ipc_mode"} & cpu.keys()


def test_the_gate_family_comes_from_the_command_line_and_a_session_alone_is_one(matrix):
    from gsm8k_bench.session import commands

    name = "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1"
    alone = commands._plan(matrix, matrix.get(name), parse_session_args(name, []))
    dispatched = commands._plan(matrix, matrix.get(name), parse_session_args(name, ["--gate-family", "106"]))
    assert (alone.baselines.settings.family, alone.baselines.settings.level) == (1, (1 - 0.95) / 1)
    assert (dispatched.baselines.settings.family, dispatched.baselines.settings.level) == (106, (1 - 0.95) / 106)
    assert "paired gate: strict_match, one-sided exact p (McNemar's; the two-run test against a two-run " \
           "reference) <= (1 - 0.95) / 1 session = 0.05, halved when truncation is checked too (a second test)\n" \
        in dry_run_text(alone)
    assert "p (McNemar's; the two-run test against a two-run reference) <= (1 - 0.95) / 106 sessions = 0.0004717, " \
           "halved when truncation is checked too (a second test)\n" in dry_run_text(dispatched)
    with pytest.raises(BenchError, match="--gate-family: must be >= 1, got '0'"):
        parse_session_args(name, ["--gate-family", "0"])
