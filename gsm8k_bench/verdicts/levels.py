"""Accuracy under load: the same questions at several concurrency levels (`--concurrency 1,64,256`, or a
runner's list in matrix.yaml), all on one server start.  Batching changes an engine's numerics, so a
level can lose questions another answers; the levels are compared pairwise, question by question.

One level is the gating level (the first unless `--gate-concurrency` names another): its metrics and
samples are the session JSON's top-level `metrics` and `samples`, as with a single level.  The JSON's
`concurrency` block (present only with several levels) holds every level's metrics, server metrics and
eval time, the other levels' samples, and the pairwise comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gsm8k_bench.core.errors import ConfigError, EvalError
from gsm8k_bench.core.session_result import (
    ConcurrencyBlock,
    LevelComparison,
    LevelRunRecord,
    Metrics,
    Sample,
    ServerMetrics,
)
from gsm8k_bench.evaluation import harness, server_metrics
from gsm8k_bench.verdicts import gate, run_comparison


def gate_level(levels: tuple[int, ...], requested: int | None) -> int:
    if requested is None:
        return levels[0]
    if requested not in levels:
        raise ConfigError(f"--gate-concurrency {requested}: not one of the concurrency levels "
                          f"{', '.join(map(str, levels))}")
    return requested


def level_dir(work_dir: Path, concurrency: int) -> Path:
    return work_dir / f"concurrency-{concurrency}"


class LevelPlan(Protocol):
    """What level_plans needs of a session's plan (session.Plan)."""

    @property
    def concurrency_levels(self) -> tuple[int, ...]: ...

    def for_level(self: P, concurrency: int) -> P: ...


P = TypeVar("P", bound=LevelPlan)


def level_plans(plan: P) -> list[P]:
    """One plan per level, in run order; each level's lm-eval has its own folder, log and go file.
    A single level keeps the session's own plan (and folder layout)."""
    if len(plan.concurrency_levels) < 2:
        return [plan]
    return [plan.for_level(concurrency) for concurrency in plan.concurrency_levels]


@dataclass(frozen=True)
class LevelRun:
    """One level's evaluation: its time, the server's /metrics over it, where lm-eval wrote."""

    concurrency: int
    eval_s: float
    server_metrics: ServerMetrics
    lm_eval_dir: Path
    task: str


def record(runs: list[LevelRun], gate_concurrency: int, gating_metrics: Metrics,
           gating_samples: list[dict[str, Any]], settings: gate.GateSettings) -> ConcurrencyBlock:
    """The `concurrency` block: every level's numbers, the non-gating levels' samples (read from their
    lm-eval outputs), and each pair of levels compared (the earlier level as the reference)."""
    entries, samples = [], {}
    for run in runs:
        gating = run.concurrency == gate_concurrency
        entry = LevelRunRecord(concurrency=run.concurrency, gating=gating, eval_s=run.eval_s,
                               server_metrics=run.server_metrics, lm_eval_dir=str(run.lm_eval_dir))
        if gating:
            samples[run.concurrency] = gating_samples
            entry.metrics, entry.samples = gating_metrics, None
        else:
            output = harness.parse_outputs(run.lm_eval_dir, run.task)
            if not output.metrics["n"]:
                raise EvalError(f"lm-eval scored zero questions at concurrency {run.concurrency}")
            unanswered = gate.unanswered(output.samples)
            if unanswered:
                raise EvalError(f"at concurrency {run.concurrency}: {unanswered}")
            samples[run.concurrency] = output.samples
            entry.metrics = Metrics.model_validate({**output.metrics, **server_metrics.invalid_rates(output.samples)})
            entry.samples = [Sample.model_validate(sample) for sample in output.samples]
        entries.append(entry)
    pairs = []
    for a, b in combinations([run.concurrency for run in runs], 2):
        result = run_comparison.pair_samples(samples[a], samples[b], settings)
        pairs.append(LevelComparison.model_validate({
            "reference": a, "run": b, "verdict": result["verdict"], "reason": result["reason"],
            "metrics": result["metrics"],
            "flips": [{"doc_id": f["doc_id"], "moves": f["moves"]} for f in result["flips"]],
            "answers_changed": [f["doc_id"] for f in result["changed"]]}))
    return ConcurrencyBlock(levels=[run.concurrency for run in runs], gate_level=gate_concurrency, runs=entries,
                            comparisons=pairs)


def level_samples(document: dict[str, Any], concurrency: int) -> list[dict[str, Any]]:
    """A level's per-question samples (the gating level's are the top-level ones)."""
    for entry in (document.get("concurrency") or {}).get("runs", []):
        if entry["concurrency"] == concurrency:
            samples: list[dict[str, Any]] = document["samples"] if entry["gating"] else entry["samples"]
            return samples
    raise KeyError(f"{document.get('session')}: no concurrency level {concurrency}")


def views(document: dict[str, Any]) -> dict[int | None, dict[str, Any]]:
    """Concurrency level -> the session as scored at that level (its metrics and samples in the top-level
    places), in run order; one entry for a single-level (or older) JSON."""
    block = document.get("concurrency")
    if not block:
        return {(document.get("config") or {}).get("concurrency"): document}
    return {run["concurrency"]: {**document, "metrics": run["metrics"],
                                 "samples": level_samples(document, run["concurrency"])}
            for run in block["runs"]}
