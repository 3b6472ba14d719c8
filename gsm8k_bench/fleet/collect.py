"""After a session ran elsewhere (a Slurm job, a packed subprocess): its own JSON, or one saying why not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gsm8k_bench.core import results
from gsm8k_bench.core.session_result import Config, Timings
from gsm8k_bench.core.stubs import write_stub
from gsm8k_bench.matrix.types import Combination
from gsm8k_bench.serving import procs


def session_document(combo: Combination, results_dir: Path, since: float, ended_ok: bool, why: str,
                     log: Path, wall_s: float | None, **extra: Any) -> dict[str, Any]:
    """The JSON the session wrote after `since` (epoch seconds), with `extra` added; when the runner ended
    badly it is failed and names `why`.  No fresh JSON: a failed one naming `why` and the log's tail."""
    path = results.result_path(results_dir, combo.name)
    if path.is_file() and path.stat().st_mtime >= since:
        document = {**results.read(path), **extra}
        if not ended_ok:
            if document["status"] == "passed":
                document["status"] = "failed"  # it scored, but what ran it still ended badly
            error = document.get("error") or {"message": "", "log_tail": ""}
            document["error"] = {**error, "message": f"{error['message']} ({why})".strip()}
        results.write_atomic(path, document)
        return document
    write_stub(combo.name, results_dir, "failed", f"{why}, before the session wrote its JSON (log: {log})",
               procs.tail(log), config=Config(tp=combo.tp, vendor=combo.runner.vendor, gpus=None),
               timings=Timings(total_s=wall_s), **extra)
    return results.read(path)
