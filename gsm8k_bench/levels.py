"""Accuracy under load: the same questions at several concurrency levels (`--concurrency 1,64,256`, or a
runner's list in matrix.yaml), all on one server start.  Batching changes an engine's numerics, so a
level can lose questions another answers; the levels are compared pairwise, question by question.

One level is the gating level (the first unless `--gate-concurrency` names another): its metrics and
samples are the session JSON's top-level `metrics` and `samples`, as with a single level.  The JSON's
`concurrency` block (present only with several levels) holds every level's metrics, server metrics and
eval time, the other levels' samples, and the pairwise comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any

from gsm8k_bench import comparisons, evaluate, gate, server_metrics
from gsm8k_bench.errors import ConfigError, EvalError


def gate_level(levels: tuple[int, ...], requested: int | None) -> int:
    if requested is None:
        return levels[0]
    if requested not in levels:
        raise ConfigError(f"--gate-concurrency {requested}: not one of the concurrency levels "
                          f"{', '.join(map(str, levels))}")
    return requested


def level_dir(work_dir: Path, concurrency: int) -> Path:
    return work_dir / f"concurrency-{concurrency}"


def level_plans(plan) -> list:
    """One plan per level, in run order; each level's lm-eval has its own folder, log and go file.
    A single level keeps the session's own plan (and folder layout)."""
    if len(plan.concurrency_levels) < 2:
        return [plan]
    plans = []
    for concurrency in plan.concurrency_levels:
        work_dir = level_dir(plan.work_dir, concurrency)
        settings = replace(plan.settings, concurrency=concurrency)
        argv = evaluate.lm_eval_command(plan.lm_eval_python, settings, served_name=plan.served_name,
                                        base_url=plan.base_url, output_dir=work_dir / "lm-eval", task=plan.task,
                                        include_path=plan.task_dir)
        plans.append(replace(plan, settings=settings, work_dir=work_dir, lm_eval_argv=argv))
    return plans


@dataclass(frozen=True)
class LevelRun:
    plan: Any  # session.Plan of this level
    eval_s: float
    server_metrics: dict[str, Any]

    @property
    def concurrency(self) -> int:
        return self.plan.settings.concurrency


def record(runs: list[LevelRun], gating_document: dict[str, Any], settings: gate.GateSettings) -> dict[str, Any]:
    """The `concurrency` block: every level's numbers, the non-gating levels' samples (read from their
    lm-eval outputs), and each pair of levels compared (the earlier level as the reference)."""
    gate_concurrency = gating_document["config"]["concurrency"]
    entries, samples = [], {}
    for run in runs:
        entry = {"concurrency": run.concurrency, "gating": run.concurrency == gate_concurrency,
                 "eval_s": run.eval_s, "server_metrics": run.server_metrics,
                 "lm_eval_dir": str(run.plan.lm_eval_dir)}
        if entry["gating"]:
            samples[run.concurrency] = gating_document["samples"]
            entry.update(metrics=gating_document["metrics"], samples=None)
        else:
            output = evaluate.parse_outputs(run.plan.lm_eval_dir, run.plan.task)
            if not output.metrics["n"]:
                raise EvalError(f"lm-eval scored zero questions at concurrency {run.concurrency}")
            samples[run.concurrency] = output.samples
            entry.update(metrics={**output.metrics, **server_metrics.invalid_rates(output.samples)},
                         samples=output.samples)
        entries.append(entry)
    pairs = []
    for a, b in combinations([run.concurrency for run in runs], 2):
        result = comparisons.pair_samples(samples[a], samples[b], settings)
        pairs.append({"reference": a, "run": b, "verdict": result["verdict"], "reason": result["reason"],
                      "metrics": result["metrics"],
                      "flips": [{"doc_id": f["doc_id"], "moves": f["moves"]} for f in result["flips"]],
                      "answers_changed": [f["doc_id"] for f in result["changed"]]})
    return {"levels": [run.concurrency for run in runs], "gate_level": gate_concurrency, "runs": entries,
            "comparisons": pairs}


def level_samples(document: dict[str, Any], concurrency: int) -> list[dict[str, Any]]:
    """A level's per-question samples (the gating level's are the top-level ones)."""
    for entry in (document.get("concurrency") or {}).get("runs", []):
        if entry["concurrency"] == concurrency:
            return document["samples"] if entry["gating"] else entry["samples"]
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
