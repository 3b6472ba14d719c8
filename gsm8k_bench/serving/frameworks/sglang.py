"""SGLang: `python3 -m sglang.launch_server --model-path <model> ...`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gsm8k_bench.serving.frameworks.common import FlagNames, ServeTarget, server_options

if TYPE_CHECKING:
    from gsm8k_bench.matrix.types import Combination

LAUNCH_MODULE = "sglang.launch_server"
FLAGS = FlagNames(tp="--tp", context_length="--context-length")


def server_command(combo: Combination, target: ServeTarget) -> list[str]:
    # --enable-metrics: throughput and latency come from /metrics (see evaluation/server_metrics.py).
    return [target.python or "python3", "-m", LAUNCH_MODULE, "--model-path", target.model_path,
            *server_options(combo, target, FLAGS, "sglang"), "--enable-metrics"]
