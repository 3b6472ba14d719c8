"""Slurm: the exact commands (sbatch, the batch script, enroot's import, pyxis's srun) as unit tests, then a
real one-node Slurm (ci/slurm-cluster.sh: munged, slurmctld, slurmd with eight GRES GPUs) running real jobs:
packing on disjoint GPUs, Ctrl-C, scancel of a running session, and the CPU default end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, require
from test_commands import plan_for
from test_integration import processes_writing_to, wait_for

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.fleet import slurm
from gsm8k_bench.matrix.loader import load_matrix
from gsm8k_bench.serving.launchers.pyxis import srun_argv

CPU_DEFAULT = "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1"


def options(tmp_path, container="pyxis", **kw):
    return slurm.SlurmOptions(partition="gpu", account=kw.get("account"), time=kw.get("time"), container=container,
                              results_dir=tmp_path / "results", squashfs_dir=Path("/shared/sqsh"), poll_s=1.0,
                              session_args=kw.get("session_args", ()))


# --------------------------------------------------------------------------- pure commands


@pytest.mark.parametrize(("image", "uri"), [
    ("vllm/vllm-openai:v0.32.0", "docker://vllm/vllm-openai:v0.32.0"),
    ("lmsysorg/sglang:v0.5.23-rocm720-mi35x", "docker://lmsysorg/sglang:v0.5.23-rocm720-mi35x"),
    ("nvcr.io/nvidia/pytorch:25.01-py3", "docker://nvcr.io#nvidia/pytorch:25.01-py3"),
    ("localhost:5000/bench/vllm:dev", "docker://localhost:5000#bench/vllm:dev"),
    ("ubuntu", "docker://ubuntu"),
])
def test_enroot_uri(image, uri):
    assert slurm.enroot_uri(image) == uri


def test_image_import_is_locked_and_reused_while_valid():
    sqsh = slurm.squashfs_path(Path("/shared/sqsh"), "vllm/vllm-openai:v0.32.0")
    assert sqsh == Path("/shared/sqsh/vllm+vllm-openai+v0.32.0.sqsh")
    assert slurm.import_command("vllm/vllm-openai:v0.32.0", sqsh) == [
        "flock", "/shared/sqsh/vllm+vllm-openai+v0.32.0.sqsh.lock", "bash", "-c",
        "unsquashfs -l /shared/sqsh/vllm+vllm-openai+v0.32.0.sqsh >/dev/null 2>&1 || "
        "{ rm -f /shared/sqsh/vllm+vllm-openai+v0.32.0.sqsh; enroot import -o "
        "/shared/sqsh/vllm+vllm-openai+v0.32.0.sqsh docker://vllm/vllm-openai:v0.32.0; }"]


def test_sbatch_asks_for_tp_gpus_and_names_the_job_after_the_session(matrix, tmp_path):
    combo = matrix.get("gsm8k-llama-3.3-70b-h100-vllm-fp8-tp4")
    opts = options(tmp_path, account="inference", time="2:00:00")
    argv = slurm.sbatch_argv(combo, opts, Path("/r/job.sh"), ROOT)
    assert argv == ["sbatch", "--parsable", f"--job-name={combo.name}", "--partition=gpu",
                    f"--output={tmp_path}/results/slurm/{combo.name}.log", f"--chdir={ROOT}", "--ntasks=1",
                    "--account=inference", "--time=2:00:00", "--gres=gpu:4", "/r/job.sh"]
    cpu = slurm.sbatch_argv(matrix.get(CPU_DEFAULT), options(tmp_path, "none"), Path("/j.sh"), ROOT)
    assert not [a for a in cpu if a.startswith(("--gres", "--account", "--time"))]


def test_pyxis_job_script_imports_then_becomes_the_session(matrix, tmp_path):
    combo = matrix.get("gsm8k-llama-3.3-70b-mi355x-sglang-fp16-tp8")
    script = slurm.job_script(combo, options(tmp_path, session_args=("--limit", "5")), "/py", Path("/r/noxfile.py"))
    lines = script.splitlines()
    sqsh = "/shared/sqsh/lmsysorg+sglang+v0.5.23-rocm720-mi35x.sqsh"
    assert lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in lines
    assert lines[3] == "mkdir -p /shared/sqsh"
    assert lines[4].startswith(f"flock {sqsh}.lock bash -c ")
    assert lines[5] == (f"exec /py -m nox -f /r/noxfile.py -s {combo.name} -- --results-dir {tmp_path}/results "
                        f"--launcher pyxis --image {sqsh} --limit 5")
    docker = slurm.job_script(combo, options(tmp_path, "docker"), "/py", Path("/r/noxfile.py"))
    assert "enroot" not in docker and docker.splitlines()[-1].endswith("--launcher docker")
    cpu = slurm.job_script(matrix.get(CPU_DEFAULT), options(tmp_path, "none"), "/py", Path("/n.py"))
    assert "--launcher" not in cpu  # the CPU default's own launcher: a process


def test_pyxis_srun_command(matrix):
    plan = plan_for(matrix, "gsm8k-llama-3.1-8b-h100-vllm-fp16-tp1", "--launcher", "pyxis",
                    "--image", "/shared/sqsh/vllm.sqsh", "--gpus", "3")
    argv = srun_argv(plan.container, Path("/cache/warm/vllm.sqsh"))
    hf_home = plan.container.mounts[0].source
    assert argv == ["srun", "--ntasks=1", "--overlap", "--export=ALL", "--container-image=/shared/sqsh/vllm.sqsh",
                    f"--container-mounts={hf_home}:/root/.cache/huggingface,"
                    "/cache/warm/vllm.sqsh:/root/.cache/gsm8k-bench-warm",
                    "--no-container-mount-home", "--container-remap-root", "--no-container-entrypoint",
                    "vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", *plan.server_argv[3:]]
    assert plan.container.environment["VLLM_CACHE_ROOT"] == "/root/.cache/gsm8k-bench-warm/vllm"
    assert plan.gpus.ids == (3,)


def test_sacct_lines_and_reasons():
    text = "12|gsm8k-a|COMPLETED|0:0|00:01:05\n12.batch|batch|COMPLETED|0:0|00:01:05\n" \
           "13|gsm8k-b|TIMEOUT|0:0|1-02:00:03\n14|gsm8k-c|FAILED|3:0|00:00:02\n15|gsm8k-d|CANCELLED by 0|0:15|05:00\n"
    records = slurm.parse_sacct(text)
    assert sorted(records) == ["12", "13", "14", "15"]
    assert records["12"]["elapsed_s"] == 65 and records["13"]["elapsed_s"] == 26 * 3600 + 3
    assert records["15"]["elapsed_s"] == 300
    assert slurm.reason(records["14"]) == "FAILED (exit code 3:0)"
    assert slurm.reason(records["15"]) == "CANCELLED by 0 (exit code 0:15)"
    assert slurm.reason(records["12"]) == "COMPLETED"


def test_bad_arguments_are_clear(matrix):
    with pytest.raises(BenchError, match="the following arguments are required: --partition"):
        slurm.parse_args(matrix, ["-k", "cpu"])
    with pytest.raises(BenchError, match="invalid choice: 'podman'"):
        slurm.parse_args(matrix, ["--partition", "p", "--container", "podman"])
    with pytest.raises(BenchError, match="GPUs come from each job's allocation"):
        slurm.parse_args(matrix, ["--partition", "p", "--gpus", "0"])
    with pytest.raises(BenchError, match="matches no session"):
        slurm.parse_args(matrix, ["--partition", "p", "-k", "nothing-like-this"])


def test_cluster_script_is_shellcheck_clean_and_checks_its_arguments():
    out = subprocess.run([shutil.which("shellcheck") or "shellcheck", str(ROOT / "ci/slurm-cluster.sh")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    usage = subprocess.run([str(ROOT / "ci/slurm-cluster.sh"), "start"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr


# --------------------------------------------------------------------------- a real Slurm


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The cluster .ci/run started (SLURM_CONF), else one of our own for this module."""
    require(all(shutil.which(t) for t in ("slurmctld", "slurmd", "munged", "sbatch")),
            "Slurm (apt-get install slurmctld slurmd munge)")
    if os.environ.get("SLURM_CONF"):
        yield os.environ["SLURM_CONF"]
        return
    directory = tmp_path_factory.mktemp("slurm")
    start = subprocess.run([str(ROOT / "ci/slurm-cluster.sh"), "start", str(directory)], capture_output=True,
                           text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    os.environ["SLURM_CONF"] = start.stdout.strip()
    try:
        yield os.environ["SLURM_CONF"]
    finally:
        subprocess.run([str(ROOT / "ci/slurm-cluster.sh"), "stop", str(directory)], timeout=120)
        del os.environ["SLURM_CONF"]


def queue() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True).stdout.split("\n")[:-1]


def nox_slurm(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nox", "-s", "slurm", "--", "--partition", "ci", "--poll", "1",
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **kw})




@pytest.mark.slurm
def test_two_tp2_jobs_and_a_tp4_job_run_at_once_on_disjoint_gpus(cluster, tmp_path):
    # The matrix has no tp=2 session: a copy that adds one; the jobs read it through GSM8K_MATRIX.
    text = (ROOT / "matrix.yaml").read_text()
    marker = "    tp: [1]\n    checkpoints:\n      fp8: RedHatAI"
    assert marker in text
    variant = tmp_path / "matrix.yaml"
    variant.write_text(text.replace(marker, marker.replace("[1]", "[1, 2]")))
    (tmp_path / "baselines.yaml").write_text((ROOT / "baselines.yaml").read_text())
    matrix = load_matrix(variant)
    names = ("gsm8k-llama-3.1-8b-h100-vllm-fp16-tp2", "gsm8k-llama-3.1-8b-h100-sglang-fp16-tp2",
             "gsm8k-llama-3.3-70b-h100-vllm-fp16-tp4")
    combos = [matrix.get(n) for n in names]
    # A cheap real job: each session plans itself from its allocation (--dry-run) and records the
    # visible-devices variables Slurm set.
    opts = slurm.SlurmOptions("ci", None, None, "docker", tmp_path / "results", tmp_path / "sqsh", 1.0, ("--dry-run",))
    os.environ["GSM8K_MATRIX"] = str(variant)
    try:
        jobs = slurm.submit(combos, opts, print)
        slurm.wait(jobs, opts, print)
    finally:
        del os.environ["GSM8K_MATRIX"]
    planned = {}
    for job in jobs:
        log = job.log.read_text()
        line = next(x for x in log.splitlines() if x.strip().startswith("gpus:"))
        planned[job.combo.tp, job.combo.framework.name] = line.split()[1]
        assert "(from SLURM_JOB_GPUS)" in line, log
        assert "gpu_ids: [" in log
    ids = [set(v.split(",")) for v in planned.values()]
    # Slurm hands out the lowest free GPUs: disjoint sets covering all eight can only come from jobs
    # that held their GPUs at the same time.
    assert sorted(map(len, ids)) == [2, 2, 4] and set.union(*ids) == set(map(str, range(8))), planned
    assert not [line for line in queue() if "gsm8k" in line]


@pytest.mark.slurm
def test_ctrl_c_cancels_every_submitted_job_and_each_gets_a_failed_json(cluster, tmp_path):
    blocker = subprocess.run(["sbatch", "--parsable", "--gres=gpu:8", "-J", "blocker", "-o", "/dev/null",
                              "--wrap", "sleep 120"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        proc = nox_slurm("-s", "gsm8k-llama-3.3-70b-h100-vllm-fp16-tp8", "--container", "docker",
                         "--results-dir", str(tmp_path), "--dry-run")
        lines = []
        wait_for(lambda: lines.append(proc.stdout.readline()) or "PENDING" in lines[-1], 60, "the job to be pending")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        subprocess.run(["scancel", blocker], check=False)
    assert proc.returncode != 0 and "cancelling 1 job(s)" in out, out
    document = json.loads((tmp_path / "gsm8k-llama-3.3-70b-h100-vllm-fp16-tp8.json").read_text())
    assert document["status"] == "failed" and "CANCELLED" in document["error"]["message"]
    assert document["slurm"]["state"].startswith("CANCELLED")
    wait_for(lambda: not [line for line in queue() if "gsm8k" in line or "blocker" in line], 30, "an empty queue")


@pytest.mark.slurm
@pytest.mark.integration
def test_scancel_of_a_running_session_leaves_a_failed_json_and_nothing_running(cluster, tmp_path):
    require(Path(os.environ.get("GSM8K_DATASET_DIR", "/nonexistent"), "test.jsonl").is_file(), "GSM8K_DATASET_DIR")
    proc = nox_slurm("-s", CPU_DEFAULT, "--container", "none", "--results-dir", str(tmp_path), "--limit", "5")
    server_log = tmp_path / CPU_DEFAULT / "server.log"
    wait_for(lambda: processes_writing_to(server_log), 300, "the server to start inside the job")
    job = next(line.split()[0] for line in queue() if CPU_DEFAULT in line)
    subprocess.run(["scancel", job], check=True)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    document = json.loads((tmp_path / f"{CPU_DEFAULT}.json").read_text())
    assert document["status"] == "failed", document["error"]
    assert f"Slurm job {job} ended CANCELLED" in document["error"]["message"]
    wait_for(lambda: not processes_writing_to(server_log), 30, "no server process")
    assert not [line for line in queue() if CPU_DEFAULT in line]


@pytest.mark.slurm
@pytest.mark.integration
def test_the_cpu_default_end_to_end_through_slurm_and_its_report(cluster, tmp_path):
    require(Path(os.environ.get("GSM8K_DATASET_DIR", "/nonexistent"), "test.jsonl").is_file(), "GSM8K_DATASET_DIR")
    proc = nox_slurm("-s", CPU_DEFAULT, "--container", "none", "--results-dir", str(tmp_path), "--limit", "5")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    document = json.loads((tmp_path / f"{CPU_DEFAULT}.json").read_text())
    assert document["status"] == "passed" and document["metrics"]["n"] == 5
    assert document["slurm"]["state"] == "COMPLETED" and document["slurm"]["name"] == CPU_DEFAULT
    assert "GPU-hours" in out and "before the first request" in out
    report = subprocess.run([sys.executable, "-m", "gsm8k_bench.reporting.report", str(tmp_path),
                             str(tmp_path / "out")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "GPU-h" in (tmp_path / "out" / "report.md").read_text()
    assert not [line for line in queue() if CPU_DEFAULT in line]


def test_the_submitted_sessions_are_one_family_for_the_gate(matrix):
    combos, opts = slurm.parse_args(matrix, ["--partition", "p", "-k", "b200 and fp4 and sglang", "--limit", "5"])
    assert len(combos) > 1 and opts.session_args == ("--gate-family", str(len(combos)), "--limit", "5")
    alone, given = slurm.parse_args(matrix, ["--partition", "p", "-s", CPU_DEFAULT, "--gate-family", "106"])
    assert len(alone) == 1 and given.session_args == ("--gate-family", "1", "--gate-family", "106")
