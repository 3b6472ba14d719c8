"""One warm CPU-default server and lm-eval runs against it, as a session runs them: for the benchmarks
and the real-stack tests that compare runs on the same server."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from gsm8k_bench.core.errors import EvalError
from gsm8k_bench.evaluation import harness
from gsm8k_bench.matrix.types import Matrix
from gsm8k_bench.serving import procs, venvs
from gsm8k_bench.serving.launchers import reserve_port, wait_ready
from gsm8k_bench.serving.launchers.process import ProcessServer, process_server
from gsm8k_bench.session.commands import CPU_DEFAULT
from gsm8k_bench.session.options import parse_session_args
from gsm8k_bench.session.plan import HOST, Plan, host_facts, plan_session
from gsm8k_bench.session.run import prepare_environments, prepare_model

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.11

# The line lm_eval_client.py prints once every request is built and it waits for the go file.
WAITING = "waiting for the go file"


class SettingsChange(TypedDict, total=False):
    """The session's evaluation settings a warm server's lm-eval runs may change."""

    protocol: str
    concurrency: int
    limit: int | None
    num_fewshot: int
    max_gen_toks: int


@dataclass(frozen=True)
class WarmServer:
    plan: Plan
    task: str
    server: ProcessServer

    def lm_eval_argv(self, output_dir: Path, **settings: Unpack[SettingsChange]) -> list[str]:
        """The session's lm-eval command with some settings changed (concurrency, protocol, limit, ...)."""
        plan = self.plan
        return harness.lm_eval_command(plan.lm_eval_python, replace(plan.settings, **settings),
                                        served_name=plan.served_name, base_url=plan.base_url,
                                        output_dir=output_dir, task=self.task, include_path=plan.task_dir)

    def gated_eval(self, argv: list[str], work: Path, before_go: Callable[[], None] = lambda: None) -> float:
        """Run lm-eval as a session does: started ahead with a go file, released once it has built every
        request (and `before_go` ran); returns the seconds from the go to its exit."""
        go, log = work / "go", work / "lm-eval.log"
        work.mkdir(parents=True)
        proc = procs.start([*argv, "--start-when", str(go)], log,
                           harness.lm_eval_environment(self.plan.dataset_dir, os.environ))
        try:
            while WAITING not in log.read_text():
                if proc.poll() is not None:
                    raise EvalError(f"lm-eval exited with code {proc.returncode} before its go", procs.tail(log))
                time.sleep(0.05)
            before_go()
            start = time.monotonic()
            go.touch()
            if proc.wait() != 0:
                raise EvalError(f"lm-eval exited with code {proc.returncode}", procs.tail(log))
            return time.monotonic() - start
        finally:
            procs.stop(proc)


@contextmanager
def warm_server(matrix: Matrix, argv: list[str], work: Path,
                log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> Iterator[WarmServer]:
    """The CPU default's server, ready, with its lm-eval task written; session arguments in `argv`."""
    combo = matrix.get(CPU_DEFAULT)
    options = parse_session_args(combo.name, ["--results-dir", str(work), *argv])
    claim = reserve_port(HOST, combo.framework.port)  # never one another run on this machine holds
    plan = plan_session(combo, options, matrix.defaults, host_facts(combo, options), port=claim.port)
    prepare_environments(plan, log)
    prepare_model(plan)
    task = harness.write_task(plan.dataset_dir, plan.task_dir,
                               harness.stock_task_file(venvs.venv_dir(venvs.LM_EVAL)))
    try:
        with process_server(plan.server_argv, base_url=plan.base_url, env={**os.environ, **plan.server_env},
                            log_path=work / "server.log") as server:
            wait_ready(server, plan.served_name, plan.start_timeout_s, log)
            yield WarmServer(plan, task, server)
    finally:
        claim.release()
