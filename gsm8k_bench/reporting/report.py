"""`nox -s report -- [RESULTS_DIR] [OUT_DIR] [--questions PATTERN ...] [--dispatched NAMES]`: every session
JSON -> report.md, report.png, a forest plot of sibling deltas per model, report.html and the step summary
(OUT_DIR defaults to RESULTS_DIR).  Each leads with the matrix overview (overview.py), against the checkout's
matrix.yaml (or GSM8K_MATRIX) for the sessions not run -- of those a workflow dispatch selected, with
--dispatched.

Every file loads through the result's typed model (session_result.py); files that are not session JSONs,
or do not fit the model, are skipped with a warning that names them (and the keys that do not fit).  The plot needs
matplotlib, which the report session installs; the Markdown needs nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gsm8k_bench.core import folder_reader, results
from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.core.markdown import escaped
from gsm8k_bench.matrix.loader import load_matrix
from gsm8k_bench.matrix.types import Matrix
from gsm8k_bench.reporting import fleet_cost, html_page, overview
from gsm8k_bench.serving import venvs
from gsm8k_bench.verdicts import gate, run_comparison, siblings

MAX_SUMMARY_BYTES = 1024 * 1024
COLUMNS = ("session", "status", "strict-match", "flexible-extract", "n", "baseline", "verdict",
           "output tok/s", "req/s", "latency p50/p90 (s)", "ready (s)", "eval (s)", "total (s)")


def load_results(results_dir: Path, warn: Callable[[str], None]) -> list[dict[str, Any]]:
    """One session JSON per session (folder_reader.read_folder); every file set aside is a warning."""
    if not results_dir.is_dir():
        raise BenchError(f"{results_dir}: no such results directory (run a session first, or name the "
                         "folder: nox -s report -- DIR)")
    folder = folder_reader.read_folder(results_dir)
    for path, why in folder.skipped:
        warn(f"skipping {path}: {why}")
    for line in folder.superseded:
        warn(line)
    if not folder.documents:
        raise BenchError(f"{results_dir}: no session JSON found (files named <session>.json)")
    return [document for _, document in folder.documents]


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
    attempt = folder_reader.attempt(doc)
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
        session, *cells = row(doc)
        line = "| " + " | ".join([session, *map(escaped, cells)]) + " |"
        if limit_bytes and size + len(line.encode()) + 200 > limit_bytes:
            lines.append(f"| … {len(documents) - index} more sessions: see the artifacts |" +
                         " |" * (len(COLUMNS) - 1))
            break
        lines.append(line)
        size += len(line.encode()) + 1
    failed = [d for d in documents if d["status"] != "passed"]
    notes = [f"- `{d['session']}`: {d['status']}: {escaped((d.get('error') or {}).get('message', ''))}" for d in failed]
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


def matrix_file() -> Path:
    """The matrix the sessions came from: GSM8K_MATRIX, else the checkout's matrix.yaml (as noxfile.py)."""
    return Path(os.environ.get("GSM8K_MATRIX") or venvs.REPO_ROOT / "matrix.yaml")


def write_report(results_dir: Path, out_dir: Path, warn: Callable[[str], None] = print,
                 matrix: Matrix | None = None, questions_first: Sequence[str] = (),
                 dispatched: Sequence[str] | None = None) -> dict[str, Path]:
    """Every output; `matrix` (when given) adds the sessions it lists that have no result as not run, or
    only those of them in `dispatched` (a workflow dispatch's sessions) when that is given."""
    documents = load_results(results_dir, warn)
    results.output_folder(out_dir, "OUT_DIR")
    paths = {"markdown": out_dir / "report.md", "summary": out_dir / "summary.md", "plot": out_dir / "report.png"}
    settings = run_comparison.gate_settings()
    deltas = siblings.deltas(documents, settings)
    view = overview.build(documents, deltas, matrix, dispatched)
    paths["markdown"].write_text(overview.markdown(view) + "\n" + markdown(documents) + siblings.markdown(deltas))
    paths["summary"].write_text(overview.markdown(view, overview.MAX_SUMMARY_ATTENTION) + "\n"
                                + markdown(documents, MAX_SUMMARY_BYTES // 2) + siblings.markdown(deltas, True))
    try:
        plot(documents, paths["plot"])
    except BenchError as exc:  # every session failed: the tables above still say so
        warn(f"no plot: {exc}")
        del paths["plot"]
    paths.update(siblings.forest_plots(deltas, out_dir, settings.tolerance))
    paths["html"] = html_page.write(documents, deltas, [p for p in paths.values() if p.suffix == ".png"],
                                      out_dir / "report.html", view, questions_first,
                                      history_section([d["session"] for d in documents], settings, warn))
    return paths


def history_section(sessions: Sequence[str], settings: gate.GateSettings, warn: Callable[[str], None]) -> str | None:
    """report.html's history section when a history is configured (docs/history.md).  A history that
    cannot be read is a warning: the report is about this folder's runs and stands without it."""
    try:
        from gsm8k_bench.reporting.history import report_section
    except ImportError as exc:  # the `history` extra is not installed
        if os.environ.get("GSM8K_HISTORY_URL"):
            warn(f"no history section: {exc} (pip install -e '.[history]')")
        return None
    try:
        return report_section.section(sessions, settings)
    except BenchError as exc:
        warn(f"no history section: {results.mask(str(exc))}")
        return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nox -s report --", description="report.md, report.html, the plots and "
                                     "the step summary (summary.md) from a folder of session JSONs")
    parser.add_argument("results_dir", nargs="?", type=Path, default=Path("results"), help="default: results")
    parser.add_argument("out_dir", nargs="?", type=Path, help="default: RESULTS_DIR")
    parser.add_argument("--questions", action="append", default=[], metavar="PATTERN",
                        help="sessions (names or fnmatch patterns) whose answers report.html embeds first")
    parser.add_argument("--dispatched", metavar="NAMES",
                        help="the sessions a workflow dispatch ran (space-separated): only those without a result "
                        "are counted as not run (default: every session of matrix.yaml)")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.results_dir, args.out_dir or args.results_dir,
                             lambda message: print(f"warning: {message}", file=sys.stderr),
                             load_matrix(matrix_file()), args.questions,
                             None if args.dispatched is None else args.dispatched.split())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
