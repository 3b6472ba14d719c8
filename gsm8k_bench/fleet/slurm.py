"""`nox -s slurm -- [-k EXPR] [-t TAG ...] --partition P [--account A] [--time T] [--container ...]`:
one sbatch job per selected session, each running that session with its own allocation.

Pure parts (the job script, sbatch's argv, enroot's import, sacct parsing) are planned first; then the
jobs are submitted and watched through squeue, and each ends with a session JSON in one results
folder: the session's own, or, when the job died before writing it, one saying why (sacct's state).
Ctrl-C (or SIGTERM) cancels every job this run submitted.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.fleet import collect
from gsm8k_bench.matrix.selection import selected, selection_parser
from gsm8k_bench.matrix.types import Combination, Matrix
from gsm8k_bench.reporting import fleet_cost
from gsm8k_bench.serving import procs, venvs

CONTAINERS = ("pyxis", "docker", "none")
# How the session serves inside its job, per --container.
LAUNCHER_FOR = {"pyxis": "pyxis", "docker": "docker", "none": "process"}
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING")
CANCEL_WAIT_S = 60.0
GONE_POLLS = 10  # polls to wait for sacct to learn about a job squeue no longer shows
SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "Elapsed")
NO_ACCOUNTING = "accounting storage is disabled"


@dataclass(frozen=True)
class SlurmOptions:
    partition: str
    account: str | None
    time: str | None
    container: str
    results_dir: Path
    squashfs_dir: Path
    poll_s: float
    session_args: tuple[str, ...] = ()


def parse_args(matrix: Matrix, argv: list[str]) -> tuple[list[Combination], SlurmOptions]:
    parser = selection_parser("nox -s slurm --", "Submit one Slurm job per selected session; arguments "
                              "not listed here go to every session (e.g. --limit 5).")
    parser.add_argument("--partition", required=True)
    parser.add_argument("--account")
    parser.add_argument("--time", help="job time limit, Slurm's format (e.g. 2:00:00)")
    parser.add_argument("--container", choices=CONTAINERS, default="pyxis",
                        help="pyxis (enroot squashfs via srun), docker (docker run in the job) or none "
                        "(the server as a process) (default pyxis)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--squashfs-dir", type=Path, default=venvs.cache_dir() / "squashfs",
                        help="shared folder for imported images (default $GSM8K_BENCH_CACHE/squashfs)")
    parser.add_argument("--poll", dest="poll_s", type=float, default=5.0, help="seconds between squeue polls")
    args, rest = parser.parse_known_args(argv)
    if "--results-dir" in rest or "--gpus" in rest:
        raise BenchError("nox -s slurm: --results-dir is the run's, and GPUs come from each job's allocation")
    combos = selected(matrix, args)
    # The submitted sessions are one family for the paired gate (a later --gate-family in `rest` wins).
    options = SlurmOptions(args.partition, args.account, args.time, args.container,
                           args.results_dir.expanduser().resolve(), args.squashfs_dir.expanduser().resolve(),
                           args.poll_s, ("--gate-family", str(len(combos)), *rest))
    return combos, options


# --------------------------------------------------------------------------- pure plan


def enroot_uri(image: str) -> str:
    """enroot's docker:// form: a registry host is separated from the path by '#'."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return f"docker://{first}#{rest}"
    return f"docker://{image}"


def squashfs_path(squashfs_dir: Path, image: str) -> Path:
    return squashfs_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "+", image) + ".sqsh")


def import_command(image: str, squashfs: Path) -> list[str]:
    """Import once per image under a lock; a file `unsquashfs -l` can list is reused, anything else redone."""
    sqsh = shlex.quote(str(squashfs))
    return ["flock", f"{squashfs}.lock", "bash", "-c",
            f"unsquashfs -l {sqsh} >/dev/null 2>&1 || {{ rm -f {sqsh}; "
            f"enroot import -o {sqsh} {shlex.quote(enroot_uri(image))}; }}"]


def session_command(combo: Combination, options: SlurmOptions, python: str, noxfile: Path) -> list[str]:
    argv = [python, "-m", "nox", "-f", str(noxfile), "-s", combo.name, "--",
            "--results-dir", str(options.results_dir)]
    if combo.runner.vendor != "cpu" or options.container != "none":
        argv += ["--launcher", LAUNCHER_FOR[options.container]]
    if options.container == "pyxis" and combo.image:
        argv += ["--image", str(squashfs_path(options.squashfs_dir, combo.image))]
    return [*argv, *options.session_args]


def job_script(combo: Combination, options: SlurmOptions, python: str, noxfile: Path) -> str:
    """The batch script: import the image (pyxis), then become the session, so scancel's SIGTERM reaches it."""
    lines = ["#!/usr/bin/env bash", f"# gsm8k-bench: {combo.name}", "set -euo pipefail"]
    if options.container == "pyxis" and combo.image:
        lines += [shlex.join(["mkdir", "-p", str(options.squashfs_dir)]),
                  shlex.join(import_command(combo.image, squashfs_path(options.squashfs_dir, combo.image)))]
    lines.append("exec " + shlex.join(session_command(combo, options, python, noxfile)))
    return "\n".join(lines) + "\n"


def job_log(options: SlurmOptions, combo: Combination) -> Path:
    return options.results_dir / "slurm" / f"{combo.name}.log"


def sbatch_argv(combo: Combination, options: SlurmOptions, script: Path, chdir: Path) -> list[str]:
    argv = ["sbatch", "--parsable", f"--job-name={combo.name}", f"--partition={options.partition}",
            f"--output={job_log(options, combo)}", f"--chdir={chdir}", "--ntasks=1"]
    if options.account:
        argv.append(f"--account={options.account}")
    if options.time:
        argv.append(f"--time={options.time}")
    if combo.runner.vendor != "cpu":
        argv.append(f"--gres=gpu:{combo.tp}")
    return [*argv, str(script)]


def parse_elapsed(text: str) -> float | None:
    """Slurm's [D-]HH:MM:SS (or MM:SS) in seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.\d+)?", text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


class SacctRecord(TypedDict):
    """A job's end as accounting (or, failing that, squeue's last word) tells it; the JSON keeps it."""

    job_id: str
    name: str
    state: str
    exit_code: str
    elapsed_s: float | None


def parse_sacct(text: str) -> dict[str, SacctRecord]:
    """`sacct -n -P -o JobID,JobName,State,ExitCode,Elapsed` -> per job id (steps like 12.batch skipped)."""
    records: dict[str, SacctRecord] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < len(SACCT_FIELDS) or "." in parts[0]:
            continue
        job_id, name, state, exit_code, elapsed = parts[:len(SACCT_FIELDS)]
        records[job_id] = {"job_id": job_id, "name": name, "state": state.strip(), "exit_code": exit_code,
                           "elapsed_s": parse_elapsed(elapsed)}
    return records


def reason(record: SacctRecord) -> str:
    state = record["state"]
    code = record["exit_code"]
    return f"{state} (exit code {code})" if code and code != "0:0" else state


# --------------------------------------------------------------------------- effects


@dataclass
class Job:
    combo: Combination
    job_id: str
    submitted_at: float
    log: Path
    state: str = "PENDING"
    where: str = ""
    record: SacctRecord | None = None
    unrecorded_polls: int = 0
    document: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.record is not None


def _slurm(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise BenchError(f"{argv[0]} not found: is this a Slurm login node (SLURM_CONF set)?") from None
    if check and out.returncode != 0:
        raise BenchError(f"{shlex.join(argv)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out


def squeue_states(ids: list[str]) -> dict[str, tuple[str, str]]:
    out = _slurm(["squeue", "-h", "--states=all", "-j", ",".join(ids), "-o", "%i|%T|%R"], check=False)
    states = {}
    for line in out.stdout.splitlines():
        job_id, state, where = [*line.split("|", 2), "", ""][:3]
        states[job_id] = (state, where)
    return states


def sacct_records(ids: list[str]) -> dict[str, SacctRecord]:
    """Final states from accounting; on a cluster without it, from the job-completion log (sacct -c)."""
    base = ["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", ",".join(SACCT_FIELDS)]
    out = _slurm(base, check=False)
    if NO_ACCOUNTING in out.stderr.lower():
        out = _slurm([*base[:1], "-c", *base[1:]], check=False)
    return parse_sacct(out.stdout)


def submit(combos: list[Combination], options: SlurmOptions, log: Callable[[str], None],
           jobs: list[Job] | None = None) -> list[Job]:
    """Submit one job per session, appending each to `jobs` as soon as Slurm has it."""
    scripts = options.results_dir / "slurm"
    scripts.mkdir(parents=True, exist_ok=True)
    noxfile = venvs.REPO_ROOT / "noxfile.py"
    jobs = [] if jobs is None else jobs
    for combo in combos:
        script = scripts / f"{combo.name}.sh"
        script.write_text(job_script(combo, options, sys.executable, noxfile))
        job_log(options, combo).unlink(missing_ok=True)
        submitted_at = time.time()
        out = _slurm(sbatch_argv(combo, options, script, venvs.REPO_ROOT))
        job_id = out.stdout.strip().split(";")[0]
        jobs.append(Job(combo, job_id, submitted_at, job_log(options, combo)))
        log(f"submitted {combo.name} as job {job_id}")
    return jobs


def finalize(job: Job, options: SlurmOptions) -> dict[str, Any]:
    """The job's session JSON, annotated with the job; when the job ended badly, sacct's reason."""
    record = job.record
    state = reason(record) if record else "unknown (no accounting record)"
    job.document = collect.session_document(
        job.combo, options.results_dir, job.submitted_at, record is not None and record["state"] == "COMPLETED",
        f"Slurm job {job.job_id} ended {state}", job.log, record["elapsed_s"] if record else None,
        slurm={**(record or {}), "log": str(job.log), "partition": options.partition})
    return job.document


def _poll(jobs: list[Job], options: SlurmOptions, log: Callable[[str], None]) -> None:
    pending = [j for j in jobs if not j.done]
    states = squeue_states([j.job_id for j in pending])
    ended = []
    for job in pending:
        state, where = states.get(job.job_id, ("GONE", ""))
        if (state, where) != (job.state, job.where):
            job.state, job.where = state, where
            log(f"{job.job_id:>8}  {state:<11} {job.combo.name}  {where}")
        if state not in ACTIVE:
            ended.append(job)
    if ended:
        records = sacct_records([j.job_id for j in ended])
        for job in ended:
            job.unrecorded_polls += 1
            if job.job_id in records:
                job.record = records[job.job_id]
            elif job.state != "GONE" or job.unrecorded_polls > GONE_POLLS:
                # squeue's last word, or a job neither squeue nor sacct knows any more.
                job.record = {"job_id": job.job_id, "name": job.combo.name,
                              "state": "UNKNOWN" if job.state == "GONE" else job.state,
                              "exit_code": "", "elapsed_s": None}
            if job.record is not None:
                document = finalize(job, options)
                log(f"{job.job_id:>8}  {job.record['state']:<11} {job.combo.name}: session {document['status']}")


def cancel(jobs: list[Job], log: Callable[[str], None]) -> None:
    active = [j.job_id for j in jobs if not j.done]
    if active:
        log(f"cancelling {len(active)} job(s): {' '.join(active)}")
        _slurm(["scancel", *active], check=False)


def wait(jobs: list[Job], options: SlurmOptions, log: Callable[[str], None]) -> None:
    """Poll until every job has ended; Ctrl-C or SIGTERM cancels them all, then still collects their JSONs."""
    try:
        while not all(j.done for j in jobs):
            _poll(jobs, options, log)
            if not all(j.done for j in jobs):
                time.sleep(options.poll_s)
    except KeyboardInterrupt:
        cancel_and_collect(jobs, options, log)
        raise


def cancel_and_collect(jobs: list[Job], options: SlurmOptions, log: Callable[[str], None]) -> None:
    cancel(jobs, log)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while not all(j.done for j in jobs) and time.monotonic() < deadline:
        _poll(jobs, options, log)
        time.sleep(1.0)


def run(matrix: Matrix, argv: list[str], log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    combos, options = parse_args(matrix, argv)
    started = time.monotonic()
    jobs: list[Job] = []
    with procs.interrupts_unwind_once():  # a cancelled CI job cancels the Slurm jobs like Ctrl-C
        try:
            submit(combos, options, log, jobs)
        except KeyboardInterrupt:
            cancel_and_collect(jobs, options, log)
            raise
        wait(jobs, options, log)
    documents = [j.document for j in jobs]
    for line in fleet_cost.summary_lines(documents, time.monotonic() - started):
        log(line)
    failed = [d["session"] for d in documents if d["status"] != "passed"]
    if failed:
        raise BenchError(f"{len(failed)} of {len(documents)} session(s) did not pass: {', '.join(failed)} "
                         f"(JSONs in {options.results_dir})")
    return documents

