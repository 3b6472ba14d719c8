"""matrix.yaml -> validated frozen objects (types.py) -> the combinations that become sessions.

Everything here is pure: no servers, no network.  Validation happens once, in `load_matrix`, and
every error names the file, the line and the key path, with the allowed values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from gsm8k_bench.core import yaml_reader
from gsm8k_bench.core.errors import ConfigError, unknown_choice
from gsm8k_bench.core.yaml_reader import MappingWithLines, NodeChecker
from gsm8k_bench.matrix.combinations import expand
from gsm8k_bench.matrix.names import MODEL_NAME, PART_NAME
from gsm8k_bench.matrix.precisions import PRECISION_FIELDS, FlagValue, Precision
from gsm8k_bench.matrix.reasoning import check_budget, read_reasoning
from gsm8k_bench.matrix.types import FRAMEWORK_NAMES, PROTOCOLS, VENDORS, Defaults, Framework, Matrix, Model, Runner

SCHEMA_VERSION = 1
T = TypeVar("T")


def load_matrix(path: str | Path) -> Matrix:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the matrix: {exc.strerror}") from exc
    return parse_matrix(text, path)


def parse_matrix(text: str, path: Path) -> Matrix:
    data = yaml_reader.load(text, path)
    r = NodeChecker(path)
    top_keys = ("version", "defaults", "runners", "frameworks", "precisions", "models",
                "include", "exclude")
    data = r.mapping(data, "(top level)", top_keys, required=("version", "runners", "frameworks",
                                                             "precisions", "models"))
    if data["version"] != SCHEMA_VERSION:
        raise r.fail("version", f"schema version {data['version']!r} is not supported; "
                     f"allowed: {SCHEMA_VERSION}", data, "version")

    defaults = _read_defaults(r, data.get("defaults", MappingWithLines()))
    runners = _read_named(r, data, "runners", PART_NAME, _read_runner)
    _check_labels(r, data["runners"], runners)
    frameworks = _read_named(r, data, "frameworks", PART_NAME, _read_framework)
    precisions = _read_named(r, data, "precisions", PART_NAME,
                             lambda r, name, node, key: _read_precision(r, name, node, key, frameworks))
    models = _read_named(r, data, "models", MODEL_NAME,
                         lambda r, name, node, key: _read_model(r, name, node, key, defaults,
                                                                runners, frameworks, precisions))
    matrix = Matrix(path, defaults, runners, frameworks, precisions, models)
    combos = expand(r, data, matrix)
    return Matrix(path, defaults, runners, frameworks, precisions, models, combos)


def _read_named(r: NodeChecker, data: Mapping[str, Any], key: str, pattern: re.Pattern[str],
                read: Callable[[NodeChecker, str, Any, str], T]) -> dict[str, T]:
    section = r.mapping(data[key], key)
    if not section:
        raise r.fail(key, "must not be empty", data, key)
    out = {}
    for name, node in section.items():
        r.name(name, f"{key}.{name}", pattern, section)
        out[name] = read(r, name, node, f"{key}.{name}")
    return out


def _read_defaults(r: NodeChecker, node: object) -> Defaults:
    node = r.mapping(node, "defaults", Defaults.__dataclass_fields__)
    values: dict[str, Any] = {}  # field -> its int or float
    for name, default in Defaults().__dict__.items():
        if name in node:
            kind = (int, float) if isinstance(default, float) else int
            values[name] = r.typed(node[name], f"defaults.{name}", kind, node, name)
            if values[name] < 0 or (values[name] == 0 and name != "num_fewshot"):
                raise r.fail(f"defaults.{name}", f"must be positive, got {values[name]}", node, name)
    return Defaults(**values)


def _read_runner(r: NodeChecker, name: str, node: object, key: str) -> Runner:
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
    given = node.get("concurrency", 16)
    if isinstance(given, list):
        if not given or len(set(given)) != len(given):
            raise r.fail(f"{key}.concurrency", f"a list of distinct levels, got {given!r}", node, "concurrency")
        levels = tuple(r.positive_int(v, f"{key}.concurrency", node, "concurrency") for v in given)
    else:
        levels = (r.positive_int(given, f"{key}.concurrency", node, "concurrency"),)
    start = node.get("start_timeout_s")
    if start is not None and r.typed(start, f"{key}.start_timeout_s", (int, float), node, "start_timeout_s") <= 0:
        raise r.fail(f"{key}.start_timeout_s", f"must be positive, got {start}", node, "start_timeout_s")
    return Runner(name, vendor, gpus, label, precisions, levels[0],
                  float(start) if start is not None else None, levels if len(levels) > 1 else ())


def _check_labels(r: NodeChecker, node: Mapping[str, Any], runners: Mapping[str, Runner]) -> None:
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


def _vendor_keyed(r: NodeChecker, node: object, key: str,
                  value_check: Callable[[Any, str, dict[Any, Any], str], T]) -> dict[str, T]:
    node = r.mapping(node, key)
    out = {}
    for child, value in node.items():
        r.typed(child, f"{key}.{child}", str, node, child)
        out[child] = value_check(value, f"{key}.{child}", node, child)
    return out


def _read_framework(r: NodeChecker, name: str, node: object, key: str) -> Framework:
    if name not in FRAMEWORK_NAMES:
        raise r.fail(key, unknown_choice("framework", name, FRAMEWORK_NAMES) + " (one module each under "
                     "gsm8k_bench/serving/frameworks/)", node)
    node = r.mapping(node, key, ("port", "images", "env"), required=("port", "images"))
    port = r.positive_int(node["port"], f"{key}.port", node, "port")
    images = _vendor_keyed(r, node["images"], f"{key}.images",
                           lambda v, k, p, c: r.typed(v, k, str, p, c))

    def env_block(value: object, k: str, p: object, c: object) -> dict[str, str]:
        block = r.mapping(value, k)
        for env_name, env_value in block.items():
            if not re.match(r"^[A-Z_][A-Z0-9_]*$", str(env_name)):
                raise r.fail(f"{k}.{env_name}", "environment names are [A-Z_][A-Z0-9_]*", block, env_name)
            r.typed(env_value, f"{k}.{env_name}", str, block, env_name)
        return dict(block)

    env = _vendor_keyed(r, node.get("env", MappingWithLines()), f"{key}.env", env_block)
    return Framework(name, port, images, env)


def _str_or_by_vendor(r: NodeChecker, value: object, key: str, parent: object, child: object) -> FlagValue:
    """A string, or a mapping vendor -> string."""
    if not isinstance(value, dict):
        return r.typed(value, key, str, parent, child)
    for vendor, vendor_value in value.items():
        r.choice(vendor, f"{key}.{vendor}", "vendor", VENDORS, value, vendor)
        r.typed(vendor_value, f"{key}.{vendor}", str, value, vendor)
    return dict(value)


def _read_precision(r: NodeChecker, name: str, node: object, key: str,
                    frameworks: Mapping[str, Framework]) -> Precision:
    node = r.mapping(node, key, ("description", "checkpoint_required", *frameworks))
    description = r.typed(node.get("description", name), f"{key}.description", str, node, "description")
    required = r.typed(node.get("checkpoint_required", False), f"{key}.checkpoint_required", bool,
                       node, "checkpoint_required")
    per_framework = {}
    for fw in frameworks:
        spec = r.mapping(node.get(fw, MappingWithLines()), f"{key}.{fw}", PRECISION_FIELDS)
        per_framework[fw] = {field_name: _str_or_by_vendor(r, value, f"{key}.{fw}.{field_name}", spec, field_name)
                             for field_name, value in spec.items()}
    return Precision(name, description, required, per_framework)


def _read_model(r: NodeChecker, name: str, node: object, key: str, defaults: Defaults,
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
    ckpt_node = r.mapping(node.get("checkpoints", MappingWithLines()), f"{key}.checkpoints", precisions)
    for precision, value in ckpt_node.items():
        value = _str_or_by_vendor(r, value, f"{key}.checkpoints.{precision}", ckpt_node, precision)
        checkpoints[precision] = {"*": value} if isinstance(value, str) else dict(value)
    args_node = r.mapping(node.get("server_args", MappingWithLines()), f"{key}.server_args", frameworks)
    server_args = {fw: r.str_list(v, f"{key}.server_args.{fw}", args_node, fw)
                   for fw, v in args_node.items()}
    limit = node.get("limit")
    if limit is not None:
        limit = r.positive_int(limit, f"{key}.limit", node, "limit")
    quant_node = r.mapping(node.get("checkpoint_quantization", MappingWithLines()), f"{key}.checkpoint_quantization",
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
