"""One module per serving framework: a pure function from a combination to the server's argv."""

from __future__ import annotations

from gsm8k_bench.serving.frameworks import sglang, vllm
from gsm8k_bench.serving.frameworks.common import ServeTarget

# One per name matrix.yaml may use (matrix.types.FRAMEWORK_NAMES; a test keeps the two equal).
FRAMEWORKS = {"vllm": vllm, "sglang": sglang}

__all__ = ["FRAMEWORKS", "ServeTarget"]
