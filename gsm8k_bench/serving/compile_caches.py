"""Warm restarts: the frameworks' compile and kernel caches persist between sessions on a runner.

One folder per image (keyed by its id, or by the CPU environment's stamp), so two images never share a
cache that one of them cannot read.  Inside it, every framework cache is pointed at by its own variable.
"""

from __future__ import annotations

import re
from pathlib import Path

# Where the per-image folder is mounted in a container.
CONTAINER_ROOT = "/root/.cache/gsm8k-bench-warm"
# The variables each cache honours (vLLM's root holds its torch.compile artifacts; TorchInductor's and
# Triton's kernels; FlashInfer's JIT modules under <base>/.cache/flashinfer; SGLang's DeepGEMM kernels).
CACHE_VARIABLES = {
    "VLLM_CACHE_ROOT": "vllm",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TRITON_CACHE_DIR": "triton",
    "FLASHINFER_WORKSPACE_BASE": "flashinfer",
    "SGLANG_DG_CACHE_DIR": "deep_gemm",
}


def key_for(image_identity: str) -> str:
    """A folder name from an image id ('sha256:ab..'), a squashfs path or an environment stamp."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", image_identity.removeprefix("sha256:"))[:80]


def host_dir(cache_root: Path, image_identity: str) -> Path:
    return cache_root / "warm" / key_for(image_identity)


def environment(root: str | Path) -> dict[str, str]:
    """The variables that put every framework cache under root."""
    return {name: f"{root}/{sub}" for name, sub in CACHE_VARIABLES.items()}
