"""Baselines and the regression gate: pure functions, no I/O beyond reading baselines.yaml.

A run is compared only with a baseline of the same protocol (endpoint, chat template, few-shot
format, token limit, stop sequences, and for reasoning models the reasoning parser, effort, chat-template
arguments and answer extraction) and the same number of questions: `--limit N` takes the first N
questions, which are not a random sample of the 1,319, so a smoke run is judged against a smoke
baseline or not at all.  The verdict is one-sided and accounts for n: a regression is called only
when even the upper end of the run's Wilson score interval (at the stated confidence) lies below
`baseline - tolerance`.  Small runs are therefore not failed for noise, and a full run with a real
drop is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from gsm8k_bench.errors import ConfigError
from gsm8k_bench.matrix import Combination, LineLoader, Reader

METRICS = ("strict_match", "flexible_extract")
# A baseline may omit the reasoning settings: it then stands for a non-reasoning run (their stock values).
REASONING_DEFAULTS = {"reasoning_parser": None, "reasoning_effort": None, "chat_template_kwargs": {},
                      "answer_extraction": "stock"}
PROTOCOL_KEYS = ("endpoint", "apply_chat_template", "fewshot_as_multiturn", "num_fewshot", "max_gen_toks",
                 "until", *REASONING_DEFAULTS)
FILTER_KEYS = ("model", "runner", "framework", "precision", "tp")


@dataclass(frozen=True)
class GateSettings:
    confidence: float = 0.95
    tolerance: float = 0.02


@dataclass(frozen=True)
class Baseline:
    filters: Mapping[str, Any]
    n: int
    protocol: Mapping[str, Any]
    accuracy: Mapping[str, float]  # metric -> expected accuracy
    source: str = ""

    def matches(self, combo: Combination) -> bool:
        values = {"model": combo.model.name, "runner": combo.runner.name, "framework": combo.framework.name,
                  "precision": combo.precision.name, "tp": combo.tp}
        return all(values[k] == v for k, v in self.filters.items())


@dataclass(frozen=True)
class Baselines:
    settings: GateSettings
    entries: tuple[Baseline, ...]


def load_baselines(path: Path) -> Baselines:
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: no such baselines file")
    r = Reader(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=LineLoader)  # noqa: S506 - SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: YAML syntax error: {exc}") from None
    data = r.mapping(data, "(top level)", ("version", "gate", "baselines"), required=("version",))
    gate = r.mapping(data.get("gate", {}), "gate", ("confidence", "tolerance"))
    confidence = float(r.typed(gate.get("confidence", 0.95), "gate.confidence", (int, float), gate, "confidence"))
    tolerance = float(r.typed(gate.get("tolerance", 0.02), "gate.tolerance", (int, float), gate, "tolerance"))
    if not 0.5 <= confidence < 1:
        raise r.fail("gate.confidence", f"must be in [0.5, 1), got {confidence}", gate, "confidence")
    if not 0 <= tolerance < 1:
        raise r.fail("gate.tolerance", f"must be in [0, 1), got {tolerance}", gate, "tolerance")
    entries = []
    for index, node in enumerate(r.typed(data.get("baselines", []), "baselines", list, data, "baselines")):
        key = f"baselines[{index}]"
        node = r.mapping(node, key, (*FILTER_KEYS, "n", "protocol", *METRICS, "source"),
                         required=("model", "n", "protocol"))
        accuracy = {}
        for metric in METRICS:
            if metric in node:
                value = float(r.typed(node[metric], f"{key}.{metric}", (int, float), node, metric))
                if not 0 <= value <= 1:
                    raise r.fail(f"{key}.{metric}", f"an accuracy in [0, 1], got {value}", node, metric)
                accuracy[metric] = value
        if not accuracy:
            raise r.fail(key, f"needs at least one of {', '.join(METRICS)}", node)
        protocol = r.mapping(node["protocol"], f"{key}.protocol", PROTOCOL_KEYS,
                             required=[k for k in PROTOCOL_KEYS if k not in REASONING_DEFAULTS])
        protocol = {**REASONING_DEFAULTS, **protocol}
        entries.append(Baseline(
            filters={k: node[k] for k in FILTER_KEYS if k in node},
            n=r.positive_int(node["n"], f"{key}.n", node, "n"),
            protocol={k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                      for k, v in protocol.items()},
            accuracy=accuracy,
            source=str(node.get("source", "")),
        ))
    return Baselines(GateSettings(confidence, tolerance), tuple(entries))


def wilson_upper(p: float, n: int, confidence: float) -> float:
    """Upper end of the one-sided Wilson score interval for a proportion p observed over n trials."""
    z = NormalDist().inv_cdf(confidence)
    denominator = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + margin) / denominator)


def protocol_of(run_protocol: Mapping[str, Any], generation: Mapping[str, Any]) -> dict[str, Any]:
    """The run's protocol in the baseline's terms (stop sequences come from lm-eval's task config)."""
    record = {k: run_protocol.get(k) for k in PROTOCOL_KEYS if k != "until"}
    record["until"] = list(generation.get("until") or [])
    return record


def judge(baselines: Baselines, combo: Combination, protocol: Mapping[str, Any],
          metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict: 'pass', 'regression' or 'not_gated' (with the reason), and the numbers behind it."""
    settings = baselines.settings
    base = {"verdict": "not_gated", "confidence": settings.confidence, "tolerance": settings.tolerance,
            "baseline": None, "checks": [], "reason": ""}
    n = metrics.get("n") or 0
    candidates = sorted((b for b in baselines.entries if b.matches(combo)), key=lambda b: -len(b.filters))
    if not candidates:
        return {**base, "reason": f"no baseline for {combo.name} in baselines.yaml"}
    same_protocol = [b for b in candidates if dict(b.protocol) == dict(protocol)]
    if not same_protocol:
        diff = {k: (candidates[0].protocol.get(k), protocol.get(k)) for k in PROTOCOL_KEYS
                if candidates[0].protocol.get(k) != protocol.get(k)}
        return {**base, "reason": f"protocol differs from the baseline's (baseline, run): {diff}"}
    same_n = [b for b in same_protocol if b.n == n]
    if not same_n:
        have = sorted({b.n for b in same_protocol})
        return {**base, "reason": f"baselines exist for n={have}, this run scored n={n}; the first n "
                f"questions are not a random sample, so runs of other sizes are not gated"}
    baseline = same_n[0]
    checks, regressed = [], False
    for metric, expected in baseline.accuracy.items():
        observed = metrics.get(metric)
        upper = wilson_upper(observed, n, settings.confidence)
        threshold = expected - settings.tolerance
        regression = upper < threshold
        regressed |= regression
        checks.append({"metric": metric, "observed": observed, "baseline": expected, "threshold": threshold,
                       "upper_bound": round(upper, 4), "regression": regression})
    return {**base, "verdict": "regression" if regressed else "pass", "checks": checks,
            "baseline": {"filters": dict(baseline.filters), "n": baseline.n, "accuracy": dict(baseline.accuracy),
                         "source": baseline.source},
            "reason": "; ".join(
                f"{c['metric']} {c['observed']:.4f}: upper bound {c['upper_bound']:.4f} "
                f"{'<' if c['regression'] else '>='} baseline {c['baseline']:.4f} - {settings.tolerance}"
                for c in checks)}


def describe_regression(verdict: Mapping[str, Any]) -> str:
    failing: Sequence[Mapping[str, Any]] = [c for c in verdict["checks"] if c["regression"]]
    return "regression: " + "; ".join(
        f"{c['metric']} {c['observed']:.4f} (upper bound {c['upper_bound']:.4f} at "
        f"{verdict['confidence']:.0%}) below baseline {c['baseline']:.4f} - {verdict['tolerance']}"
        for c in failing)
