"""After a session ran elsewhere (a Slurm job, a packed subprocess): its own JSON, or one saying why not.
Another run's JSON is never rewritten: a JSON is this session's when it records the run id the runner
gave it (a pack), else when it was written after the runner started it (Slurm, which chooses no id)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gsm8k_bench.core import results
from gsm8k_bench.core.session_result import Config, Timings
from gsm8k_bench.core.stubs import stub_document
from gsm8k_bench.matrix.types import Combination
from gsm8k_bench.serving import ownership, procs


def _is_its_own(path: Path, since: float, run_id: str | None) -> bool:
    if not path.is_file():
        return False
    if run_id is None:
        return path.stat().st_mtime >= since
    return (results.read(path).get("environment") or {}).get("run_id") == run_id


def _another_run_holds(path: Path, since: float, session: str) -> str | None:
    """Why the JSON at `path` is not this run's to replace: another run wrote it while this one ran, or
    another run of the session is writing into the folder now.  None: a stale JSON, or none."""
    if path.is_file() and path.stat().st_mtime >= since:
        return f"{path} was written by another run meanwhile and is left as it is"
    try:
        ownership.ResultsLock(path.parent, session).release()
    except ownership.SessionBusy as busy:
        return f"{busy}; its JSON is left as it is"
    return None


def session_document(combo: Combination, results_dir: Path, since: float, ended_ok: bool, why: str,
                     log: Path, wall_s: float | None, run_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON the session wrote (`run_id`: the id the runner gave it; None: any written after `since`,
    epoch seconds), with `extra` added; when the runner ended badly it is failed and names `why`.  None of
    its own: a failed one naming `why` and the log's tail, written unless another run's JSON is there."""
    path = results.result_path(results_dir, combo.name)
    if _is_its_own(path, since, run_id):
        document = {**results.read(path), **extra}
        if not ended_ok:
            if document["status"] == "passed":
                document["status"] = "failed"  # it scored, but what ran it still ended badly
            error = document.get("error") or {"message": "", "log_tail": ""}
            document["error"] = {**error, "message": f"{error['message']} ({why})".strip()}
        results.write_atomic(path, document)
        return document
    message = f"{why}, before the session wrote its JSON (log: {log})"
    held = _another_run_holds(path, since, combo.name) if run_id else None
    stub = stub_document(combo.name, "failed", f"{message}; {held}" if held else message, procs.tail(log),
                         config=Config(tp=combo.tp, vendor=combo.runner.vendor, gpus=None),
                         timings=Timings(total_s=wall_s), **extra)
    if not held:
        results.write_atomic(path, stub)
    masked: dict[str, Any] = results.mask_tree(stub)  # as written: the log's tail may hold a secret
    return masked
