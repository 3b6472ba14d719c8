"""What every framework's server command shares: the address, the served name and the precision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gsm8k_bench.matrix.types import Combination


@dataclass(frozen=True)
class ServeTarget:
    """Where and how the server runs: the weights it loads and the address it listens on."""

    model_path: str
    served_name: str
    host: str
    port: int
    # The interpreter that runs the server module; None means the framework's own entry command.
    python: str | None = None


@dataclass(frozen=True)
class FlagNames:
    """The spellings that differ between frameworks."""

    tp: str
    context_length: str


def server_options(combo: Combination, target: ServeTarget, names: FlagNames, framework: str) -> list[str]:
    """The options after the model path, in a stable order; the precision's flags, the reasoning parser,
    then the model's."""
    flags = combo.flags
    options = [
        "--host", target.host,
        "--port", str(target.port),
        "--served-model-name", target.served_name,
        names.tp, str(combo.tp),
        names.context_length, str(combo.model.max_model_len),
    ]
    if flags.dtype:
        options += ["--dtype", flags.dtype]
    if combo.quantization:
        options += ["--quantization", combo.quantization]
    if flags.kv_cache_dtype:
        options += ["--kv-cache-dtype", flags.kv_cache_dtype]
    if combo.reasoning_parser:  # both frameworks spell it so; the names differ (matrix.yaml, per framework)
        options += ["--reasoning-parser", combo.reasoning_parser]
    return options + list(combo.model.server_args.get(framework, ()))
