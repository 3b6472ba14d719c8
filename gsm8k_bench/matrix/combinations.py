"""The combinations that become sessions: each model's runners x frameworks x precisions x tp, less
`exclude`, plus `include` (matrix.yaml), or one given on the command line (`adhoc_combination`).

A combination that cannot run as configured (hardware, tp, image, checkpoint) is an error naming it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gsm8k_bench.core.errors import BenchError, ConfigError, unknown_choice
from gsm8k_bench.core.paths import check_session_name
from gsm8k_bench.core.yaml_reader import NodeChecker
from gsm8k_bench.matrix.names import COMBO_KEYS, MODEL_NAME, model_name_from
from gsm8k_bench.matrix.types import PROTOCOLS, Combination, Matrix, Model


def _check_combination(r: NodeChecker, combo: Combination, key: str, node: object) -> None:
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
    values = combo.key._asdict()
    return all(values[k] == v for k, v in rule.items())


def _read_rule(r: NodeChecker, node: object, key: str, matrix: Matrix, full: bool) -> dict[str, Any]:
    node = r.mapping(node, key, COMBO_KEYS, required=COMBO_KEYS if full else ())
    if not node:
        raise r.fail(key, f"an empty rule would match everything; use keys: {', '.join(COMBO_KEYS)}", node)
    known: dict[str, Mapping[str, object]] = {"model": matrix.models, "runner": matrix.runners,
                                              "framework": matrix.frameworks, "precision": matrix.precisions}
    for rule_key, value in node.items():
        if rule_key == "tp":
            r.positive_int(value, f"{key}.tp", node, "tp")
        else:
            r.choice(value, f"{key}.{rule_key}", rule_key, known[rule_key], node, rule_key)
    return dict(node)


def expand(r: NodeChecker, data: Mapping[str, Any], matrix: Matrix) -> tuple[Combination, ...]:
    """The combinations of a loaded matrix, given its top-level mapping (for include and exclude)."""
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
        try:
            check_session_name(combo.name)
        except BenchError as exc:
            raise r.fail("models", str(exc)) from None
        if combo.name in seen:
            raise r.fail("include" if includes else "models",
                         f"duplicate session name {combo.name!r} (listed twice, by the product of a "
                         "model's lists and by include, or names that run together)", data)
        seen[combo.name] = combo
    return tuple(combos)


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
    r = NodeChecker(Path("command line"))
    try:
        runner = matrix.runner(runner).name
    except ConfigError as exc:
        raise ConfigError(f"--runner: {exc}") from None
    known: Mapping[str, object]
    for kind, value, known in (("framework", framework, matrix.frameworks),
                               ("precision", precision, matrix.precisions)):
        if value not in known:
            raise ConfigError(f"--{kind}: " + unknown_choice(kind, value, known))
    if model not in matrix.models and "/" in model and checkpoint is None:
        known_model = matrix.model_for_checkpoint(model, precision, matrix.runners[runner].vendor)
        model, checkpoint = (known_model.name, None) if known_model else (model_name_from(model), model)
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
    try:  # a long hub id makes a long name: refused here, not by the file system mid-session
        check_session_name(combo.name)
    except BenchError as exc:
        raise ConfigError(f"--model: {exc}") from None
    if checkpoint and combo.precision.checkpoint_required:
        # The user vouches that --checkpoint is already quantized for this precision.
        combo = replace(combo, model=replace(base, checkpoints={precision: {"*": checkpoint}}))
    _check_combination(r, combo, combo.name, None)
    return combo
