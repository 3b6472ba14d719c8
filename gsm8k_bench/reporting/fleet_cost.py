"""Fleet cost: GPU-hours per session and per run (wall time x GPUs held), and the share of it spent
before the first request (environments, model, server start: load, compile, graph capture)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

# The phases before lm-eval sends its first request.
BEFORE_FIRST_REQUEST = ("env_setup_s", "model_prep_s", "server_ready_s")


class SessionCost(TypedDict):
    gpus: int
    wall_s: float | None
    gpu_hours: float | None
    before_first_request_s: float | None
    before_first_request_share: float | None


class RunCost(TypedDict):
    sessions: int
    gpu_hours: float
    before_first_request_gpu_hours: float
    before_first_request_share: float | None
    wall_s: float
    before_first_request_wall_share: float | None


def gpus_held(document: Mapping[str, Any]) -> int:
    config = document.get("config") or {}
    if config.get("gpus"):
        return len(config["gpus"]["ids"])
    return 0 if config.get("vendor", "cpu") == "cpu" else int(config.get("tp") or 0)


def session_cost(document: Mapping[str, Any]) -> SessionCost:
    timings = document.get("timings") or {}
    wall = timings.get("total_s")
    before = sum(timings.get(phase) or 0.0 for phase in BEFORE_FIRST_REQUEST)
    gpus = gpus_held(document)
    return {
        "gpus": gpus,
        "wall_s": wall,
        "gpu_hours": wall * gpus / 3600 if wall is not None else None,
        "before_first_request_s": before if "server_ready_s" in timings else None,
        "before_first_request_share": before / wall if wall and "server_ready_s" in timings else None,
    }


def run_cost(documents: Iterable[Mapping[str, Any]]) -> RunCost:
    costs = [session_cost(d) for d in documents]
    gpu_hours = sum(c["gpu_hours"] or 0.0 for c in costs)
    before = sum((c["before_first_request_s"] or 0.0) * c["gpus"] / 3600 for c in costs)
    # Shares only over sessions whose server started (a session that died earlier has no such phase).
    started_gpu_hours = sum(c["gpu_hours"] or 0.0 for c in costs if c["before_first_request_s"] is not None)
    wall = sum(c["wall_s"] or 0.0 for c in costs)
    started = [(before_s, wall_s) for c in costs
               if (before_s := c["before_first_request_s"]) is not None and (wall_s := c["wall_s"])]
    before_wall = sum(before_s for before_s, _ in started)
    started_wall = sum(wall_s for _, wall_s in started)
    return {"sessions": len(costs), "gpu_hours": gpu_hours, "before_first_request_gpu_hours": before,
            "before_first_request_share": before / started_gpu_hours if started_gpu_hours else None,
            "wall_s": wall, "before_first_request_wall_share": before_wall / started_wall if started_wall else None}


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def summary_lines(documents: Sequence[Mapping[str, Any]], elapsed_s: float) -> list[str]:
    """What `nox -s slurm` and `nox -s pack` print at the end."""
    lines = [f"{'session':<52} {'status':<7} {'GPUs':>4} {'wall (s)':>9} {'GPU-h':>7} {'pre-req':>7}"]
    for d in documents:
        c = session_cost(d)
        wall = "–" if c["wall_s"] is None else f"{c['wall_s']:.0f}"
        lines.append(f"{d['session']:<52} {d['status']:<7} {c['gpus']:>4} {wall:>9} "
                     f"{c['gpu_hours'] or 0:>7.3f} {_share(c['before_first_request_share']):>7}")
    total = run_cost(documents)
    lines.append(f"{total['sessions']} session(s) in {elapsed_s:.0f} s; one by one they took {total['wall_s']:.0f} s; "
                 f"{total['gpu_hours']:.3f} GPU-hours, {_share(total['before_first_request_share'])} of them "
                 f"before the first request (wall: {_share(total['before_first_request_wall_share'])})")
    return lines


def markdown_section(documents: Sequence[Mapping[str, Any]], per_session: bool = True) -> str:
    """The report's fleet-cost section: per session (unless space is short), then the run."""
    total = run_cost(documents)
    lines = ["### Fleet cost", ""]
    if per_session:
        lines += ["| session | GPUs | wall (s) | GPU-hours | before first request |", "|---|---|---|---|---|"]
    for d in documents if per_session else ():
        c = session_cost(d)
        wall = "–" if c["wall_s"] is None else f"{c['wall_s']:.0f}"
        lines.append(f"| `{d['session']}` | {c['gpus']} | {wall} | {c['gpu_hours'] or 0:.3f} | "
                     f"{_share(c['before_first_request_share'])} |")
    lines += ["", f"Run: {total['gpu_hours']:.3f} GPU-hours over {total['sessions']} session(s), "
              f"{_share(total['before_first_request_share'])} of them before the first request "
              f"(by wall time: {_share(total['before_first_request_wall_share'])})."]
    return "\n".join(lines) + "\n"
