"""Phase times of the CPU default session, measured in one invocation: a first and a second run.

    python benchmarks/phase_times.py [--dataset-dir DIR] [--limit N] [--fresh-cache]

Prints, per run: environment setup, model preparation, server ready, eval, reading lm-eval's outputs,
and the rest of the wall time (nox start-up, planning, writing the JSON, stopping the server).
--fresh-cache builds the environments in a new cache folder, to measure a first run on a new machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SESSION = "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1"
PHASES = ("env_setup_s", "model_prep_s", "server_ready_s", "eval_s", "results_s")


def run_once(results_dir: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, float]:
    argv = [sys.executable, "-m", "nox", "-s", SESSION, "--", "--results-dir", str(results_dir),
            "--limit", str(args.limit)]
    if args.dataset_dir:
        argv += ["--dataset-dir", args.dataset_dir]
    start = time.monotonic()
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if out.returncode != 0:
        sys.exit(f"{SESSION} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    timings = json.loads((results_dir / f"{SESSION}.json").read_text())["timings"]
    phases = {name: timings[name] for name in PHASES}
    phases["other_s"] = wall - sum(phases.values())
    phases["wall_s"] = wall
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-dir", default=os.environ.get("GSM8K_DATASET_DIR"))
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--fresh-cache", action="store_true")
    args = parser.parse_args()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        if args.fresh_cache:
            env["GSM8K_BENCH_CACHE"] = str(Path(tmp) / "cache")
        runs = [run_once(Path(tmp) / f"run{i}", args, env) for i in (1, 2)]
    print(f"{SESSION}, --limit {args.limit}, {os.cpu_count()} CPUs")
    print(f"{'phase':<16}{'first run (s)':>15}{'second run (s)':>16}")
    for name in (*PHASES, "other_s", "wall_s"):
        print(f"{name:<16}{runs[0][name]:>15.2f}{runs[1][name]:>16.2f}")
    print(f"second run's setup (environments + model): {runs[1]['env_setup_s'] + runs[1]['model_prep_s']:.2f} s")


if __name__ == "__main__":
    main()
