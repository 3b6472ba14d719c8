"""Phase times of the CPU default session, median over rounds, and what the server's start consists of.

    python benchmarks/phase_times.py [--rounds 3] [--dataset-dir DIR] [--limit N] [--fresh-cache]

Runs the session --rounds times through nox and prints, per round and as the median: environment setup,
model preparation, server ready, eval, reading lm-eval's outputs, the rest of the wall time (nox start-up,
planning, writing the JSON, stopping the server), and the time before the first request with its share of
the wall time.  The server's start is split by the server log's own timings: the API server's imports,
the engine process starting (its imports), the worker starting and initialising the model, weight load,
engine init (profile, KV cache, warmup), the API server's start after it, and the rest until the
readiness check saw the server answer.
--fresh-cache builds the environments in a new cache folder first, to measure a first run on a new machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SESSION = "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1"
PHASES = ("env_setup_s", "model_prep_s", "server_ready_s", "eval_s", "results_s")
SERVER_PARTS = ("api_server_imports_s", "engine_process_start_s", "worker_start_model_init_s", "weight_load_s",
                "engine_init_s", "api_server_start_s", "until_ready_s")
STAMP = re.compile(r"^\((\w+) pid=\d+\) \w+ (\d\d-\d\d \d\d:\d\d:\d\d) .*?\] (.*)$")


def server_parts(log: str, server_start: dt.datetime, ready_s: float) -> dict[str, float]:
    """The server's start from vLLM's own log lines (timestamps to the second, and its `took` figures)."""
    stamps, took = {}, {}
    for line in log.splitlines():
        match = STAMP.match(line)
        if not match:
            continue
        when = dt.datetime.strptime(f"{server_start.year}-{match.group(2)}", "%Y-%m-%d %H:%M:%S")
        when = when.replace(tzinfo=server_start.tzinfo)
        process, text = match.group(1), match.group(3)
        if process == "APIServer":
            stamps.setdefault("first_api_line", when)
        if text.startswith("Initializing a V1 LLM engine"):
            stamps["engine"] = when
        elif text.startswith("Starting vLLM server on"):
            stamps["listening"] = when
        elif found := re.match(r"Loading weights took ([\d.]+) s", text):
            stamps["weights"], took["weights"] = when, float(found.group(1))
        elif text.startswith("init engine (profile, create kv cache, warmup model) took"):
            stamps["engine_ready"] = when
    if len(stamps) < 5 or not took:
        sys.exit(f"the server log lacks vLLM's start-up lines (found {sorted(stamps) + sorted(took)})")
    between = [(stamps[b] - stamps[a]).total_seconds()
               for a, b in (("engine", "weights"), ("weights", "engine_ready"), ("engine_ready", "listening"))]
    imports = (stamps["first_api_line"] - server_start).total_seconds()
    engine = (stamps["engine"] - stamps["first_api_line"]).total_seconds()
    parts = dict(zip(SERVER_PARTS[:-1], (imports, engine, between[0] - took["weights"], took["weights"],
                                         between[1], between[2]), strict=True))
    parts["until_ready_s"] = ready_s - sum(parts.values())
    return parts


def run_once(results_dir: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, float]:
    argv = [sys.executable, "-m", "nox", "-s", SESSION, "--", "--results-dir", str(results_dir)]
    argv += ["--limit", str(args.limit)] if args.limit else []
    argv += ["--dataset-dir", args.dataset_dir] if args.dataset_dir else []
    start = time.monotonic()
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if out.returncode != 0:
        sys.exit(f"{SESSION} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    document = json.loads((results_dir / f"{SESSION}.json").read_text())
    timings = document["timings"]
    phases = {name: timings[name] for name in PHASES}
    phases["other_s"] = wall - sum(phases.values())
    phases["wall_s"] = wall
    # Before the go: nox start-up and planning (outside the session's own clock), setup and the server's start.
    phases["before_first_request_s"] = (wall - timings["total_s"] + timings["env_setup_s"] + timings["model_prep_s"]
                                        + timings["server_ready_s"])
    phases["before_first_request_share"] = phases["before_first_request_s"] / wall
    server_start = (dt.datetime.fromisoformat(document["environment"]["started_at"])
                    + dt.timedelta(seconds=timings["env_setup_s"] + timings["model_prep_s"]))
    log = Path(document["artifacts"]["server_log"]).read_text(errors="replace")
    return {**phases, **server_parts(log, server_start, timings["server_ready_s"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset-dir", default=os.environ.get("GSM8K_DATASET_DIR"))
    parser.add_argument("--limit", type=int, help="questions (default: the session's own, 20)")
    parser.add_argument("--fresh-cache", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "phase_times.json")
    args = parser.parse_args()
    env = dict(os.environ)
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        if args.fresh_cache:
            env["GSM8K_BENCH_CACHE"] = str(Path(tmp) / "cache")
        runs = []
        for i in range(1, args.rounds + 1):
            runs.append(run_once(Path(tmp) / f"run{i}", args, env))
            print(f"round {i}: wall {runs[-1]['wall_s']:.2f} s, before the first request "
                  f"{runs[-1]['before_first_request_s']:.2f} s, eval {runs[-1]['eval_s']:.2f} s", flush=True)
    load_after = [round(x, 2) for x in os.getloadavg()]
    names = (*PHASES, "other_s", "wall_s", "before_first_request_s", "before_first_request_share", *SERVER_PARTS)
    median = {name: round(statistics.median(run[name] for run in runs), 3) for name in names}
    print(f"{SESSION}, --limit {args.limit or 'default'}, {os.cpu_count()} CPUs, {args.rounds} rounds; "
          f"load average before {load_before}, after {load_after}")
    print(f"{'phase':<28}" + "".join(f"{'round ' + str(i):>10}" for i in range(1, len(runs) + 1)) + f"{'median':>10}")
    for name in names:
        print(f"{name:<28}" + "".join(f"{run[name]:>10.2f}" for run in runs) + f"{median[name]:>10.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"session": SESSION, "command": " ".join(["python", *sys.argv]),
                                    "cpus": os.cpu_count(), "load_average_before": load_before,
                                    "load_average_after": load_after, "median": median,
                                    "rounds": [{k: round(v, 3) for k, v in run.items()} for run in runs]},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
