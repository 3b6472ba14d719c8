"""The frozen objects matrix.yaml is read into (loader.py): runners, frameworks, models and the
combinations that become sessions.  Pure: no file is read here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsm8k_bench.core.errors import ConfigError, unknown_choice
from gsm8k_bench.matrix.names import ComboKey, session_name
from gsm8k_bench.matrix.precisions import FlagValue, Precision, PrecisionFlags, for_vendor
from gsm8k_bench.matrix.reasoning import Reasoning

VENDORS = ("nvidia", "amd", "cpu")
PROTOCOLS = ("completions", "chat")
# One command builder each under gsm8k_bench/serving/frameworks/ (its FRAMEWORKS maps these names to them).
FRAMEWORK_NAMES = ("vllm", "sglang")


@dataclass(frozen=True)
class Defaults:
    num_fewshot: int = 5
    max_model_len: int = 4096
    max_gen_toks: int = 256
    request_timeout_s: float = 600.0
    max_retries: int = 3
    start_timeout_s: float = 1800.0


@dataclass(frozen=True)
class Runner:
    name: str
    vendor: str
    gpus: int
    label: str
    precisions: tuple[str, ...]
    concurrency: int
    start_timeout_s: float | None = None
    concurrency_levels: tuple[int, ...] = ()  # `concurrency: [1, 64, 256]`; empty means (concurrency,)

    @property
    def levels(self) -> tuple[int, ...]:
        return self.concurrency_levels or (self.concurrency,)

    @property
    def max_tp(self) -> int:
        return max(self.gpus, 1)


@dataclass(frozen=True)
class Framework:
    name: str
    port: int
    images: Mapping[str, str]  # key: runner name or vendor
    env: Mapping[str, Mapping[str, str]]  # key: runner name or vendor

    def image_for(self, runner: Runner) -> str | None:
        return self.images.get(runner.name, self.images.get(runner.vendor))

    def env_for(self, runner: Runner) -> dict[str, str]:
        return {**self.env.get(runner.vendor, {}), **self.env.get(runner.name, {})}


@dataclass(frozen=True)
class Model:
    name: str
    checkpoint: str
    protocol: str
    runners: tuple[str, ...]
    frameworks: tuple[str, ...]
    precisions: tuple[str, ...]
    tp: tuple[int, ...]
    # precision -> vendor -> checkpoint ("*" for any vendor)
    checkpoints: Mapping[str, Mapping[str, str]]
    server_args: Mapping[str, tuple[str, ...]]
    max_model_len: int
    max_gen_toks: int
    limit: int | None = None
    reasoning: Reasoning | None = None
    # framework -> method (or vendor -> method) of this model's pre-quantized checkpoints, in place of
    # the precision's checkpoint_quantization (e.g. gpt-oss ships MXFP4 whatever the chip)
    checkpoint_quantization: Mapping[str, FlagValue] = field(default_factory=dict)

    def checkpoint_for(self, precision: str, vendor: str) -> str | None:
        """A pre-quantized checkpoint for this precision on this vendor, if the model names one."""
        by_vendor = self.checkpoints.get(precision, {})
        return by_vendor.get(vendor, by_vendor.get("*"))

    def serves(self, precision: str, vendor: str) -> str:
        """The checkpoint a session of this model loads at this precision on this vendor."""
        return self.checkpoint_for(precision, vendor) or self.checkpoint


@dataclass(frozen=True)
class Combination:
    model: Model
    runner: Runner
    framework: Framework
    precision: Precision
    tp: int

    @property
    def key(self) -> ComboKey:
        return ComboKey(self.model.name, self.runner.name, self.framework.name, self.precision.name, self.tp)

    @property
    def name(self) -> str:
        return session_name(self.key)

    @property
    def tags(self) -> tuple[str, ...]:
        return (self.model.name, self.runner.name, self.runner.vendor, self.framework.name,
                self.precision.name, f"tp{self.tp}")

    @property
    def prequantized_checkpoint(self) -> str | None:
        return self.model.checkpoint_for(self.precision.name, self.runner.vendor)

    @property
    def checkpoint(self) -> str:
        return self.model.serves(self.precision.name, self.runner.vendor)

    @property
    def flags(self) -> PrecisionFlags:
        return self.precision.flags(self.framework.name, self.runner.vendor)

    @property
    def quantization(self) -> str | None:
        """The quantization flag value: online for a plain checkpoint, explicit for a quantized one."""
        flags = self.flags
        if self.prequantized_checkpoint:
            method = self.model.checkpoint_quantization.get(self.framework.name, flags.checkpoint_quantization)
            return for_vendor(method, self.runner.vendor)
        return flags.online_quantization

    @property
    def reasoning_parser(self) -> str | None:
        reasoning = self.model.reasoning
        return reasoning.parser[self.framework.name] if reasoning else None

    @property
    def image(self) -> str | None:
        return self.framework.image_for(self.runner)

    @property
    def description(self) -> str:
        return (f"GSM8k: {self.model.checkpoint} on {self.runner.name} ({self.runner.vendor}) with "
                f"{self.framework.name}, {self.precision.name}, tp={self.tp}")

    def summary(self) -> dict[str, Any]:
        """The JSON row CI's plan job publishes for this session."""
        return {
            "session": self.name,
            "model": self.model.name,
            "checkpoint": self.checkpoint,
            "runner": self.runner.name,
            "runner_label": self.runner.label,
            "vendor": self.runner.vendor,
            "framework": self.framework.name,
            "precision": self.precision.name,
            "tp": self.tp,
        }


@dataclass(frozen=True)
class Matrix:
    path: Path
    defaults: Defaults
    runners: Mapping[str, Runner]
    frameworks: Mapping[str, Framework]
    precisions: Mapping[str, Precision]
    models: Mapping[str, Model]
    combinations: tuple[Combination, ...] = field(default=())

    def by_name(self) -> dict[str, Combination]:
        return {combo.name: combo for combo in self.combinations}

    def get(self, name: str) -> Combination:
        combos = self.by_name()
        if name not in combos:
            raise ConfigError(f"{self.path.name}: " + unknown_choice("session", name, combos))
        return combos[name]

    def runner(self, name_or_label: str) -> Runner:
        """A runner by its SKU name or its CI label (`h100` or `h100-cr`): every runner input takes both."""
        by_label = {runner.label: runner for runner in self.runners.values()}
        found = self.runners.get(name_or_label) or by_label.get(name_or_label)
        if found is None:
            raise ConfigError(unknown_choice("runner", name_or_label, [*self.runners, *by_label]))
        return found

    def model_for_checkpoint(self, checkpoint: str, precision: str, vendor: str) -> Model | None:
        """The matrix model that serves `checkpoint` at this precision on this vendor, if one does."""
        found = [model for model in self.models.values() if precision in model.precisions
                 and _same_checkpoint(checkpoint, model.serves(precision, vendor))]
        if len(found) > 1:
            raise ConfigError(f"{checkpoint!r} is the {precision} checkpoint of several models in "
                              f"{self.path.name} ({', '.join(m.name for m in found)}); name one as the model")
        return found[0] if found else None


def _same_checkpoint(given: str, listed: str) -> bool:
    """Hub ids compare as written; local paths after ~ and ./.. are spelled out (no file is read)."""
    def key(checkpoint: str) -> str:
        if checkpoint.startswith(("/", "~", ".")):
            return os.path.normpath(os.path.expanduser(checkpoint))
        return checkpoint.rstrip("/")
    return key(given) == key(listed)
