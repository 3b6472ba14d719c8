"""Faults injected for real: signals the way GitHub cancels a job, SIGKILL of nox, SIGSTOP of the server,
concurrent runs, a foreign server on the port, sockets in TIME_WAIT, bad input, a Docker engine that goes
away.  Each must end with a clear message in bounded time, its JSON written (or an earlier one kept), and
nothing left running.  The fault table in docs/security-and-faults.md names these tests;
test_fault_table_matches_the_tests keeps the two in step.

Sessions that need no real model use tests/fakes/vllm, a real HTTP server that stands in for `vllm serve`
(found on PATH by an ad-hoc h100 session with --launcher process); lm-eval is always the real one.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import MINIMAL, ROOT, SHARED_GSM8K, fill_disk, parse, require
from test_docker import client, labelled, run_args  # noqa: F401 - client: the engine fixture
from test_integration import SESSION, env, nox_argv, processes_writing_to, wait_for

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import BenchError, ConfigError, ServerError
from gsm8k_bench.fleet import dispatch_policy, workflow_plan
from gsm8k_bench.reporting import report
from gsm8k_bench.serving import ownership
from gsm8k_bench.serving.containers import SESSION_LABEL
from gsm8k_bench.serving.images import CPU_IMAGE
from gsm8k_bench.serving.launchers import reserve_port, wait_ready
from gsm8k_bench.serving.launchers.process import process_server
from gsm8k_bench.session.options import build_parser, parse_session_args

FAKES = Path(__file__).resolve().parent / "fakes"
FAKE_SESSION = "gsm8k-smollm2-135m-h100-vllm-fp16-tp1"
WORKFLOW = ROOT / ".github" / "workflows" / "gsm8k-benchmark.yml"


def fake_env(**extra: str) -> dict[str, str]:
    return {**env(), "PATH": f"{FAKES}:{os.environ['PATH']}", **extra}


def fake_argv(results_dir: Path, *extra: str) -> list[str]:
    """An ad-hoc h100 session served by tests/fakes/vllm as a plain process."""
    return nox_argv("gsm8k", "--model", "smollm2-135m", "--runner", "h100", "--framework", "vllm", "--precision",
                    "fp16", "--launcher", "process", "--limit", "5", "--dataset-dir", str(SHARED_GSM8K),
                    "--results-dir", str(results_dir), *extra)


def cpu_argv(results_dir: Path, *extra: str) -> list[str]:
    return nox_argv(SESSION, "--dataset-dir", str(SHARED_GSM8K), "--results-dir", str(results_dir), *extra)


def nothing_left(work: Path) -> bool:
    return not processes_writing_to(work / "server.log") and not processes_writing_to(work / "lm-eval.log")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def ignoring_sigterm(pids: list[int]) -> list[int]:
    """Those of `pids` that have set SIGTERM to ignored (the kernel's SigIgn mask): a fake server only does
    so once its interpreter has started, so a fault sent earlier would meet the default action."""
    ignoring = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
        if mask >> (signal.SIGTERM - 1) & 1:
            ignoring.append(pid)
    return ignoring


def with_fault(argv: list[str], environ: dict[str, str], ready, what: str, fault, bound_s: float):
    """Start a session, wait until ready() returns something, call fault(proc, that), and require the
    session to end within bound_s of the fault.  Returns (exit code, output, what ready() returned)."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        found = wait_for(ready, 600, what)
        fault(proc, found)
        faulted_at = time.monotonic()
        output, _ = proc.communicate(timeout=bound_s + 60)
        assert time.monotonic() - faulted_at < bound_s, output[-3000:]
    finally:
        if proc.poll() is None:  # the test failed: leave nothing of it running either
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, output, found


# --------------------------------------------------------------------------- 1. cancellation


@pytest.mark.integration
def test_sigkill_of_nox_takes_the_server_with_it(tmp_path):
    """PR_SET_PDEATHSIG: nox SIGKILLed (GitHub's last step) leaves no vLLM server, engine core or lm-eval."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    work = tmp_path / SESSION

    def kill_nox(proc, _):
        assert processes_writing_to(work / "lm-eval.log")
        proc.kill()

    returncode, _, _ = with_fault(cpu_argv(tmp_path), env(), lambda: len(processes_writing_to(work / "server.log")) > 1,
                                  "the server and its engine process", kill_nox, bound_s=10)
    assert returncode == -signal.SIGKILL
    wait_for(lambda: nothing_left(work), 20, "the server and lm-eval to die with nox")


def test_grandchildren_die_when_the_session_is_sigkilled(tmp_path):
    """A grandchild (as vLLM's engine core is) never learns that nox died: the group guard kills it."""
    session = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from gsm8k_bench.serving import procs
        child = ("import subprocess, sys, time; "
                 "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)")
        proc = procs.start([sys.executable, "-c", child], Path({str(tmp_path / "child.log")!r}))
        print(proc.pid, flush=True)
        time.sleep(600)
        """)
    parent = subprocess.Popen([sys.executable, "-c", session], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    group = int(parent.stdout.readline())

    def members() -> list[str]:
        return subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout.split()

    try:
        wait_for(lambda: len(members()) == 2, 30, "the child and its grandchild")
        parent.kill()
        parent.wait()
        wait_for(lambda: not members(), 10, "the group to die with its session")
    finally:
        if members():
            os.killpg(group, signal.SIGKILL)


@pytest.mark.integration
def test_github_cancel_reaches_the_session_through_the_workflow_step(tmp_path):
    """The workflow's own run step, signalled as GitHub cancels: SIGINT to the step's process, SIGTERM
    2.5 s later.  The step execs nox, so nox gets both.  The server ignores SIGTERM, so the second signal
    lands while cleanup waits out its 15 s grace: it must cut the grace short, not skip the kill, and
    everything must end before GitHub's SIGKILL (10 s after the SIGINT)."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    step = next(s for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["benchmark"]["steps"]
                if "NOX_SESSION" in s.get("env", {}))
    work = tmp_path / FAKE_SESSION
    step_env = {**fake_env(FAKE_VLLM_READY_AFTER_S="600", FAKE_VLLM_IGNORE_SIGTERM="1"), "SKU": "cpu",
                "NOX_SESSION": "gsm8k", "SESSION_ARGS": " ".join(fake_argv(tmp_path)[6:])}

    def cancel(proc, _):
        proc.send_signal(signal.SIGINT)
        time.sleep(2.5)
        assert proc.poll() is None  # still in cleanup, waiting for the server that ignores SIGTERM
        proc.send_signal(signal.SIGTERM)

    # cancel() itself took 2.5 s of the 10.
    returncode, output, _ = with_fault(["bash", "-e", "-c", step["run"]], step_env,
                                       lambda: ignoring_sigterm(processes_writing_to(work / "server.log")),
                                       "the server to start and ignore SIGTERM", cancel, bound_s=7.5)
    assert returncode != 0
    doc = read_json(tmp_path / f"{FAKE_SESSION}.json")
    assert doc["status"] == "failed" and "interrupted during server start (signal SIGINT)" in doc["error"]["message"]
    assert nothing_left(work), output[-3000:]


def test_plan_gives_every_cell_an_eval_timeout_inside_the_jobs_timeout(matrix):
    """Start + eval timeouts end before the benchmark job's timeout-minutes (a job GitHub kills writes no
    JSON); a start timeout that leaves no room for the eval fails in the plan job."""
    job_minutes = dispatch_policy.job_timeout_minutes()
    assert job_minutes == yaml.safe_load(WORKFLOW.read_text())["jobs"]["benchmark"]["timeout-minutes"]
    rows = workflow_plan.job_rows(matrix, {**dict.fromkeys(workflow_plan.INPUTS, ""), "sessions": "gsm8k"})
    for row in rows:
        combo = matrix.get(row["session"])
        eval_s = float(row["session_args"].split("--eval-timeout ")[1].split()[0])
        start_s = combo.runner.start_timeout_s or matrix.defaults.start_timeout_s
        assert start_s + eval_s + dispatch_policy.SETUP_MARGIN_S <= job_minutes * 60
        options = parse_session_args(row["session"], row["session_args"].split())
        assert options.eval_timeout_s == eval_s
    slow = matrix.get(SESSION)
    with pytest.raises(ConfigError, match="raise timeout-minutes"):
        dispatch_policy.eval_timeout_s(slow, matrix.defaults, job_minutes=40)


def test_workflow_execs_the_session_and_cleans_up_always():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["benchmark"]["steps"]
    run = next(s for s in steps if "NOX_SESSION" in s.get("env", {}))
    assert 'exec nox -s "$NOX_SESSION"' in run["run"] and 'exec "runners/launch_gsm8k_${SKU}.sh"' in run["run"]
    assert "exec nox -s" in (ROOT / "runners" / "lib.sh").read_text()
    names = [s.get("name", "") for s in steps]
    sweep = next(s for s in steps if "launchers.docker sweep" in s.get("run", ""))
    mask = next(s for s in steps if "gsm8k_bench.core.results mask results" in s.get("run", ""))
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert sweep["if"].startswith("always()") and mask["if"] == "always()"
    assert names.index(run["name"]) < names.index(sweep["name"]) < names.index(upload["name"])
    assert names.index(mask["name"]) < names.index(upload["name"])


# --------------------------------------------------------------------------- 2. only our own server


def test_port_in_time_wait_is_not_busy():
    """Right after a run its port's connections sit in TIME_WAIT for about 60 s; a bind without
    SO_REUSEADDR fails, the claim must not."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    peer = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the side that closes first keeps the TIME_WAIT: the server's port
    peer.close()
    listener.close()
    time.sleep(0.2)
    plain = socket.socket()
    with pytest.raises(OSError) as busy:
        plain.bind(("127.0.0.1", port))
    plain.close()
    assert busy.value.errno == errno.EADDRINUSE  # the TIME_WAIT is real
    claim = reserve_port("127.0.0.1", port)
    try:
        assert claim.port == port
    finally:
        claim.release()


def test_concurrent_sessions_never_claim_the_same_port(tmp_path):
    """Another process holds a claim on the preferred port (as a concurrent session does, before its server
    binds): this session gets the next port, and gets the first again once the other process is gone."""
    preferred = socket.create_server(("127.0.0.1", 0))
    port = preferred.getsockname()[1]
    preferred.close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from gsm8k_bench.serving.launchers import reserve_port
        claim = reserve_port("127.0.0.1", {port})
        print(claim.port, flush=True)
        time.sleep(60)
        """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert int(holder.stdout.readline()) == port
        claim = reserve_port("127.0.0.1", port)
        assert claim.port != port
        claim.release()
    finally:
        holder.kill()
        holder.wait()
    claim = reserve_port("127.0.0.1", port)  # the kernel dropped the dead holder's flock
    assert claim.port == port
    claim.release()


def test_foreign_server_on_the_port_is_not_scored(tmp_path):
    """A server answering on our address with another run's name (the same model, no run id) is refused."""
    claim = reserve_port("127.0.0.1", 18000)
    argv = ["vllm", "serve", "m", "--host", "127.0.0.1", "--port", str(claim.port),
            "--served-model-name", "smollm2-135m"]
    claim.release()
    foreign = r"not this run's 'smollm2-135m-a1b2c3': another server holds"
    with process_server(argv, base_url=f"http://127.0.0.1:{claim.port}", env=fake_env(),
                        log_path=tmp_path / "server.log") as server, pytest.raises(ServerError, match=foreign):
        wait_ready(server, "smollm2-135m-a1b2c3", 60, lambda line: None)
    assert not processes_writing_to(tmp_path / "server.log")


@pytest.mark.integration
def test_concurrent_sessions_each_score_their_own_server(tmp_path):
    """Two runs of one session at once, into two folders (on two GPUs: a GPU is one session's): two ports,
    two served names, and each server saw only its own run's requests."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    runs = [subprocess.Popen(fake_argv(tmp_path / name, "--gpus", gpu), cwd=ROOT,
                             env=fake_env(FAKE_VLLM_READY_AFTER_S="3"), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for name, gpu in (("a", "0"), ("b", "1"))]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    docs = [read_json(tmp_path / name / f"{FAKE_SESSION}.json") for name in ("a", "b")]
    ports = {d["config"]["server_command"].split("--port ")[1].split()[0] for d in docs}
    served = [d["config"]["served_model_name"] for d in docs]
    assert len(ports) == 2 and len(set(served)) == 2
    assert all(re.fullmatch(r"smollm2-135m-[0-9a-f]{6}", name) for name in served)
    for name, doc in zip(("a", "b"), docs, strict=True):
        requests_seen = re.findall(r"request for model=(\S+)", (tmp_path / name / FAKE_SESSION / "server.log")
                                   .read_text())
        assert len(requests_seen) >= 5 and set(requests_seen) == {doc["config"]["served_model_name"]}


# --------------------------------------------------------------------------- 3. one run per results folder


@pytest.mark.integration
def test_second_run_into_the_same_results_dir_fails_at_once_naming_the_holder(tmp_path):
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    work = tmp_path / FAKE_SESSION
    first = subprocess.Popen(fake_argv(tmp_path), cwd=ROOT, env=fake_env(FAKE_VLLM_READY_AFTER_S="600"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: processes_writing_to(work / "server.log"), 300, "the first run's server")
        second = subprocess.run(fake_argv(tmp_path), cwd=ROOT, env=fake_env(), capture_output=True, text=True,
                                timeout=120)
        assert second.returncode != 0
        assert first.poll() is None  # it did not wait for the holder: the first is still waiting for its server
        assert f"{FAKE_SESSION} is already running into {tmp_path} (pid {first.pid} " in second.stderr
        assert re.search(r"started \d{4}-\d\d-\d\dT", second.stderr)
        assert not (tmp_path / f"{FAKE_SESSION}.json").exists()  # the second run wrote nothing
        assert processes_writing_to(work / "server.log")  # and left the first one's server alone
        first.kill()  # SIGKILL: the kernel drops the flock, and the children die with nox
        first.wait()
        wait_for(lambda: nothing_left(work), 20, "the first run's server to die with it")
    finally:
        if first.poll() is None:
            first.kill()
    with ownership.ResultsLock(tmp_path, FAKE_SESSION):  # free again
        pass


# --------------------------------------------------------------------------- 3b. two packs at once, for real
# Real `nox -s pack` processes whose sessions (a matrix session, --launcher process) are served by
# tests/fakes/vllm: the GPUs are only numbers, the claims on them are the real ones.

TP4 = "gsm8k-llama-3.3-70b-h100-vllm-fp16-tp4"


def pack_argv(results_dir, gpus, *extra):
    return nox_argv("pack", "-s", TP4, "--gpus", gpus, "--results-dir", str(results_dir), "--launcher", "process",
                    "--limit", "2", "--dataset-dir", str(SHARED_GSM8K), *extra)


def start_pack(argv, environ):
    return subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def serving(results_dir):
    """The session's server has started (it stays "loading" until the test's go file exists)."""
    return processes_writing_to(results_dir / TP4 / "server.log")


@pytest.fixture
def packs():
    """Packs and sessions a test started; each still running at its end is interrupted as Ctrl-C would."""
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()


@pytest.mark.integration
def test_two_packs_on_overlapping_gpus_never_share_one(tmp_path, packs):
    """Pack A runs a tp=4 session on GPUs 0-3; pack B, given 2-5, places the same session on 2-5: its
    session fails at once naming A's session and pid, and starts no server.  A is left alone."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    go = tmp_path / "go"
    first = start_pack(pack_argv(tmp_path / "a", "0-3"), fake_env(FAKE_VLLM_READY_WHEN=str(go)))
    packs.append(first)
    wait_for(lambda: serving(tmp_path / "a"), 300, "pack A's server")
    second = subprocess.run(pack_argv(tmp_path / "b", "2-5"), cwd=ROOT, env=fake_env(), capture_output=True,
                            text=True, timeout=300)
    assert second.returncode != 0
    doc = json.loads((tmp_path / "b" / f"{TP4}.json").read_text())
    assert doc["status"] == "error" and doc["pack"]["gpus"] == [2, 3, 4, 5]
    holder = re.search(rf"GPU 2 is in use by session {TP4} \(pid (\d+) on ", doc["error"]["message"])
    assert holder, doc["error"]["message"]
    cmdline = Path(f"/proc/{holder.group(1)}/cmdline").read_bytes().split(b"\0")
    assert str(tmp_path / "a").encode() in cmdline and TP4.encode() in cmdline  # A's session, still running
    assert not (tmp_path / "b" / TP4 / "server.log").exists()  # B never started a server
    assert serving(tmp_path / "a")
    go.touch()
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]
    assert json.loads((tmp_path / "a" / f"{TP4}.json").read_text())["status"] == "passed"


@pytest.mark.integration
def test_a_second_pack_into_the_same_folder_leaves_the_first_packs_json_and_log(tmp_path, packs):
    """Pack B starts while pack A runs the same session into the same folder: B refuses it without
    touching A's log or JSON, and A's run passes and is reported as passed."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    go, log = tmp_path / "go", tmp_path / "pack" / f"{TP4}.log"
    first = start_pack(pack_argv(tmp_path, "0-3"), fake_env(FAKE_VLLM_READY_WHEN=str(go)))
    packs.append(first)
    wait_for(lambda: serving(tmp_path), 300, "pack A's server")
    before = log.read_text()
    second = subprocess.run(pack_argv(tmp_path, "4-7"), cwd=ROOT, env=fake_env(), capture_output=True, text=True,
                            timeout=300)
    assert second.returncode != 0
    assert f"{TP4} is already running into {tmp_path / 'pack'}" in second.stdout + second.stderr
    assert log.read_text().startswith(before) and "already running" not in log.read_text()
    assert not (tmp_path / f"{TP4}.json").exists()  # B wrote no JSON in A's place
    go.touch()
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]
    doc = json.loads((tmp_path / f"{TP4}.json").read_text())
    assert doc["status"] == "passed" and doc["pack"]["log"] == str(log)
    assert f"llama-3.3-70b-{doc['environment']['run_id']}" in log.read_text()  # A's own run, start to end


@pytest.mark.integration
def test_a_pack_never_rewrites_the_json_of_a_run_it_did_not_start(tmp_path, packs):
    """A plain run of the session holds the folder; a pack's session into it is refused, and the pack's
    collector writes nothing over the running one's place, then or after it passed."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    go = tmp_path / "go"
    plain = start_pack(nox_argv(TP4, "--gpus", "0-3", "--results-dir", str(tmp_path), "--launcher", "process",
                                "--limit", "2", "--dataset-dir", str(SHARED_GSM8K)),
                       fake_env(FAKE_VLLM_READY_WHEN=str(go)))
    packs.append(plain)
    wait_for(lambda: serving(tmp_path), 300, "the plain run's server")
    second = subprocess.run(pack_argv(tmp_path, "4-7"), cwd=ROOT, env=fake_env(), capture_output=True, text=True,
                            timeout=300)
    assert second.returncode != 0
    refused = (tmp_path / "pack" / f"{TP4}.log").read_text()  # the pack's session, refused
    assert f"{TP4} is already running into {tmp_path} (pid {plain.pid} " in refused
    assert not (tmp_path / f"{TP4}.json").exists()
    go.touch()
    out, _ = plain.communicate(timeout=300)
    assert plain.returncode == 0, out[-3000:]
    doc = json.loads((tmp_path / f"{TP4}.json").read_text())
    assert doc["status"] == "passed" and doc.get("pack") is None


# --------------------------------------------------------------------------- 4. a hung server


@pytest.mark.integration
def test_sigstopped_server_during_readiness_fails_within_15_s(tmp_path):
    """A stopped server process is a hang, not a slow load: the next readiness poll names it."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    work = tmp_path / SESSION
    returncode, output, leader = with_fault(
        cpu_argv(tmp_path), env(), lambda: min(processes_writing_to(work / "server.log"), default=None),
        "the server to start", lambda proc, leader: os.kill(leader, signal.SIGSTOP), bound_s=15)
    assert returncode != 0
    doc = read_json(tmp_path / f"{SESSION}.json")
    assert doc["status"] == "failed"
    assert re.search(rf"server hung before it was ready \(\d+ s\): process\(es\) [\d, ]*{leader}[\d, ]* stopped",
                     doc["error"]["message"]), doc["error"]["message"]
    assert nothing_left(work), output[-3000:]


def test_server_silent_after_health_is_a_hang(tmp_path):
    """Alive, not stopped, answered /health once and then nothing: failed after the silence bound."""
    claim = reserve_port("127.0.0.1", 18100)
    argv = ["vllm", "serve", "m", "--host", "127.0.0.1", "--port", str(claim.port), "--served-model-name", "x"]
    claim.release()
    with process_server(argv, base_url=f"http://127.0.0.1:{claim.port}", env=fake_env(FAKE_VLLM_DEADLOCK="1"),
                        log_path=tmp_path / "server.log") as server:
        started = time.monotonic()
        with pytest.raises(ServerError, match=r"answered /health, then nothing for 3 s"):
            wait_ready(server, "x", 600, lambda line: None, silent_after_health_s=3)
        assert time.monotonic() - started < 3 + 2 * 5 + 5  # the bound plus two request timeouts
    assert not processes_writing_to(tmp_path / "server.log")


# --------------------------------------------------------------------------- 7. reruns in the report


def _doc(session: str, status: str, attempt: int | None, ended: str, **extra) -> dict:
    return {"schema": 1, "session": session, "status": status, "error": {"message": "boom"} if status != "passed"
            else None, "environment": {"ci_run_attempt": attempt, "ended_at": ended}, **extra}


def test_report_keeps_the_newest_attempt_per_session_and_says_which(tmp_path):
    # As the summary job downloads them: one folder per artifact, named with the job's own attempt.
    name = "gsm8k-a-cpu-vllm-fp16-tp1"
    for attempt, status in ((1, "failed"), (2, "passed"), (3, "failed")):
        results.write_atomic(tmp_path / f"{name}-attempt{attempt}" / f"{name}.json",
                             _doc(name, status, attempt, f"2026-01-0{attempt}"))
    warnings: list[str] = []
    documents = report.load_results(tmp_path, warnings.append)
    assert len(documents) == 1 and documents[0]["environment"]["ci_run_attempt"] == 3
    path = tmp_path / f"{name}-attempt{{}}" / f"{name}.json"
    assert warnings == [f"{name}: 3 JSONs; using {str(path).format(3)} (failed, attempt 3, ended 2026-01-03), not "
                        f"{str(path).format(2)} (passed, attempt 2, ended 2026-01-02), {str(path).format(1)} "
                        "(failed, attempt 1, ended 2026-01-01)"]
    assert "| `gsm8k-a-cpu-vllm-fp16-tp1` | failed (attempt 3) |" in report.markdown(documents)


# --------------------------------------------------------------------------- 8. a good result survives


@pytest.mark.parametrize("bad", [
    ["--baselines", "/nonexistent/baselines.yaml"],
    ["--dataset-dir", "/nonexistent/gsm8k"],
])
def test_rerun_failing_on_input_keeps_the_previous_result(tmp_path, bad):
    previous = results.write_atomic(tmp_path / f"{SESSION}.json", _doc(SESSION, "passed", None, "earlier"))
    before = previous.read_bytes()
    out = subprocess.run(nox_argv(SESSION, "--results-dir", str(tmp_path), *bad), cwd=ROOT, env=env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    assert "/nonexistent/" in out.stderr + out.stdout
    assert previous.read_bytes() == before


def test_input_error_without_an_earlier_result_still_writes_one(tmp_path):
    out = subprocess.run(nox_argv(SESSION, "--results-dir", str(tmp_path), "--baselines", "/nonexistent.yaml"),
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    doc = read_json(tmp_path / f"{SESSION}.json")
    assert doc["status"] == "error" and "/nonexistent.yaml: no such baselines file" in doc["error"]["message"]



@pytest.mark.integration
def test_a_full_disk_is_a_message_and_the_earlier_result_is_set_aside(tmp_path, small_disk):
    """A real tmpfs, filled while the rerun's server loads: lm-eval, the masking and the JSON meet a full
    disk.  The session ends with a message, not a traceback; the earlier passed JSON no longer stands as
    the session's result but is kept, renamed, where the message says; no temporary file is left.  The
    server printed the token: a file that could not be rewritten masked is removed, none keeps it."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    results_dir, go = small_disk / "results", tmp_path / "go"
    first = subprocess.run(fake_argv(results_dir), cwd=ROOT, env=fake_env(), capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    earlier = (results_dir / f"{FAKE_SESSION}.json").read_bytes()
    token = "hf_DiskFullToken0123456789"
    rerun = subprocess.Popen(fake_argv(results_dir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=fake_env(FAKE_VLLM_READY_WHEN=str(go), HF_TOKEN=token), text=True)
    try:
        # Filled once the server has printed the token: a server whose first line meets a full disk dies
        # before it is ready, and there would be nothing to mask.
        server_log = results_dir / FAKE_SESSION / "server.log"
        wait_for(lambda: server_log.is_file() and token in server_log.read_text(errors="replace"), 300,
                 "the rerun's server to print the token")
        fill_disk(small_disk)
        go.touch()
        output, _ = rerun.communicate(timeout=600)
    finally:
        rerun.kill()
        rerun.wait()
    assert rerun.returncode != 0
    assert "Traceback" not in output, output[-3000:]
    aside = results_dir / f"{FAKE_SESSION}.json.superseded"
    assert (f"{FAKE_SESSION}: failed, but its result {results_dir / FAKE_SESSION}.json could not be written (No "
            f"space left on device); the earlier result is kept as {aside} (superseded") in output
    assert not (results_dir / f"{FAKE_SESSION}.json").exists() and aside.read_bytes() == earlier
    assert not list(results_dir.glob(f".{FAKE_SESSION}.json.*"))  # no temporary file left
    assert f"cannot mask {results_dir / FAKE_SESSION} (No space left on device): removed " in output
    assert token not in output
    assert not [p for p in results_dir.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]


# --------------------------------------------------------------------------- 9. input hardening


NUMERIC_PARSERS = ("parse", "concurrency_levels")  # options._at_least's parser; the list of levels


@pytest.mark.parametrize("flag", [a.option_strings[0] for a in build_parser("s")._actions
                                  if getattr(a.type, "__name__", "") in NUMERIC_PARSERS])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_numbers_are_usage_errors(flag, value):
    with pytest.raises(BenchError, match=rf"argument {flag}: expected (a finite number|a int), got '{value}'"):
        parse_session_args("s", [f"{flag}={value}"])


def test_numeric_flags_are_all_checked():
    numeric = {a.dest for a in build_parser("s")._actions if getattr(a.type, "__name__", "") in NUMERIC_PARSERS}
    assert numeric == {"limit", "num_fewshot", "concurrency", "gate_concurrency", "gate_family", "start_timeout_s",
                       "request_timeout_s", "eval_timeout_s", "max_gen_toks", "progress_interval_s",
                       "stall_timeout_s", "looks"}


def test_nan_timeout_from_the_command_line_is_a_usage_error_not_a_traceback(tmp_path):
    out = subprocess.run(nox_argv(SESSION, "--results-dir", str(tmp_path), "--start-timeout", "nan"), cwd=ROOT,
                         env=env(), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "argument --start-timeout: expected a finite number, got 'nan'" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / f"{SESSION}.json").exists()


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


def test_yaml_alias_bomb_in_the_matrix_is_refused_at_once(tmp_path):
    bomb = tmp_path / "matrix.yaml"
    bomb.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 5000  # 9**9 = 387 million nodes if expanded
    out = subprocess.run([sys.executable, "-m", "nox", "-l"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**env(), "GSM8K_MATRIX": str(bomb)})
    assert out.returncode == 2
    assert "matrix.yaml:1: YAML anchors and aliases (&name, *name) are not allowed" in out.stderr


def test_yaml_aliases_in_baselines_are_refused(tmp_path):
    from gsm8k_bench.verdicts.gate import load_baselines

    path = tmp_path / "baselines.yaml"
    path.write_text("version: 1\ngate: &g {confidence: 0.95}\nbaselines: []\nother: *g\n")
    with pytest.raises(ConfigError, match=r"baselines.yaml:2: YAML anchors and aliases"):
        load_baselines(path)


def test_error_messages_cut_long_values():
    for old in ("vendor: nvidia", "precisions: [fp16, fp8]}"):  # an unknown name; a wrong type
        with pytest.raises(ConfigError) as error:
            parse(MINIMAL.replace(old, old.split(":")[0] + ": " + "z" * 5000 + "}" * old.endswith("}"), 1))
        assert len(str(error.value)) < 300 and "(5002 chars)" in str(error.value)
    with pytest.raises(BenchError) as error:
        parse_session_args("s", ["--launcher", "y" * 100_000])
    assert len(str(error.value)) < 2000 and "(100002 chars)" in str(error.value)


def test_dataset_check_reads_every_line_and_names_it(tmp_path):
    from gsm8k_bench.evaluation.harness import validate_dataset_dir

    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    shutil.copy(SHARED_GSM8K / "train.jsonl", tmp_path / "train.jsonl")
    lines = (SHARED_GSM8K / "test.jsonl").read_text().splitlines()
    validate_dataset_dir(SHARED_GSM8K)
    for bad, message in (('{"question": "q", "answer": "no hashes"}', "'answer' must end with '#### <number>'"),
                         ("{not json", "not JSON lines"), ('{"question": "q"}', "needs keys")):
        (tmp_path / "test.jsonl").write_text("\n".join([*lines[:1000], bad, *lines[1000:]]) + "\n")
        with pytest.raises(ConfigError, match=rf"{tmp_path / 'test.jsonl'}:1001: .*{re.escape(message)}"):
            validate_dataset_dir(tmp_path)


@pytest.mark.parametrize("kind", ["file", "uncreatable"])
def test_unusable_results_dir_is_a_clear_error_before_any_setup(tmp_path, kind):
    if kind == "file":
        target = tmp_path / "results"
        target.write_text("not a folder")
        expected = f"--results-dir {target}: a file is in the way"
    else:
        target = Path("/proc/gsm8k-bench-results")  # not even root can create it
        expected = f"--results-dir {target}: cannot create it (No such file or directory)"
    out = subprocess.run(nox_argv(SESSION, "--results-dir", str(target)), cwd=ROOT, env=env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and expected in out.stderr
    assert "starting vllm" not in out.stderr and "Traceback" not in out.stderr


# --------------------------------------------------------------------------- 10. the report never hides a failure


def test_report_tolerates_na_stderr_and_broken_jsons_and_all_failed(tmp_path):
    pytest.importorskip("matplotlib")
    one = _doc("gsm8k-a-cpu-vllm-fp16-tp1", "passed", None, "x", config={"model": "a"},
               metrics={"strict_match": 1.0, "strict_match_stderr": "N/A", "flexible_extract": 1.0,
                        "flexible_extract_stderr": "N/A", "n": 1})
    results.write_atomic(tmp_path / "gsm8k-a-cpu-vllm-fp16-tp1.json", one)
    results.write_atomic(tmp_path / "gsm8k-b-cpu-vllm-fp16-tp1.json", {"schema": 1, "session": "gsm8k-b"})
    warnings = []
    paths = report.write_report(tmp_path, tmp_path / "out", warnings.append)
    assert "1.0000 ± N/A" in paths["markdown"].read_text() and paths["plot"].is_file()
    assert warnings == [f"skipping {tmp_path / 'gsm8k-b-cpu-vllm-fp16-tp1.json'}: no 'session' name or no "
                        "'status' (one of passed, failed, error)"]

    failed = tmp_path / "failed"
    results.write_atomic(failed / "gsm8k-c-cpu-vllm-fp16-tp1.json", _doc("gsm8k-c-cpu-vllm-fp16-tp1", "failed",
                                                                         None, "x"))
    warnings.clear()
    paths = report.write_report(failed, tmp_path / "out2", warnings.append)
    assert "- `gsm8k-c-cpu-vllm-fp16-tp1`: failed: boom" in paths["summary"].read_text()
    assert "plot" not in paths and warnings == ["no plot: no session has metrics to plot"]


def test_result_jsons_are_world_readable(tmp_path):
    path = results.write_atomic(tmp_path / "x.json", {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o644


def test_summary_job_reports_always_and_keeps_attempts_apart():
    summary = yaml.safe_load(WORKFLOW.read_text())["jobs"]["summary"]
    download = next(s for s in summary["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert "merge-multiple" not in download["with"]  # one folder per artifact: attempts never overwrite
    for step in summary["steps"]:
        if step.get("name") in ("Report", "Upload the report") or step is download:
            assert step["if"] == "always()", step


# --------------------------------------------------------------------------- 6. the image input


@pytest.mark.parametrize(("image", "allowed"), [
    ("vllm/vllm-openai:v0.32.0", True),
    ("vllm/vllm-openai@sha256:" + "a" * 64, True),
    ("vllm/vllm-openai:latest", True),  # any tag of a listed repository (the docs' own example)
    ("vllm/vllm-openai-nightly:latest", False),  # a look-alike repository
    ("evil.example/vllm/vllm-openai:v0.32.0", False),
    ("evil/x@sha256:" + "b" * 64, False),
    ("vllm/vllm-openai-rocm:v0.32.0", False),  # another vendor's image
])
def test_image_input_only_from_listed_repositories(matrix, image, allowed):
    inputs = {**dict.fromkeys(workflow_plan.INPUTS, ""), "model": "llama-3.1-8b", "runner": "h100",
              "framework": "vllm", "precision": "fp16", "tp": "1", "image": image}
    if allowed:
        (row,) = workflow_plan.job_rows(matrix, inputs)
        assert f"--image {image}" in row["session_args"]
    else:
        with pytest.raises(ConfigError, match=r"is not from a repository allowed for vllm on h100\. Allowed "
                                              r"repositories: vllm/vllm-openai \(any tag, or a digest pinned"):
            workflow_plan.job_rows(matrix, inputs)


# --------------------------------------------------------------------------- 11. the docs' fault table


def test_fault_table_matches_the_tests():
    """Every row of the fault table (docs/security-and-faults.md) names tests that exist here (or in
    test_masking, test_docker, test_hostile_inputs, test_workflows, test_report_browser, test_evaluate_results or
    test_lm_eval_client), and every fault test in this file is in the table."""
    page = (ROOT / "docs" / "security-and-faults.md").read_text()
    table = page.split("### Faults and what is left behind")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| fault")]
    assert len(rows) >= 15
    named = set()
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 5 and all(cells), line
        found = re.findall(r"`(test_\w+)`", cells[4])
        assert found, line
        named |= set(found)
    modules = {name: (ROOT / "tests" / f"{name}.py").read_text() for name in (
        "test_faults", "test_masking", "test_docker", "test_hostile_inputs", "test_workflows", "test_report_browser",
        "test_evaluate_results", "test_lm_eval_client")}
    defined = {m for text in modules.values() for m in re.findall(r"^def (test_\w+)", text, re.M)}
    assert named <= defined, named - defined
    here = set(re.findall(r"^def (test_\w+)", modules["test_faults"], re.M)) - {"test_fault_table_matches_the_tests"}
    assert here <= named, here - named


# --------------------------------------------------------------------------- containers (a real Docker engine)


@pytest.mark.docker
def test_sigkilled_docker_session_leaves_a_container_the_sweep_removes(client, tmp_path):  # noqa: F811
    """nox SIGKILLed: its container keeps running (nothing in the container can notice); the workflow's
    always-run sweep (and every later session's start) removes it by its owner label, and never a live
    run's container, nor one of another host."""
    here = ownership.current_owner()
    keep = [client.containers.create(CPU_IMAGE, command=["sleep", "600"], network_mode="none", labels={
        SESSION_LABEL: "gsm8k-keep", ownership.OWNER_LABEL: owner.label()}) for owner in (
        here, ownership.Owner("another-host", here.boot_id, 1, "1"))]
    proc = subprocess.Popen(run_args(tmp_path), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def ours() -> list:  # the owner label names the nox process that started the container
            return [c for c in labelled(client) if c.labels.get(ownership.OWNER_LABEL, "").split("/")[2:3] == [
                str(proc.pid)]]

        (container,) = wait_for(ours, 300, "the session's container")
        assert container.labels[SESSION_LABEL] == SESSION
        proc.kill()
        proc.wait(timeout=10)
        time.sleep(2)
        container.reload()
        assert container.status == "running"  # the fault is real: SIGKILL left it behind
        assert not processes_writing_to(tmp_path / SESSION / "lm-eval.log")  # the evaluator died with nox
        out = subprocess.run([sys.executable, "-m", "gsm8k_bench.serving.launchers.docker", "sweep"], cwd=ROOT,
                             env=env(),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert f"removed orphaned container {container.name}" in out.stdout.splitlines()
        remaining = {c.id for c in labelled(client)}
        assert container.id not in remaining and {c.id for c in keep} <= remaining
    finally:
        if proc.poll() is None:
            proc.kill()
        for mine in [*keep, *ours()]:
            mine.remove(force=True)


def test_owner_label_tells_a_gone_run_from_a_live_one():
    """Only what this host can prove is gone: a dead pid, a pid reused by a later process, another boot."""
    here = ownership.current_owner()
    dead = subprocess.Popen(["sleep", "60"])
    dead_owner = ownership.Owner(here.host, here.boot_id, dead.pid, ownership.process_start_ticks(dead.pid))
    assert not dead_owner.is_gone(here)
    dead.kill()
    dead.wait()
    assert dead_owner.is_gone(here)
    assert ownership.Owner.parse(here.label()) == here and not here.is_gone(here)
    assert ownership.Owner(here.host, here.boot_id, here.pid, "1").is_gone(here)  # our pid, another process
    assert ownership.Owner(here.host, "another-boot", here.pid, here.start_ticks).is_gone(here)
    assert not ownership.Owner("another-host", "x", 1, "1").is_gone(here)
    assert ownership.Owner.parse("no owner") is None


def _pause_image(engine, tmp_path: Path) -> str:
    """A tiny image built without any registry: a static program, named python3, that waits for a signal."""
    import tarfile

    source = tmp_path / "pause.c"
    source.write_text("#include <unistd.h>\nint main(void) { for (;;) pause(); }\n")
    binary = tmp_path / "python3"
    subprocess.run(["gcc", "-static", "-Os", "-o", str(binary), str(source)], check=True, timeout=120)
    with tarfile.open(tmp_path / "rootfs.tar", "w") as tar:
        tar.add(binary, arcname="usr/bin/python3")
    with (tmp_path / "rootfs.tar").open("rb") as handle:
        engine.api.import_image(src=handle, repository="gsm8k-bench/pause", tag="1")
    return "gsm8k-bench/pause:1"


@pytest.fixture(scope="module")
def private_engine(tmp_path_factory):
    """A private Docker engine (never the shared one: this module stops it) with a tiny image."""
    docker = pytest.importorskip("docker")
    require(shutil.which("dockerd") is not None and shutil.which("gcc") is not None and os.geteuid() == 0,
            "root, dockerd and gcc (to start a private engine and build a tiny image for it)")
    engine_dir = Path(f"/tmp/gsm8k-engine-{os.getpid()}")  # a socket path must stay under 108 bytes
    script = ROOT / "docker" / "private-engine.sh"
    address = subprocess.run([str(script), "start", str(engine_dir)], capture_output=True, text=True, check=True,
                             timeout=120).stdout.strip()
    try:
        engine = docker.DockerClient(base_url=address, version="auto")
        image = _pause_image(engine, tmp_path_factory.mktemp("pause-image"))
        yield address, engine, image, lambda: subprocess.run([str(script), "stop", str(engine_dir)], check=True,
                                                             timeout=120)
    finally:
        subprocess.run([str(script), "stop", str(engine_dir)], timeout=120)
        shutil.rmtree(engine_dir, ignore_errors=True)


def _in_container_argv(results_dir: Path, image: str) -> list[str]:
    return cpu_argv(results_dir, "--launcher", "docker", "--pull", "never", "--image", image)


@pytest.mark.docker
def test_sigstopped_process_in_a_container_is_a_hang(private_engine, tmp_path):
    """The server in a container stopped (SIGSTOP from the host): `docker top` shows it, the session
    fails at the next readiness poll and removes the container."""
    address, engine, image, _ = private_engine

    def stop_server(proc, containers):
        init_pid = containers[0].attrs["State"]["Pid"]
        (server_pid,) = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
        os.kill(int(server_pid), signal.SIGSTOP)

    returncode, _, _ = with_fault(_in_container_argv(tmp_path, image), {**env(), "DOCKER_HOST": address},
                                  engine.containers.list, "the container to run", stop_server, bound_s=30)
    assert returncode != 0
    doc = read_json(tmp_path / f"{SESSION}.json")
    assert re.search(r"server hung before it was ready \(\d+ s\): process\(es\) \d+ in the container stopped",
                     doc["error"]["message"]), doc["error"]
    assert engine.containers.list(all=True) == []
    assert nothing_left(tmp_path / SESSION)


@pytest.mark.docker
def test_docker_engine_disappearing_mid_run_ends_the_session(private_engine, tmp_path):
    """The private engine is stopped while the session waits for its container (the last test here)."""
    address, engine, image, stop_engine = private_engine
    returncode, output, (container,) = with_fault(
        _in_container_argv(tmp_path, image), {**env(), "DOCKER_HOST": address}, engine.containers.list,
        "the container to run", lambda proc, containers: stop_engine(), bound_s=30)
    init_pid = container.attrs["State"]["Pid"]
    assert returncode != 0
    doc = read_json(tmp_path / f"{SESSION}.json")
    assert doc["status"] == "failed"
    assert f"server start: Docker engine unreachable at {address}" in doc["error"]["message"], doc["error"]
    assert "Traceback" not in output
    assert not Path(f"/proc/{init_pid}").exists()  # the engine took its container down with it
    assert nothing_left(tmp_path / SESSION)
