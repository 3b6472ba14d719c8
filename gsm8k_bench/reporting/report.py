"""`nox -s report -- [RESULTS_DIR] [OUT_DIR]`: every session JSON -> report.md, report.png, a forest plot
of sibling deltas per model, report.html and the step summary (OUT_DIR defaults to RESULTS_DIR).

Every file loads through the result's typed model (session_result.py); files that are not session JSONs,
or do not fit the model, are skipped with a warning that names them (and the keys that do not fit).  The plot needs
matplotlib, which the report session installs; the Markdown needs nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.reporting import fleet_cost, html_page
from gsm8k_bench.verdicts import run_comparison, siblings

MAX_SUMMARY_BYTES = 1024 * 1024
COLUMNS = ("session", "status", "strict-match", "flexible-extract", "n", "baseline", "verdict",
           "output tok/s", "req/s", "latency p50/p90 (s)", "ready (s)", "eval (s)", "total (s)")


def session_json_paths(results_dir: Path) -> list[Path]:
    """The JSON files of a results folder that can be session JSONs: `<session>.json` at its top, or one
    folder down (downloaded artifacts: `<artifact>/<session>.json`); lm-eval's own files live deeper."""
    return [path for path in sorted(results_dir.rglob("*.json"))
            if path.parent == results_dir or path.parent.parent == results_dir]


def load_results(results_dir: Path, warn: Callable[[str], None]) -> list[dict[str, Any]]:
    if not results_dir.is_dir():
        raise BenchError(f"{results_dir}: no such results directory (run a session first, or name the "
                         "folder: nox -s report -- DIR)")
    documents = []
    for path in session_json_paths(results_dir):
        try:
            document = results.read(path)
        except results.InvalidResult as exc:
            warn(f"skipping {path}: no 'session' name or no 'status' (one of {', '.join(results.STATUSES)})"
                 if {"session", "status"} & set(exc.keys) else f"skipping {exc}")
            continue
        except (ValueError, UnicodeDecodeError):  # json.JSONDecodeError is a ValueError
            warn(f"skipping {path}: not a session JSON")
            continue
        documents.append(document)
    if not documents:
        raise BenchError(f"{results_dir}: no session JSON found (files named <session>.json)")
    return sorted(newest_per_session(documents), key=lambda d: d["session"])


def _attempt(doc: Mapping[str, Any]) -> int | None:
    attempt = (doc.get("environment") or {}).get("ci_run_attempt")
    return attempt if isinstance(attempt, int) else None


def newest_per_session(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One document per session: the highest CI run attempt, then the latest end time (reruns of a
    workflow upload one artifact per attempt)."""
    newest: dict[str, dict[str, Any]] = {}
    for doc in documents:
        key = (_attempt(doc) or 0, str((doc.get("environment") or {}).get("ended_at") or ""))
        kept = newest.get(doc["session"])
        if kept is None or key > (_attempt(kept) or 0, str((kept.get("environment") or {}).get("ended_at") or "")):
            newest[doc["session"]] = doc
    return list(newest.values())


def fmt(value: Any, pattern: str = "{:.4f}") -> str:
    """A number in the pattern; anything else (lm-eval writes "N/A" for a stderr at n = 1) as it is."""
    if value is None:
        return "–"
    return pattern.format(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def row(doc: Mapping[str, Any]) -> list[str]:
    m, t = doc.get("metrics") or {}, doc.get("timings") or {}
    s, g = doc.get("server_metrics") or {}, doc.get("gate") or {}
    baseline = (g.get("baseline") or {}).get("accuracy", {}).get("strict_match")
    verdict = g.get("verdict", "–")
    attempt = _attempt(doc)
    return [
        f"`{doc['session']}`", doc["status"] + (f" (attempt {attempt})" if attempt else ""),
        f"{fmt(m.get('strict_match'))} ± {fmt(m.get('strict_match_stderr'))}",
        f"{fmt(m.get('flexible_extract'))} ± {fmt(m.get('flexible_extract_stderr'))}",
        fmt(m.get("n"), "{}"), fmt(baseline), verdict,
        fmt(s.get("output_tokens_per_s"), "{:.1f}"), fmt(s.get("requests_per_s"), "{:.2f}"),
        f"{fmt(s.get('latency_p50_s'), '{:.2f}')} / {fmt(s.get('latency_p90_s'), '{:.2f}')}",
        fmt(t.get("server_ready_s"), "{:.0f}"), fmt(t.get("eval_s"), "{:.0f}"), fmt(t.get("total_s"), "{:.0f}"),
    ]


def markdown(documents: Sequence[Mapping[str, Any]], limit_bytes: int | None = None) -> str:
    header = "## GSM8k results\n\n"
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    size = len(header) + sum(len(line.encode()) + 1 for line in lines)
    for index, doc in enumerate(documents):
        line = "| " + " | ".join(row(doc)) + " |"
        if limit_bytes and size + len(line.encode()) + 200 > limit_bytes:
            lines.append(f"| … {len(documents) - index} more sessions: see the artifacts |" +
                         " |" * (len(COLUMNS) - 1))
            break
        lines.append(line)
        size += len(line.encode()) + 1
    failed = [d for d in documents if d["status"] != "passed"]
    notes = [f"- `{d['session']}`: {d['status']}: {(d.get('error') or {}).get('message', '')}" for d in failed]
    text = header + "\n".join(lines) + "\n"
    if notes:
        text += "\n### Not passed\n\n" + "\n".join(notes)[: (limit_bytes or 10**9) // 4] + "\n"
    return text + "\n" + fleet_cost.markdown_section(list(documents), per_session=not limit_bytes)


def plot(documents: list[dict[str, Any]], path: Path) -> None:
    """Accuracy with error bars per combination, grouped by model, with each baseline marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [d for d in documents if isinstance(d.get("metrics"), dict)
              and all(isinstance(d["metrics"].get(k), int | float) for k in ("strict_match", "flexible_extract"))
              and isinstance((d.get("config") or {}).get("model"), str)]
    if not scored:
        raise BenchError("no session has metrics to plot")
    models = sorted({d["config"]["model"] for d in scored})
    fig, axes = plt.subplots(len(models), 1, figsize=(10, 1.2 + 0.45 * len(scored) + 0.6 * len(models)),
                             squeeze=False)
    for ax, model in zip(axes[:, 0], models, strict=True):
        group = [d for d in scored if d["config"]["model"] == model]
        labels = [d["session"].removeprefix(f"gsm8k-{model}-") for d in group]
        y = list(range(len(group)))
        for offset, (metric, color) in enumerate((("strict_match", "tab:blue"), ("flexible_extract", "tab:orange"))):
            ax.errorbar([d["metrics"][metric] for d in group], [v + 0.15 * offset for v in y],
                        xerr=[_number(d["metrics"].get(f"{metric}_stderr")) for d in group], fmt="o", color=color,
                        capsize=3, label=metric.replace("_", "-"))
        for index, d in enumerate(group):
            baseline = ((d.get("gate") or {}).get("baseline") or {}).get("accuracy", {}).get("strict_match")
            if baseline is not None:
                ax.plot([baseline], [index], marker="|", markersize=18, color="black",
                        label="baseline (strict)" if index == 0 else None)
        ax.set_yticks(y, [f"{label} (n={d['metrics'].get('n')})" for label, d in zip(labels, group, strict=True)])
        ax.set_xlim(-0.02, 1.02)
        ax.set_title(model, loc="left")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    axes[-1, 0].set_xlabel("GSM8k accuracy (± stderr)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results_dir: Path, out_dir: Path, warn: Callable[[str], None] = print) -> dict[str, Path]:
    documents = load_results(results_dir, warn)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "report.md", "summary": out_dir / "summary.md", "plot": out_dir / "report.png"}
    settings = run_comparison.gate_settings()
    deltas = siblings.deltas(documents, settings)
    paths["markdown"].write_text(markdown(documents) + siblings.markdown(deltas))
    paths["summary"].write_text(markdown(documents, MAX_SUMMARY_BYTES // 2) + siblings.markdown(deltas, True))
    try:
        plot(documents, paths["plot"])
    except BenchError as exc:  # every session failed: the tables above still say so
        warn(f"no plot: {exc}")
        del paths["plot"]
    paths.update(siblings.forest_plots(deltas, out_dir, settings.tolerance))
    paths["html"] = html_page.write(documents, deltas, [p for p in paths.values() if p.suffix == ".png"],
                                      out_dir / "report.html")
    return paths


def main(argv: list[str]) -> int:
    results_dir = Path(argv[0]) if argv else Path("results")
    out_dir = Path(argv[1]) if len(argv) > 1 else results_dir
    try:
        paths = write_report(results_dir, out_dir, lambda message: print(f"warning: {message}", file=sys.stderr))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
