"""Throughput, latency and truncations, read from the server's Prometheus /metrics around the eval.

Passive on purpose: two scrapes (before and after lm-eval) and their difference, so nothing sits in
the request path.  Where a framework does not export a quantity the value is None, never a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class MetricNames:
    generation_tokens: str
    requests: str  # counter of finished requests
    latency: str  # histogram of end-to-end request latency, seconds
    running: str  # gauge: requests being generated
    waiting: str  # gauge: requests queued
    # Counter of generated tokens that grows while requests run (not only when they finish): live progress.
    step_tokens: str
    step_tokens_where: tuple[tuple[str, str], ...] = ()
    finished_label: str | None = None  # label of `requests` that says why a request ended
    length_value: str = "length"
    breakdown_label: str = "priority"  # gauge series with a non-empty value here split a total: not summed


NAMES = {
    # vLLM counts generated tokens every engine step.
    "vllm": MetricNames("vllm:generation_tokens_total", "vllm:request_success_total",
                        "vllm:e2e_request_latency_seconds", "vllm:num_requests_running",
                        "vllm:num_requests_waiting", "vllm:generation_tokens_total",
                        finished_label="finished_reason"),
    # SGLang exports these with --enable-metrics; it has no per-reason request counter.  Its
    # generation_tokens_total grows when a request finishes; realtime_tokens_total{mode="decode"} every
    # decode step (sglang/srt/observability/metrics_collector.py, 0.5.23).
    "sglang": MetricNames("sglang:generation_tokens_total", "sglang:num_requests_total",
                          "sglang:e2e_request_latency_seconds", "sglang:num_running_reqs",
                          "sglang:num_queue_reqs", "sglang:realtime_tokens_total",
                          step_tokens_where=(("mode", "decode"),)),
}

Samples = list[tuple[str, dict[str, str], float]]


def parse(text: str) -> Samples:
    samples = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        try:
            value = float(match.group(4))
        except ValueError:
            continue
        samples.append((match.group(1), dict(LABEL.findall(match.group(3) or "")), value))
    return samples


def scrape(base_url: str, timeout_s: float = 10.0) -> Samples | None:
    try:
        response = requests.get(f"{base_url}/metrics", timeout=timeout_s)
    except requests.RequestException:
        return None
    return parse(response.text) if response.status_code == 200 else None


def _total(samples: Samples, name: str, where: Mapping[str, str] | None = None) -> float:
    return sum(v for n, labels, v in samples
               if n == name and all(labels.get(k) == want for k, want in (where or {}).items()))


@dataclass(frozen=True)
class Counts:
    """One scrape's numbers for live progress."""

    finished: float  # requests finished since the server started
    running: float
    waiting: float
    step_tokens: float  # generated tokens since the server started, counted while requests run


def counts(framework: str, samples: Samples) -> Counts:
    names = NAMES[framework]

    def gauge(name: str) -> float:
        return sum(v for n, labels, v in samples if n == name and not labels.get(names.breakdown_label))

    return Counts(_total(samples, names.requests), gauge(names.running), gauge(names.waiting),
                  _total(samples, names.step_tokens, dict(names.step_tokens_where)))


def _buckets(samples: Samples, histogram: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for name, labels, value in samples:
        if name == f"{histogram}_bucket" and "le" in labels:
            le = math.inf if labels["le"] in ("+Inf", "inf") else float(labels["le"])
            out[le] = out.get(le, 0.0) + value
    return out


def quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated linearly inside the bucket."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its edge is what is known
            span = count - lower_count
            fraction = (rank - lower_count) / span if span > 0 else 1.0
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return None


def summarize(framework: str, before: Samples | None, after: Samples | None, eval_s: float) -> dict[str, Any]:
    """Deltas over the evaluation: tokens, requests, rates, truncations, latency p50/p90."""
    names = NAMES.get(framework)
    empty = {"output_tokens": None, "output_tokens_per_s": None, "requests": None, "requests_per_s": None,
             "truncations": None, "latency_p50_s": None, "latency_p90_s": None, "source": None}
    if names is None or before is None or after is None:
        return empty
    tokens = _total(after, names.generation_tokens) - _total(before, names.generation_tokens)
    requests_done = _total(after, names.requests) - _total(before, names.requests)
    truncations = None
    if names.finished_label:
        where = {names.finished_label: names.length_value}
        truncations = int(_total(after, names.requests, where) - _total(before, names.requests, where))
    b_before, b_after = _buckets(before, names.latency), _buckets(after, names.latency)
    delta = {le: b_after[le] - b_before.get(le, 0.0) for le in b_after}
    rate = (lambda x: round(x / eval_s, 3)) if eval_s > 0 else (lambda x: None)
    p50, p90 = quantile(delta, 0.5), quantile(delta, 0.9)
    return {
        "output_tokens": int(tokens),
        "output_tokens_per_s": rate(tokens),
        "requests": int(requests_done),
        "requests_per_s": rate(requests_done),
        "truncations": truncations,
        "latency_p50_s": round(p50, 3) if p50 is not None else None,
        "latency_p90_s": round(p90, 3) if p90 is not None else None,
        "source": f"{framework} /metrics",
    }


def invalid_rates(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    """Share of answers from which the filter extracted no number (lm-eval writes "[invalid]")."""
    n = len(samples)
    if not n:
        return {"strict_invalid_rate": None, "flexible_invalid_rate": None}
    def rate(kind: str) -> float:
        return round(sum(1 for s in samples if s.get(f"{kind}_answer") in ("[invalid]", "", None)) / n, 4)
    return {"strict_invalid_rate": rate("strict"), "flexible_invalid_rate": rate("flexible")}
