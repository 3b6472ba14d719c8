"""Sibling cells of one results set: sessions of the same model that differ in exactly one axis, compared
question by question (gsm8k_bench.verdicts.run_comparison) — fp8/fp4 against fp16 of the same runner, framework
and tp; sglang against vllm; one runner against another; a tp size against the smallest — plus each
session's concurrency levels.  A forest plot per model shows every delta with its bounds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any, TypedDict

from gsm8k_bench.core.markdown import escaped
from gsm8k_bench.core.paths import MAX_NAME_CHARS, inside
from gsm8k_bench.verdicts import gate, run_comparison

AXES = ("runner", "framework", "precision", "tp")
# The side every other value is compared against, per axis (None: every pair, the first in sort order
# as the reference).
REFERENCE_VALUE = {"precision": "fp16", "framework": "vllm"}
MAX_SUMMARY_ROWS = 200


def _cell(document: Mapping[str, Any]) -> dict[str, Any] | None:
    config = document.get("config") or {}
    if not all(k in config for k in ("model", *AXES)):
        return None
    return {k: config[k] for k in ("model", *AXES)}


Document = Mapping[str, Any]  # a session JSON


class Delta(TypedDict):
    """One sibling pair (or pair of concurrency levels): run_comparison.Comparison's verdict and numbers."""

    model: str
    axis: str
    label: str
    reference: str
    run: str
    verdict: str
    reason: str
    metrics: dict[str, run_comparison.MetricNumbers]
    significant: bool


def _oriented(axis: str, a: Document, b: Document) -> tuple[Document, Document] | None:
    """(reference, run) for a sibling pair, or None when the axis compares only against one value."""
    va, vb = a["config"][axis], b["config"][axis]
    wanted = REFERENCE_VALUE.get(axis)
    if wanted is not None:
        return (a, b) if va == wanted else (b, a) if vb == wanted else None
    if axis == "tp":  # the smallest tp is the reference
        return (a, b) if va < vb else (b, a)
    return (a, b) if str(va) < str(vb) else (b, a)


def _delta(model: str, axis: str, label: str, reference: str, run: str,
           result: Mapping[str, Any]) -> Delta:
    return {"model": model, "axis": axis, "label": label, "reference": reference, "run": run,
            "verdict": result["verdict"], "reason": result["reason"], "metrics": result["metrics"],
            "significant": any(m["significant"] for m in result["metrics"].values())}


def deltas(documents: Sequence[Mapping[str, Any]], settings: gate.GateSettings) -> list[Delta]:
    """Every sibling pair and every pair of concurrency levels, compared (or not, and why)."""
    cells = [(d, c) for d in documents if (c := _cell(d)) is not None]
    out: list[Delta] = []
    for (a, ca), (b, cb) in combinations(cells, 2):
        differing = [k for k in ("model", *AXES) if ca[k] != cb[k]]
        if len(differing) != 1 or differing[0] == "model":
            continue
        axis = differing[0]
        pair = _oriented(axis, a, b)
        if pair is None:
            continue
        reference, run = pair
        shared = " ".join(f"{k}={ca[k]}" for k in AXES if k != axis)
        label = f"{axis} {run['config'][axis]} vs {reference['config'][axis]} ({shared})"
        out.append(_delta(ca["model"], axis, label, reference["session"], run["session"],
                          run_comparison.compare_documents(reference, run, settings)))
    for document, cell in cells:
        for pair in (document.get("concurrency") or {}).get("comparisons", []):
            label = f"concurrency {pair['run']} vs {pair['reference']} ({document['session']})"
            out.append(_delta(cell["model"], "concurrency", label, f"{document['session']}@{pair['reference']}",
                              f"{document['session']}@{pair['run']}", pair))
    return sorted(out, key=lambda d: (d["model"], d["axis"], d["label"]))


def fmt(numbers: Mapping[str, Any] | None) -> str:
    if not numbers:
        return "–"
    return (f"{numbers['difference']:+.4f} [{numbers['lower']:+.4f}, {numbers['upper']:+.4f}] "
            f"p={numbers['mcnemar_p']:.3g} (−{numbers['lost']} +{numbers['gained']})")


def flag(delta: Mapping[str, Any]) -> str:
    if delta["verdict"] == run_comparison.REGRESSION:
        return "⚠ regression"
    return "⚠ significant" if delta["significant"] else ""


def markdown(found: Sequence[Mapping[str, Any]], significant_only: bool = False) -> str:
    """The sibling section of report.md (all) or of the step summary (only the flagged ones)."""
    if not found:
        return ""
    compared = [d for d in found if d["verdict"] != run_comparison.NOT_COMPARED]
    rows = [d for d in compared if d["significant"] or not significant_only]
    lines = ["", "## Sibling deltas (run − reference, paired; bounds one-sided)", ""]
    if not rows:
        lines.append(f"{len(compared)} sibling comparisons, none significant." if significant_only
                     else "No sibling cells share questions and protocol.")
        return "\n".join(lines) + "\n"
    if significant_only and len(rows) > MAX_SUMMARY_ROWS:
        rows = rows[:MAX_SUMMARY_ROWS]
        lines.append(f"(the first {MAX_SUMMARY_ROWS} flagged; all in report.md)")
    lines += ["| model | comparison | n | strict-match | flexible-extract | verdict | flag |", "|---" * 7 + "|"]
    for d in rows:
        n = next(iter(d["metrics"].values()))["n"]
        lines.append(f"| {escaped(d['model'])} | {escaped(d['label'])} | {n} | "
                     f"{fmt(d['metrics'].get('strict_match'))} | {fmt(d['metrics'].get('flexible_extract'))} | "
                     f"{d['verdict']} | {flag(d)} |")
    skipped = [d for d in found if d["verdict"] == run_comparison.NOT_COMPARED]
    if skipped and not significant_only:
        lines += ["", "Not compared:", ""] + [f"- {escaped(d['label'])}: {escaped(d['reason'])}" for d in skipped]
    return "\n".join(lines) + "\n"


def forest_plots(found: Sequence[Mapping[str, Any]], out_dir: Path, tolerance: float) -> dict[str, Path]:
    """One PNG per model: every compared delta (strict and flexible) with its bounds, 0 and −tolerance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    compared = [d for d in found if d["verdict"] != run_comparison.NOT_COMPARED]
    for model in sorted({d["model"] for d in compared}):
        group = [d for d in compared if d["model"] == model]
        fig, ax = plt.subplots(figsize=(10, 1.8 + 0.42 * len(group)))
        for offset, (metric, color) in enumerate((("strict_match", "tab:blue"), ("flexible_extract", "tab:orange"))):
            ys = [i + 0.18 * offset for i in range(len(group))]
            values = [d["metrics"][metric] for d in group]
            diffs = [v["difference"] for v in values]
            err = [[v["difference"] - v["lower"] for v in values], [v["upper"] - v["difference"] for v in values]]
            ax.errorbar(diffs, ys, xerr=err, fmt="o", color=color, capsize=3, label=metric.replace("_", "-"))
        for i, d in enumerate(group):
            if d["significant"]:
                ax.annotate(flag(d), (1.0, i), xycoords=("axes fraction", "data"), ha="right", va="center",
                            color="tab:red", fontsize="small")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.axvline(-tolerance, color="tab:red", linestyle="--", linewidth=0.8, label=f"−tolerance ({tolerance})")
        ax.set_yticks(range(len(group)), [d["label"] for d in group], fontsize="small")
        ax.set_ylim(len(group) - 0.4, -0.6)  # first delta on top
        ax.set_xlabel("accuracy difference, run − reference (one-sided bounds)")
        ax.set_title(f"{model}: sibling deltas", loc="left", pad=20)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncol=3, fontsize="small", frameon=False)
        fig.tight_layout()
        # The model name comes from the JSONs: made a short plain file name that stays in out_dir.
        path = inside(out_dir, f"forest-{re.sub(r'[^A-Za-z0-9._-]', '_', model)[:MAX_NAME_CHARS]}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths[f"forest {model}"] = path
    return paths
