"""`nox -s pack -- [-k EXPR] [-t TAG ...] --gpus 0-7`: the selected sessions at once on one node.

Placement is pure (`place`): the waiting sessions by tp, largest first, each on the lowest free
contiguous GPUs (else the lowest free ones); a session that does not fit waits while smaller ones fill
the gaps.  The runner starts each placed session as its own `nox -s <session> -- --gpus ...`, starts the
next as soon as GPUs free up, lets a failure end only its own session, and stops them all on Ctrl-C.
Each child gets a run id of the pack's choosing, so the pack collects the JSON its own child wrote; a
session another pack runs into the same folder is refused before its log is touched.  The sessions claim
their GPUs host-wide themselves (serving/gpus.py), so overlapping packs never share a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.core.stubs import stub_document
from gsm8k_bench.fleet import collect
from gsm8k_bench.matrix.selection import selected, selection_parser
from gsm8k_bench.matrix.types import Combination, Matrix
from gsm8k_bench.reporting import fleet_cost
from gsm8k_bench.serving import gpus, ownership, procs, venvs

POLL_S = 1.0


@dataclass(frozen=True)
class Need:
    name: str
    gpus: int  # 0 for cpu sessions


def order(needs: Sequence[Need]) -> list[Need]:
    """Largest first; ties keep the selection's order."""
    return sorted(needs, key=lambda n: -n.gpus)


def pick(free: Sequence[int], count: int) -> tuple[int, ...] | None:
    """The lowest run of `count` consecutive free ids, else the lowest `count` free ids, else None."""
    free = sorted(free)
    if count == 0:
        return ()  # a cpu session
    if count > len(free):
        return None
    for start in range(len(free) - count + 1):
        run = free[start:start + count]
        if run[-1] - run[0] == count - 1:
            return tuple(run)
    return tuple(free[:count])


def place(waiting: Sequence[Need], free: Sequence[int]) -> list[tuple[Need, tuple[int, ...]]]:
    """Pure: which waiting sessions start now, on which GPUs (waiting is already in order)."""
    free = list(free)
    started = []
    for need in waiting:
        ids = pick(free, need.gpus)
        if ids is not None:
            started.append((need, ids))
            free = [i for i in free if i not in ids]
    return started


def check_fits(needs: Sequence[Need], node_gpus: Sequence[int]) -> None:
    too_big = [n for n in needs if n.gpus > len(node_gpus)]
    if too_big:
        raise BenchError(f"{too_big[0].name} needs {too_big[0].gpus} GPUs but --gpus gives {len(node_gpus)}")


# --------------------------------------------------------------------------- running


@dataclass
class Running:
    combo: Combination
    ids: tuple[int, ...]
    proc: subprocess.Popen[bytes]
    log: Path
    run_id: str
    log_lock: ownership.ResultsLock  # this pack's, while the session runs: another pack's is refused
    started_at: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)


def session_argv(combo: Combination, ids: tuple[int, ...], results_dir: Path, extra: Sequence[str]) -> list[str]:
    argv = [sys.executable, "-m", "nox", "-f", str(venvs.REPO_ROOT / "noxfile.py"), "-s", combo.name, "--",
            "--results-dir", str(results_dir)]
    if ids:
        argv += ["--gpus", ",".join(map(str, ids))]
    return [*argv, *extra]


class Table:
    """A live table on a terminal; plain event lines otherwise (CI logs)."""

    def __init__(self, log: Callable[[str], None], out: TextIO = sys.stdout) -> None:
        self.log, self.out, self.live = log, out, out.isatty()

    def event(self, text: str) -> None:
        if not self.live:
            self.log(text)

    def draw(self, running: Sequence[Running], waiting: Sequence[Need], done: Sequence[Mapping[str, Any]]) -> None:
        if not self.live:
            return
        now = time.monotonic()
        rows = [f"{'session':<52} {'GPUs':<12} {'state':<8} {'s':>6}"]
        rows += [f"{r.combo.name:<52} {','.join(map(str, r.ids)) or '-':<12} {'running':<8} "
                 f"{now - r.started_mono:>6.0f}" for r in running]
        rows += [f"{n.name:<52} {'-':<12} {'waiting':<8} {'':>6}" for n in waiting]
        rows += [f"{d['session']:<52} {'':<12} {d['status']:<8} {'':>6}" for d in done]
        self.out.write("\x1b[H\x1b[2J" + "\n".join(rows) + "\n")
        self.out.flush()


def run_packed(combos: Sequence[Combination], node_gpus: Sequence[int], results_dir: Path,
               command: Callable[[Combination, tuple[int, ...]], list[str]], table: Table) -> list[dict[str, Any]]:
    """Start, watch and collect the sessions; Ctrl-C (or SIGTERM) stops every running one."""
    by_name = {c.name: c for c in combos}
    needs = order([Need(c.name, 0 if c.runner.vendor == "cpu" else c.tp) for c in combos])
    check_fits(needs, node_gpus)
    waiting = list(needs)
    running: list[Running] = []
    done: list[dict[str, Any]] = []
    logs = results_dir / "pack"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        while waiting or running:
            busy = {i for r in running for i in r.ids}
            for need, ids in place(waiting, [i for i in node_gpus if i not in busy]):
                waiting.remove(need)
                combo = by_name[need.name]
                try:
                    log_lock = ownership.ResultsLock(logs, combo.name)
                except ownership.SessionBusy as busy:
                    done.append(stub_document(combo.name, "failed", f"not started: {busy}", pack={"gpus": []}))
                    table.event(f"refused {combo.name}: {busy}")
                    continue
                log, run_id = logs / f"{combo.name}.log", ownership.new_run_id()
                log.unlink(missing_ok=True)
                proc = procs.start(command(combo, ids), log, {**os.environ, ownership.RUN_ID_VARIABLE: run_id})
                running.append(Running(combo, ids, proc, log, run_id, log_lock))
                table.event(f"start  {combo.name} on GPUs {','.join(map(str, ids)) or '-'}")
            for r in [r for r in running if r.proc.poll() is not None]:
                running.remove(r)
                done.append(_collect(r, results_dir))
                table.event(f"end    {r.combo.name}: {done[-1]['status']} "
                            f"({time.monotonic() - r.started_mono:.0f} s, exit code {r.proc.returncode})")
            table.draw(running, waiting, done)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        table.event(f"interrupted: stopping {len(running)} session(s)")
        with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            list(pool.map(procs.stop, [r.proc for r in running]))
        done += [_collect(r, results_dir) for r in running]
        raise
    return done


def _collect(r: Running, results_dir: Path) -> dict[str, Any]:
    code = r.proc.returncode
    try:
        return collect.session_document(r.combo, results_dir, r.started_at, code == 0,
                                        f"nox exited with code {code}", r.log, time.monotonic() - r.started_mono,
                                        run_id=r.run_id, pack={"gpus": list(r.ids), "log": str(r.log)})
    finally:
        r.log_lock.release()



def run(matrix: Matrix, argv: list[str], log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    parser = selection_parser("nox -s pack --", "Run the selected sessions concurrently on this node's GPUs; "
                              "arguments not listed here go to every session (e.g. --limit 5).")
    parser.add_argument("--gpus", required=True, help="the node's GPUs to pack onto, e.g. 0-7")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    args, rest = parser.parse_known_args(argv)
    combos = selected(matrix, args)
    node_gpus = gpus.parse_ids(args.gpus, "--gpus")
    results_dir = args.results_dir.expanduser().resolve()
    extra = ["--gate-family", str(len(combos)), *rest]  # one family for the paired gate; a later one wins
    started = time.monotonic()
    with procs.interrupts_unwind_once():  # a cancelled CI job stops the sessions like Ctrl-C
        documents = run_packed(combos, node_gpus, results_dir,
                               lambda combo, ids: session_argv(combo, ids, results_dir, extra), Table(log))
    for line in fleet_cost.summary_lines(documents, time.monotonic() - started):
        log(line)
    failed = [d["session"] for d in documents if d["status"] != "passed"]
    if failed:
        raise BenchError(f"{len(failed)} of {len(documents)} session(s) did not pass: {', '.join(failed)}")
    return documents
