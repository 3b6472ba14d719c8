"""The last lines a session prints: a short table of what it measured, the verdict and where the JSON is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gsm8k_bench.reporting.report import fmt  # the report's number format (a dash for none)
from gsm8k_bench.verdicts import gate, protocol


def _metric_rows(document: dict[str, Any]) -> list[tuple[str, ...]]:
    metrics, verdict = document.get("metrics") or {}, document.get("gate") or {}
    confidence = verdict.get("confidence", gate.GateSettings().confidence)
    checks = {check["metric"]: check for check in verdict.get("checks", [])}
    paired = verdict.get("reference") is not None  # bounds on the change against the reference
    bound_label = f"{'change vs reference' if paired else 'upper bound'} ({confidence:.0%})"
    rows: list[tuple[str, ...]] = [
        ("metric", "accuracy", bound_label, "p (one-sided) vs level" if paired else "baseline - tol", "n", "verdict")]
    n = metrics.get("n")
    for metric in protocol.METRICS:
        observed, check = metrics.get(metric), checks.get(metric)
        if check and paired:  # one metric gates at the verdict's level; the other is reported
            bound = f"{check['difference']:+.4f} (<= {check['upper_bound']:+.4f})"
            p = gate.p_of(check)
            threshold = (f"{p:.3g} {'<=' if check['regression'] else '>'} {verdict['level']:.3g}"
                         if check["gates"] else f"{p:.3g}") + (" (two-run exact)" if check.get("split") else "")
            said = ("regression" if check["regression"] else "pass") if check["gates"] else "reported"
        elif check:
            bound, threshold = gate.precise(check["upper_bound"], check["threshold"], "")
            said = "regression" if check["regression"] else "pass"
        else:  # not gated: the same one-sided bound, for reading the number
            bound = fmt(gate.wilson_upper(observed, n, confidence) if observed is not None and n else None)
            threshold, said = fmt(None), verdict.get("verdict", "–").replace("_", " ")
        rows.append((metric.replace("_", "-"), fmt(observed), bound, threshold, fmt(n, "{}"), said))
    truncation = verdict.get("truncation")
    if truncation:  # checked on its own against the reference: its share goes up, its bound is the lower one
        rows.append(("truncated", fmt(truncation["observed"]),
                     f"{truncation['difference']:+.4f} (>= {truncation['lower_bound']:+.4f})",
                     f"{gate.p_of(truncation):.3g} "
                     f"{'<=' if truncation['regression'] else '>'} "
                     f"{truncation['level']:.3g}", fmt(truncation["n"], "{}"),
                     "truncation regression" if truncation["regression"] else "pass"))
    return rows


def _said(check: dict[str, Any], verdict: dict[str, Any]) -> str:
    """A check's word: only the gating metric passes or regresses (older verdicts gated both)."""
    if verdict.get("metric") not in (None, check["metric"]):
        return "reported"
    return "regression" if check["regression"] else "pass"


def lines(document: dict[str, Any], result_file: Path) -> list[str]:
    """The session's status line, then the table; every value straight from its session JSON."""
    error = (document.get("error") or {}).get("message")
    out = [f"{document['session']}: {document['status']}" + (f": {error}" if error else "")]
    rows = _metric_rows(document)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:-1], widths[1:-1], strict=True)),
                 row[-1]]
        out.append("  " + "  ".join(cells))
    verdict = document.get("gate") or {}
    if verdict.get("verdict") == "not_gated":
        out.append(f"  not gated: {verdict['reason']}")
    elif verdict.get("verdict") == "not_comparable":
        out.append(f"  NOT COMPARABLE (fails the session): {verdict['reason']}")
    elif verdict.get("reference"):
        lost = {c["metric"]: c["lost_doc_ids"] for c in verdict.get("checks", []) if c.get("lost_doc_ids")}
        out.append(f"  paired with {verdict['reference']['path']} ({verdict.get('method')})"
                   + "".join(f"; {m.replace('_', '-')} lost doc_ids {ids}" for m, ids in lost.items()))
    coverage = verdict.get("coverage")
    if coverage:
        out.append(f"  covered: {coverage['compared']} of the run's {coverage['run']} questions paired; "
                   f"{coverage['run_only']} run-only" + "".join(
                       f" ({c['metric'].replace('_', '-')} {c['observed']:.4f} vs the reference's "
                       f"{c['reference']:.4f}: {_said(c, verdict)})" for c in coverage.get("run_only_checks", []))
                   + f"; {coverage['changed']} changed texts; {coverage['reference_only']} reference-only")
    served, timings = document.get("server_metrics") or {}, document.get("timings") or {}
    out += [f"  output tokens/s  {fmt(served.get('output_tokens_per_s'), '{:.1f}')}",
            f"  time to ready    {fmt(timings.get('server_ready_s'), '{:.1f} s')}",
            f"  eval time        {fmt(timings.get('eval_s'), '{:.1f} s')}",
            f"  result           {result_file}"]
    return out
