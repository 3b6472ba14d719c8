"""Every generated server command, parsed by the framework's own argument parser.

The parsers run in the shared environments (vLLM's CPU build; SGLang installed for its parser only),
so this proves the GPU commands without a GPU.  `nox -s cli-parsers` runs these.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import expected_server_flags

from gsm8k_bench.serving import venvs
from gsm8k_bench.serving.frameworks import FRAMEWORKS, ServeTarget

pytestmark = pytest.mark.cli
HERE = Path(__file__).parent / "cli_parsers"
THINK_TEXT_PLUGIN = Path(__file__).parent / "vllm_plugins" / "think_text.py"


def parse_all(spec: venvs.VenvSpec, checker: str, commands: list[list[str]]) -> list[dict]:
    python = venvs.ensure_venv(spec)
    out = subprocess.run([str(python), str(HERE / checker)], input=json.dumps(commands),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout)
    assert len(results) == len(commands)
    return results


def commands_for(matrix, framework: str, python: str | None = None):
    combos = [c for c in matrix.combinations if c.framework.name == framework]
    assert combos
    return combos, [FRAMEWORKS[framework].server_command(
        c, ServeTarget(c.checkpoint, c.model.name, "127.0.0.1", c.framework.port, python)) for c in combos]


def expected_flags(combo) -> dict:
    """The values the parser must end up with: the literal table, and each parser's default when unset."""
    dtype, quantization, kv_cache = expected_server_flags(combo)
    return {"dtype": dtype, "quantization": quantization, "kv_cache_dtype": kv_cache or "auto"}


def test_vllm_parser_accepts_every_vllm_command(matrix):
    combos, serve = commands_for(matrix, "vllm")
    _, module = commands_for(matrix, "vllm", python="python3")
    bad = [["vllm", "serve", "m", "--quantization", "not-a-method"],
           ["vllm", "serve", "m", "--kv-cache-dtype", "fp9"],
           ["vllm", "serve", "m", "--tensor-parallel-size", "two"],
           ["vllm", "serve", "m", "--reasoning-parser", "gpt-oss"],  # SGLang's spelling
           ["vllm", "serve", "m", "--reasoning-parser", "think-text"]]  # registered only by its plugin
    plugin = ["vllm", "serve", "m", "--reasoning-parser-plugin", str(THINK_TEXT_PLUGIN), "--reasoning-parser",
              "think-text"]
    results = parse_all(venvs.VLLM_CPU, "check_vllm.py", serve + module + bad + [plugin])
    for combo, result in zip(combos * 2, results[: 2 * len(combos)], strict=True):
        assert result["ok"], (combo.name, result["error"])
        parsed = result["parsed"]
        assert parsed["model"] == combo.checkpoint
        assert parsed["tensor_parallel_size"] == combo.tp
        assert parsed["max_model_len"] == combo.model.max_model_len
        assert parsed["served_model_name"] == [combo.model.name]
        assert {k: parsed[k] for k in ("dtype", "quantization", "kv_cache_dtype")} == expected_flags(combo)
        assert parsed["reasoning_parser"] == combo.reasoning_parser
    assert {c.reasoning_parser for c in combos} >= {"openai_gptoss", "deepseek_r1"}
    # The checker itself can say no: proof that the passes above mean something.
    assert [r["ok"] for r in results[2 * len(combos):]] == [False, False, False, False, False, True]


def test_sglang_parser_accepts_every_sglang_command(matrix):
    combos, commands = commands_for(matrix, "sglang")
    # A value the matrix never uses, to prove the parser rejects what it does not know.
    wrong = replace(combos[0], precision=replace(combos[0].precision, per_framework={
        "sglang": {"online_quantization": "fp8_bogus"}}))
    bad = FRAMEWORKS["sglang"].server_command(wrong, ServeTarget("m", "s", "127.0.0.1", 30000))
    wrong_parser = [*commands[0], "--reasoning-parser", "deepseek_r1"]  # vLLM's spelling
    results = parse_all(venvs.SGLANG_CLI, "check_sglang.py", [*commands, wrong_parser, bad])
    for combo, result in zip(combos, results[:-2], strict=True):
        assert result["ok"], (combo.name, result["error"])
        parsed = result["parsed"]
        assert parsed["model_path"] == combo.checkpoint
        assert parsed["tp_size"] == combo.tp
        assert parsed["context_length"] == combo.model.max_model_len
        assert parsed["served_model_name"] == combo.model.name
        assert {k: parsed[k] for k in ("dtype", "quantization", "kv_cache_dtype")} == expected_flags(combo)
        assert parsed["reasoning_parser"] == combo.reasoning_parser
    assert {c.reasoning_parser for c in combos} >= {"gpt-oss", "deepseek-r1"}
    assert not results[-2]["ok"] and "deepseek_r1" in results[-2]["error"]
    assert not results[-1]["ok"] and "fp8_bogus" in results[-1]["error"]


def test_progress_reads_sglangs_own_metrics(tmp_path):
    """The names and labels the live progress reads, rendered by SGLang's own metric collectors."""
    from gsm8k_bench.evaluation import server_metrics

    python = venvs.ensure_venv(venvs.SGLANG_CLI)
    (tmp_path / "config.json").write_text(json.dumps({  # SGLang reads the model's config, no weights
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 4, "vocab_size": 1000,
        "max_position_embeddings": 2048, "torch_dtype": "bfloat16"}))
    events = {"running": 5, "running_by": {"0": 3, "1": 2}, "queued": 4, "queued_by": {"0": 4},
              "decode_tokens": 40, "finished": 2, "generation_tokens": 30}
    out = subprocess.run([str(python), str(HERE / "sglang_metrics.py"), str(tmp_path)], input=json.dumps(events),
                         capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    samples = server_metrics.parse(out.stdout)
    # Totals only: the per-priority series split them and are not counted twice.
    assert server_metrics.counts("sglang", samples) == server_metrics.Counts(
        finished=2, running=5, waiting=4, step_tokens=40)
    names = server_metrics.NAMES["sglang"]
    assert sum(v for n, _, v in samples if n == names.generation_tokens) == 60
