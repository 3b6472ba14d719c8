"""matrix.yaml -> validated frozen objects -> the combinations that become sessions.

Everything here is pure: no servers, no network.  Validation happens once, in `load_matrix`, and
every error names the file, the line and the key path, with the allowed values.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any

import yaml

from gsm8k_bench.errors import ConfigError, cut_quoted, unknown_choice
from gsm8k_bench.reasoning import Reasoning, check_budget, read_reasoning

SCHEMA_VERSION = 1
VENDORS = ("nvidia", "amd", "cpu")
PROTOCOLS = ("completions", "chat")
# Runner, framework and precision names carry no dash, so a session name splits back unambiguously.
PART_NAME = re.compile(r"^[a-z0-9][a-z0-9.]*$")
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9.]*(-[a-z0-9.]+)*$")
SESSION_NAME = re.compile(r"^[a-z0-9.-]+$")
COMBO_KEYS = ("model", "runner", "framework", "precision", "tp")


# --------------------------------------------------------------------------- YAML with line numbers


class Lined(dict):
    """A mapping that remembers the line of each key (1-based) and its own."""

    line: int = 0
    key_lines: dict


class LinedList(list):
    line: int = 0


class LineLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        """Anchors and aliases are refused: an alias bomb (a few KB expanding to gigabytes) must not
        reach the constructor, and this project's files have no need to repeat themselves that way."""
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ConfigError(f"{event.start_mark.line + 1}: YAML anchors and aliases (&name, *name) are not "
                              "allowed here; write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Lined:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"{key_node.start_mark.line + 1}: duplicate key {key!r} "
                    f"(first at line {seen[key]})"
                )
            seen[key] = key_node.start_mark.line + 1
        mapping = Lined(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = seen
        return mapping

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LinedList:
        seq = LinedList(super().construct_sequence(node, deep=True))
        seq.line = node.start_mark.line + 1
        return seq


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, LineLoader.construct_mapping)
LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, LineLoader.construct_sequence)


class Reader:
    """Walks the parsed YAML, turning every problem into one ConfigError with file:line: key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str, node: Any = None, child: Any = None) -> ConfigError:
        line = 0
        if isinstance(node, Lined) and child is not None:
            line = node.key_lines.get(child, node.line)
        elif isinstance(node, Lined | LinedList):
            line = node.line
        where = f"{self.path.name}:{line}" if line else self.path.name
        return ConfigError(f"{where}: {key}: {cut_quoted(message)}")

    def mapping(self, node: Any, key: str, allowed: Iterable[str] | None = None,
                required: Iterable[str] = ()) -> Lined:
        if not isinstance(node, dict):
            raise self.fail(key, f"expected a mapping, got {type(node).__name__}", node)
        if allowed is not None:
            allowed = tuple(allowed)
            for child in node:
                if child not in allowed:
                    raise self.fail(f"{key}.{child}", unknown_choice("key", child, allowed), node, child)
        for child in required:
            if child not in node:
                raise self.fail(key, f"missing required key {child!r}", node)
        return node

    def typed(self, node: Any, key: str, kind: type | tuple[type, ...], parent: Any = None,
              child: Any = None) -> Any:
        # bool is an int in Python; a YAML `yes` where a number belongs is still an error.
        numeric = kind in (int, float, (int, float))
        if not isinstance(node, kind) or (numeric and isinstance(node, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(key, f"expected {names}, got {node!r}", parent, child)
        return node

    def positive_int(self, node: Any, key: str, parent: Any = None, child: Any = None,
                     minimum: int = 1) -> int:
        value = self.typed(node, key, int, parent, child)
        if value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}", parent, child)
        return value

    def name(self, node: Any, key: str, pattern: re.Pattern, parent: Any = None) -> str:
        self.typed(node, key, str, parent, node)
        if not pattern.match(node):
            raise self.fail(key, f"name {node!r} must match {pattern.pattern} "
                            "(lowercase letters, digits, '.' and '-')", parent, node)
        return node

    def choice(self, node: Any, key: str, kind: str, allowed: Iterable[str], parent: Any = None,
               child: Any = None) -> str:
        allowed = tuple(allowed)
        if node not in allowed:
            raise self.fail(key, unknown_choice(kind, node, allowed), parent, child)
        return node

    def choices(self, node: Any, key: str, kind: str, allowed: Iterable[str], parent: Any = None,
                child: Any = None) -> tuple[str, ...]:
        items = self.typed(node, key, list, parent, child)
        for index, item in enumerate(items):
            self.choice(item, f"{key}[{index}]", kind, allowed, items)
        if len(set(items)) != len(items):
            raise self.fail(key, f"lists a value twice: {items}", parent, child)
        return tuple(items)

    def str_list(self, node: Any, key: str, parent: Any = None, child: Any = None) -> tuple[str, ...]:
        items = self.typed(node, key, list, parent, child)
        for index, item in enumerate(items):
            self.typed(item, f"{key}[{index}]", str, items)
        return tuple(items)


# --------------------------------------------------------------------------- the objects


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
class PrecisionFlags:
    """What a precision means for one framework on one vendor's hardware."""

    dtype: str | None = None
    kv_cache_dtype: str | None = None
    online_quantization: str | None = None
    checkpoint_quantization: str | None = None


PRECISION_FIELDS = tuple(PrecisionFlags.__dataclass_fields__)


@dataclass(frozen=True)
class Precision:
    name: str
    description: str
    checkpoint_required: bool
    # framework -> field -> value, where value is a str or a mapping vendor -> str
    per_framework: Mapping[str, Mapping[str, Any]]

    def flags(self, framework: str, vendor: str) -> PrecisionFlags:
        spec = self.per_framework.get(framework, {})
        resolved = {}
        for name in PRECISION_FIELDS:
            value = spec.get(name)
            resolved[name] = value.get(vendor) if isinstance(value, Mapping) else value
        return PrecisionFlags(**resolved)


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
    checkpoint_quantization: Mapping[str, Any] = field(default_factory=dict)

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
    def name(self) -> str:
        return session_name(self.model.name, self.runner.name, self.framework.name,
                            self.precision.name, self.tp)

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
            return method.get(self.runner.vendor) if isinstance(method, Mapping) else method
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


def session_name(model: str, runner: str, framework: str, precision: str, tp: int) -> str:
    return f"gsm8k-{model}-{runner}-{framework}-{precision}-tp{tp}"


def _same_checkpoint(given: str, listed: str) -> bool:
    """Hub ids compare as written; local paths after ~ and ./.. are spelled out (no file is read)."""
    def key(checkpoint: str) -> str:
        if checkpoint.startswith(("/", "~", ".")):
            return os.path.normpath(os.path.expanduser(checkpoint))
        return checkpoint.rstrip("/")
    return key(given) == key(listed)


def _model_name_from(checkpoint: str) -> str:
    """A session-name-safe short name for a checkpoint in no matrix entry (its last path part)."""
    name = re.sub(r"[^a-z0-9.]+", "-", PurePath(checkpoint.rstrip("/")).name.lower()).strip("-")
    if not MODEL_NAME.match(name):
        raise ConfigError(f"cannot derive a session name from the checkpoint {checkpoint!r}; give a short "
                          "name as the model and the checkpoint separately")
    return name


# --------------------------------------------------------------------------- loading


def load_matrix(path: str | Path) -> Matrix:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the matrix: {exc.strerror}") from exc
    return parse_matrix(text, path)


def parse_matrix(text: str, path: Path) -> Matrix:
    try:
        data = yaml.load(text, Loader=LineLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{path.name}:{exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    r = Reader(path)
    top_keys = ("version", "defaults", "runners", "frameworks", "precisions", "models",
                "include", "exclude")
    data = r.mapping(data, "(top level)", top_keys, required=("version", "runners", "frameworks",
                                                             "precisions", "models"))
    if data["version"] != SCHEMA_VERSION:
        raise r.fail("version", f"schema version {data['version']!r} is not supported; "
                     f"allowed: {SCHEMA_VERSION}", data, "version")

    defaults = _read_defaults(r, data.get("defaults", Lined()))
    runners = _read_named(r, data, "runners", PART_NAME, _read_runner)
    _check_labels(r, data["runners"], runners)
    frameworks = _read_named(r, data, "frameworks", PART_NAME, _read_framework)
    precisions = _read_named(r, data, "precisions", PART_NAME,
                             lambda r, name, node, key: _read_precision(r, name, node, key, frameworks))
    models = _read_named(r, data, "models", MODEL_NAME,
                         lambda r, name, node, key: _read_model(r, name, node, key, defaults,
                                                                runners, frameworks, precisions))
    matrix = Matrix(path, defaults, runners, frameworks, precisions, models)
    combos = _expand(r, data, matrix)
    return Matrix(path, defaults, runners, frameworks, precisions, models, combos)


def _read_named(r: Reader, data: Mapping, key: str, pattern: re.Pattern, read) -> dict[str, Any]:
    section = r.mapping(data[key], key)
    if not section:
        raise r.fail(key, "must not be empty", data, key)
    out = {}
    for name, node in section.items():
        r.name(name, f"{key}.{name}", pattern, section)
        out[name] = read(r, name, node, f"{key}.{name}")
    return out


def _read_defaults(r: Reader, node: Any) -> Defaults:
    node = r.mapping(node, "defaults", Defaults.__dataclass_fields__)
    values = {}
    for name, default in Defaults().__dict__.items():
        if name in node:
            kind = (int, float) if isinstance(default, float) else int
            values[name] = r.typed(node[name], f"defaults.{name}", kind, node, name)
            if values[name] < 0 or (values[name] == 0 and name != "num_fewshot"):
                raise r.fail(f"defaults.{name}", f"must be positive, got {values[name]}", node, name)
    return Defaults(**values)


def _read_runner(r: Reader, name: str, node: Any, key: str) -> Runner:
    node = r.mapping(node, key, ("vendor", "gpus", "label", "precisions", "concurrency",
                                 "start_timeout_s"),
                     required=("vendor", "gpus", "label", "precisions"))
    vendor = r.choice(node["vendor"], f"{key}.vendor", "vendor", VENDORS, node, "vendor")
    gpus = r.positive_int(node["gpus"], f"{key}.gpus", node, "gpus", minimum=0)
    if vendor != "cpu" and gpus == 0:
        raise r.fail(f"{key}.gpus", f"a {vendor} runner needs at least one GPU", node, "gpus")
    label = r.typed(node["label"], f"{key}.label", str, node, "label")
    if not re.match(r"^[A-Za-z0-9._-]+$", label):
        raise r.fail(f"{key}.label", f"runner label {label!r} has characters outside [A-Za-z0-9._-]",
                     node, "label")
    precisions = r.str_list(node["precisions"], f"{key}.precisions", node, "precisions")
    levels = node.get("concurrency", 16)
    if isinstance(levels, list):
        if not levels or len(set(levels)) != len(levels):
            raise r.fail(f"{key}.concurrency", f"a list of distinct levels, got {levels!r}", node, "concurrency")
        levels = tuple(r.positive_int(v, f"{key}.concurrency", node, "concurrency") for v in levels)
    else:
        levels = (r.positive_int(levels, f"{key}.concurrency", node, "concurrency"),)
    start = node.get("start_timeout_s")
    if start is not None:
        r.typed(start, f"{key}.start_timeout_s", (int, float), node, "start_timeout_s")
    return Runner(name, vendor, gpus, label, precisions, levels[0],
                  float(start) if start is not None else None, levels if len(levels) > 1 else ())


def _check_labels(r: Reader, node: Any, runners: Mapping[str, Runner]) -> None:
    """A runner input may be a name or a label, so each must point at exactly one runner."""
    seen: dict[str, str] = {}
    for runner in runners.values():
        other = seen.get(runner.label)
        if other is None and runner.label in runners and runner.label != runner.name:
            other = runner.label
        if other:
            raise r.fail(f"runners.{runner.name}.label", f"label {runner.label!r} already names runner "
                         f"{other!r}; runner inputs take names and labels, so each must be unique",
                         node[runner.name], "label")
        seen[runner.label] = runner.name


def _vendor_keyed(r: Reader, node: Any, key: str, value_check) -> dict[str, Any]:
    node = r.mapping(node, key)
    out = {}
    for child, value in node.items():
        r.typed(child, f"{key}.{child}", str, node, child)
        out[child] = value_check(value, f"{key}.{child}", node, child)
    return out


def _read_framework(r: Reader, name: str, node: Any, key: str) -> Framework:
    from gsm8k_bench.frameworks import FRAMEWORKS  # the builders define which names exist

    if name not in FRAMEWORKS:
        raise r.fail(key, unknown_choice("framework", name, FRAMEWORKS) + " (one module each under "
                     "gsm8k_bench/frameworks/)", node)
    node = r.mapping(node, key, ("port", "images", "env"), required=("port", "images"))
    port = r.positive_int(node["port"], f"{key}.port", node, "port")
    images = _vendor_keyed(r, node["images"], f"{key}.images",
                           lambda v, k, p, c: r.typed(v, k, str, p, c))

    def env_block(value, k, p, c):
        block = r.mapping(value, k)
        for env_name, env_value in block.items():
            if not re.match(r"^[A-Z_][A-Z0-9_]*$", str(env_name)):
                raise r.fail(f"{k}.{env_name}", "environment names are [A-Z_][A-Z0-9_]*", block, env_name)
            r.typed(env_value, f"{k}.{env_name}", str, block, env_name)
        return dict(block)

    env = _vendor_keyed(r, node.get("env", Lined()), f"{key}.env", env_block)
    return Framework(name, port, images, env)


def _str_or_by_vendor(r: Reader, value: Any, key: str, parent: Any, child: Any) -> str | dict[str, str]:
    """A string, or a mapping vendor -> string."""
    if not isinstance(value, dict):
        return r.typed(value, key, str, parent, child)
    for vendor, vendor_value in value.items():
        r.choice(vendor, f"{key}.{vendor}", "vendor", VENDORS, value, vendor)
        r.typed(vendor_value, f"{key}.{vendor}", str, value, vendor)
    return dict(value)


def _read_precision(r: Reader, name: str, node: Any, key: str,
                    frameworks: Mapping[str, Framework]) -> Precision:
    node = r.mapping(node, key, ("description", "checkpoint_required", *frameworks))
    description = r.typed(node.get("description", name), f"{key}.description", str, node, "description")
    required = r.typed(node.get("checkpoint_required", False), f"{key}.checkpoint_required", bool,
                       node, "checkpoint_required")
    per_framework = {}
    for fw in frameworks:
        spec = r.mapping(node.get(fw, Lined()), f"{key}.{fw}", PRECISION_FIELDS)
        per_framework[fw] = {field_name: _str_or_by_vendor(r, value, f"{key}.{fw}.{field_name}", spec, field_name)
                             for field_name, value in spec.items()}
    return Precision(name, description, required, per_framework)


def _read_model(r: Reader, name: str, node: Any, key: str, defaults: Defaults,
                runners: Mapping[str, Runner], frameworks: Mapping[str, Framework],
                precisions: Mapping[str, Precision]) -> Model:
    node = r.mapping(node, key, ("checkpoint", "protocol", "runners", "frameworks", "precisions", "tp",
                                 "checkpoints", "checkpoint_quantization", "server_args", "max_model_len",
                                 "max_gen_toks", "limit", "reasoning"),
                     required=("checkpoint", "runners", "frameworks", "precisions", "tp"))
    checkpoint = r.typed(node["checkpoint"], f"{key}.checkpoint", str, node, "checkpoint")
    protocol = r.choice(node.get("protocol", "completions"), f"{key}.protocol", "protocol", PROTOCOLS,
                        node, "protocol")
    model_runners = r.choices(node["runners"], f"{key}.runners", "runner", runners, node, "runners")
    model_fws = r.choices(node["frameworks"], f"{key}.frameworks", "framework", frameworks, node,
                          "frameworks")
    model_precisions = r.choices(node["precisions"], f"{key}.precisions", "precision", precisions,
                                 node, "precisions")
    tps = r.typed(node["tp"], f"{key}.tp", list, node, "tp")
    for index, tp in enumerate(tps):
        r.positive_int(tp, f"{key}.tp[{index}]", tps)
    checkpoints: dict[str, dict[str, str]] = {}
    ckpt_node = r.mapping(node.get("checkpoints", Lined()), f"{key}.checkpoints", precisions)
    for precision, value in ckpt_node.items():
        value = _str_or_by_vendor(r, value, f"{key}.checkpoints.{precision}", ckpt_node, precision)
        checkpoints[precision] = value if isinstance(value, dict) else {"*": value}
    args_node = r.mapping(node.get("server_args", Lined()), f"{key}.server_args", frameworks)
    server_args = {fw: r.str_list(v, f"{key}.server_args.{fw}", args_node, fw)
                   for fw, v in args_node.items()}
    limit = node.get("limit")
    if limit is not None:
        limit = r.positive_int(limit, f"{key}.limit", node, "limit")
    quant_node = r.mapping(node.get("checkpoint_quantization", Lined()), f"{key}.checkpoint_quantization",
                           model_fws)
    checkpoint_quantization = {fw: _str_or_by_vendor(r, v, f"{key}.checkpoint_quantization.{fw}", quant_node, fw)
                               for fw, v in quant_node.items()}
    max_model_len = r.positive_int(node.get("max_model_len", defaults.max_model_len), f"{key}.max_model_len",
                                   node, "max_model_len")
    max_gen_toks = node.get("max_gen_toks")
    if max_gen_toks is not None:
        max_gen_toks = r.positive_int(max_gen_toks, f"{key}.max_gen_toks", node, "max_gen_toks")
    reasoning = None
    if "reasoning" in node:
        reasoning = read_reasoning(r, node["reasoning"], f"{key}.reasoning", model_fws, protocol)
        max_gen_toks, rule = check_budget(r, node, key, max_model_len, max_gen_toks)
        reasoning = replace(reasoning, budget_rule=rule)
    return Model(
        name=name,
        checkpoint=checkpoint,
        protocol=protocol,
        runners=model_runners,
        frameworks=model_fws,
        precisions=model_precisions,
        tp=tuple(tps),
        checkpoints=checkpoints,
        server_args=server_args,
        max_model_len=max_model_len,
        max_gen_toks=defaults.max_gen_toks if max_gen_toks is None else max_gen_toks,
        limit=limit,
        reasoning=reasoning,
        checkpoint_quantization=checkpoint_quantization,
    )


# --------------------------------------------------------------------------- expansion


def _check_combination(r: Reader, combo: Combination, key: str, node: Any) -> None:
    """Errors for a combination that cannot run as configured (hardware, tp, image, checkpoint)."""
    runner, precision = combo.runner, combo.precision
    if precision.name not in runner.precisions:
        raise r.fail(key, f"runner {runner.name!r} cannot run precision {precision.name!r}; "
                     f"its hardware does: {', '.join(runner.precisions)}", node)
    if combo.tp > runner.max_tp:
        raise r.fail(key, f"tp {combo.tp} is larger than runner {runner.name!r}'s "
                     f"{runner.gpus} GPUs" if runner.gpus else
                     f"tp {combo.tp} on GPU-less runner {runner.name!r}; allowed: 1", node)
    if combo.image is None:
        raise r.fail(key, f"framework {combo.framework.name!r} has no image for runner "
                     f"{runner.name!r} (vendor {runner.vendor}); add frameworks.{combo.framework.name}"
                     f".images.{runner.vendor}", node)
    if precision.checkpoint_required and not combo.prequantized_checkpoint:
        raise r.fail(key, f"precision {precision.name!r} needs a pre-quantized checkpoint; add "
                     f"models.{combo.model.name}.checkpoints.{precision.name}.{runner.vendor} "
                     "or exclude this combination", node)


def _rule_matches(rule: Mapping[str, Any], combo: Combination) -> bool:
    values = {"model": combo.model.name, "runner": combo.runner.name,
              "framework": combo.framework.name, "precision": combo.precision.name, "tp": combo.tp}
    return all(values[k] == v for k, v in rule.items())


def _read_rule(r: Reader, node: Any, key: str, matrix: Matrix, full: bool) -> dict[str, Any]:
    node = r.mapping(node, key, COMBO_KEYS, required=COMBO_KEYS if full else ())
    if not node:
        raise r.fail(key, f"an empty rule would match everything; use keys: {', '.join(COMBO_KEYS)}", node)
    known = {"model": matrix.models, "runner": matrix.runners, "framework": matrix.frameworks,
             "precision": matrix.precisions}
    for rule_key, value in node.items():
        if rule_key == "tp":
            r.positive_int(value, f"{key}.tp", node, "tp")
        else:
            r.choice(value, f"{key}.{rule_key}", rule_key, known[rule_key], node, rule_key)
    return dict(node)


def _expand(r: Reader, data: Mapping, matrix: Matrix) -> tuple[Combination, ...]:
    excludes = [_read_rule(r, rule, f"exclude[{i}]", matrix, full=False)
                for i, rule in enumerate(r.typed(data.get("exclude", []), "exclude", list, data, "exclude"))]
    combos: list[Combination] = []
    for model in matrix.models.values():
        for runner_name, fw_name, prec_name, tp in itertools.product(
                model.runners, model.frameworks, model.precisions, model.tp):
            runner = matrix.runners[runner_name]
            framework = matrix.frameworks[fw_name]
            if prec_name not in runner.precisions:
                continue  # the product skips precisions the chip lacks; an include says so loudly
            if framework.image_for(runner) is None:
                continue  # e.g. no SGLang build for CPU runners
            combo = Combination(model, runner, framework, matrix.precisions[prec_name], tp)
            if any(_rule_matches(rule, combo) for rule in excludes):
                continue
            _check_combination(r, combo, f"models.{model.name} ({combo.name})", data["models"])
            combos.append(combo)
    includes = r.typed(data.get("include", []), "include", list, data, "include")
    for index, node in enumerate(includes):
        rule = _read_rule(r, node, f"include[{index}]", matrix, full=True)
        combo = Combination(matrix.models[rule["model"]], matrix.runners[rule["runner"]],
                            matrix.frameworks[rule["framework"]], matrix.precisions[rule["precision"]],
                            rule["tp"])
        _check_combination(r, combo, f"include[{index}] ({combo.name})", node)
        combos.append(combo)
    seen: dict[str, Combination] = {}
    for combo in combos:
        if not SESSION_NAME.match(combo.name):
            raise r.fail("models", f"session name {combo.name!r} has characters outside [a-z0-9.-]")
        if combo.name in seen:
            raise r.fail("include" if includes else "models",
                         f"duplicate session name {combo.name!r} (listed twice, by the product of a "
                         "model's lists and by include, or names that run together)", data)
        seen[combo.name] = combo
    return tuple(combos)


# --------------------------------------------------------------------------- selection


def select(combos: Iterable[Combination], keywords: str | None = None,
           tags: Iterable[str] = (), names: Iterable[str] = ()) -> list[Combination]:
    """The slice nox would run for `-s NAME ...`, `-k EXPR` and `-t TAG ...` (nox's own semantics)."""
    from nox.manifest import keyword_match

    combos = list(combos)
    names = list(names)
    if names:
        by_name = {c.name: c for c in combos}
        for name in names:
            if name not in by_name:
                raise ConfigError(unknown_choice("session", name, by_name))
        combos = [by_name[name] for name in names]
    tags = set(tags)
    if tags:
        combos = [c for c in combos if tags.intersection(c.tags)]
    if keywords:
        try:
            combos = [c for c in combos if keyword_match(keywords, [c.name, *c.tags])]
        except SyntaxError as exc:
            raise ConfigError(f"-k {keywords!r} is not a valid expression: {exc.msg}") from None
    return combos


def adhoc_combination(matrix: Matrix, *, model: str, runner: str, framework: str, precision: str,
                      tp: int, checkpoint: str | None = None, protocol: str | None = None,
                      image: str | None = None) -> Combination:
    """One combination from the command line, also one matrix.yaml does not list.

    `model` is a matrix model's short name, a new short name (with `checkpoint`), or a checkpoint itself
    (a hub id or a path): the checkpoint a matrix model serves at this precision becomes that model, so
    the run gets the matrix session's name; any other checkpoint gets a name derived from it.  A model
    known to matrix.yaml keeps its settings (checkpoints, server args).  `runner` is a SKU name or its CI
    label.  Runner, framework and precision must exist: they carry hardware and flag meaning.
    """
    r = Reader(Path("command line"))
    try:
        runner = matrix.runner(runner).name
    except ConfigError as exc:
        raise ConfigError(f"--runner: {exc}") from None
    for kind, value, known in (("framework", framework, matrix.frameworks),
                               ("precision", precision, matrix.precisions)):
        if value not in known:
            raise ConfigError(f"--{kind}: " + unknown_choice(kind, value, known))
    if model not in matrix.models and "/" in model and checkpoint is None:
        known_model = matrix.model_for_checkpoint(model, precision, matrix.runners[runner].vendor)
        model, checkpoint = (known_model.name, None) if known_model else (_model_name_from(model), model)
    if protocol is not None and protocol not in PROTOCOLS:
        raise ConfigError("--protocol: " + unknown_choice("protocol", protocol, PROTOCOLS))
    if not MODEL_NAME.match(model):
        raise ConfigError(f"--model: {model!r} must match {MODEL_NAME.pattern}; it names the session")
    base = matrix.models.get(model)
    if base is None:
        if not checkpoint:
            raise ConfigError(f"--model {model!r} is not in {matrix.path.name}; give --checkpoint too "
                              f"(known models: {', '.join(matrix.models)})")
        base = Model(name=model, checkpoint=checkpoint, protocol=protocol or "completions",
                     runners=(runner,), frameworks=(framework,), precisions=(precision,), tp=(tp,),
                     checkpoints={}, server_args={}, max_model_len=matrix.defaults.max_model_len,
                     max_gen_toks=matrix.defaults.max_gen_toks)
    elif checkpoint:
        # An explicit checkpoint is what runs, whatever the precision.
        base = replace(base, checkpoint=checkpoint, checkpoints={})
    if protocol:
        if base.reasoning and protocol != "chat":
            raise ConfigError(f"--protocol {protocol}: {model!r} is a reasoning model (matrix.yaml "
                              f"models.{model}.reasoning); its answers are split from the thinking in chat only")
        base = replace(base, protocol=protocol)
    fw = matrix.frameworks[framework]
    if image:
        fw = replace(fw, images={**fw.images, runner: image})
    combo = Combination(base, matrix.runners[runner], fw, matrix.precisions[precision], tp)
    if checkpoint and combo.precision.checkpoint_required:
        # The user vouches that --checkpoint is already quantized for this precision.
        combo = replace(combo, model=replace(base, checkpoints={precision: {"*": checkpoint}}))
    _check_combination(r, combo, combo.name, None)
    return combo
