"""How much the harness costs on top of generation, measured in one run against one server.

    python benchmarks/eval_overhead.py [--limit 40] [--dataset-dir DIR] [--sweep 1,4,8,16]

On the CPU default (vLLM CPU, SmolLM2) it measures, on the same questions, prompts, stop sequences and
token limit: (a) this project's eval phase (lm-eval through its driver, imported ahead as
in a session and timed from its go signal), (b) a bare asyncio client
sending the same requests at the same concurrency, (c) lm-eval at num_concurrent=1; then prints
a/b, c/a, the whole-session overhead (wall time minus server start minus eval), the second run's
setup time, and an optional concurrency sweep of the bare client.  Writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gsm8k_bench import envs, evaluate, procs  # noqa: E402
from gsm8k_bench.cli import CPU_DEFAULT  # noqa: E402
from gsm8k_bench.launchers import reserve_port, wait_ready  # noqa: E402
from gsm8k_bench.launchers.process import process_server  # noqa: E402
from gsm8k_bench.matrix import load_matrix  # noqa: E402
from gsm8k_bench.options import parse_session_args  # noqa: E402
from gsm8k_bench.session import HOST, plan_session, prepare_environments, prepare_model  # noqa: E402


def session_run(args, results_dir: Path) -> dict[str, float]:
    argv = [sys.executable, "-m", "nox", "-s", CPU_DEFAULT, "--", "--limit", str(args.limit),
            "--results-dir", str(results_dir)] + (["--dataset-dir", args.dataset_dir] if args.dataset_dir else [])
    start = time.monotonic()
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    if out.returncode != 0:
        sys.exit(f"session failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    timings = json.loads((results_dir / f"{CPU_DEFAULT}.json").read_text())["timings"]
    return {**timings, "wall_s": round(wall, 3),
            "overhead_s": round(wall - timings["server_ready_s"] - timings["eval_s"], 3),
            "setup_s": round(timings["env_setup_s"] + timings["model_prep_s"], 3)}


def timed_eval(argv: list[str], work: Path) -> float:
    """As a session runs lm-eval: started ahead, timed from the go file to its exit."""
    go, log = work / "go", work / "lm-eval.log"
    work.mkdir(parents=True)
    proc = procs.start([*argv, "--start-when", str(go)], log)
    while "lm-eval imported" not in log.read_text() and proc.poll() is None:
        time.sleep(0.1)
    start = time.monotonic()
    go.touch()
    if proc.wait() != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{procs.tail(log)}")
    return time.monotonic() - start


def requests_from_samples(samples_file: Path, served_name: str, max_tokens: int) -> list[dict]:
    """The bodies lm-eval's local-completions sent (prompt, stop, max_tokens, greedy)."""
    bodies = []
    for line in samples_file.open():
        row = json.loads(line)
        if row["filter"] != evaluate.STRICT:
            continue  # one line per filter; one request per question
        arguments = ast.literal_eval(row["arguments"]) if isinstance(row["arguments"], str) else row["arguments"]
        prompt, gen = arguments["gen_args_0"]["arg_0"], arguments["gen_args_0"]["arg_1"]
        bodies.append({"model": served_name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "stop": gen["until"], "seed": 1234})
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--dataset-dir", default=os.environ.get("GSM8K_DATASET_DIR"))
    parser.add_argument("--sweep", default="", help="bare-client concurrencies to compare, e.g. 1,4,8,16")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "eval_overhead.json")
    args = parser.parse_args()

    matrix = load_matrix(ROOT / "matrix.yaml")
    combo = matrix.get(CPU_DEFAULT)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        first, second = session_run(args, tmp / "s1"), session_run(args, tmp / "s2")

        options = parse_session_args(combo.name, ["--limit", str(args.limit), "--results-dir", str(tmp / "b")]
                                     + (["--dataset-dir", args.dataset_dir] if args.dataset_dir else []))
        port = reserve_port(HOST, 8000)  # claimed until this process ends
        plan = plan_session(combo, options, matrix.defaults, os.environ, port=port.port)
        prepare_environments(plan, print)
        prepare_model(plan)
        stock = evaluate.stock_task_file(envs.env_dir(envs.LM_EVAL))
        task = evaluate.write_task(plan.dataset_dir, plan.task_dir, stock)
        settings = plan.settings

        def lm_eval(out: str, concurrency: int) -> float:
            argv = evaluate.lm_eval_command(plan.lm_eval_python, replace(settings, concurrency=concurrency),
                                            served_name=combo.model.name, base_url=plan.base_url,
                                            output_dir=tmp / out / "lm-eval", task=task,
                                            include_path=plan.task_dir)
            return timed_eval(argv, tmp / out)

        with process_server(plan.server_argv, base_url=plan.base_url, env={**os.environ, **plan.server_env},
                            log_path=tmp / "server.log") as server:
            wait_ready(server, combo.model.name, plan.start_timeout_s, print)
            lm_eval("warmup", settings.concurrency)  # fills the prefix cache; gives the exact prompts
            samples = next((tmp / "warmup").rglob(f"samples_{task}_*.jsonl"))
            bodies = requests_from_samples(samples, combo.model.name, settings.max_gen_toks)
            (tmp / "requests.json").write_text(json.dumps(bodies))
            url = f"{plan.base_url}{settings.endpoint}"

            def bare(concurrency: int) -> float:
                out = subprocess.run([str(plan.lm_eval_python), str(ROOT / "benchmarks" / "bare_client.py"),
                                      str(tmp / "requests.json"), url, str(concurrency)],
                                     capture_output=True, text=True, check=True)
                return float(out.stdout.strip())

            b = bare(settings.concurrency)
            a = lm_eval("a", settings.concurrency)
            c = lm_eval("c", 1)
            sweep = {int(n): round(bare(int(n)), 3) for n in args.sweep.split(",") if n}

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "session": CPU_DEFAULT, "questions": len(bodies), "concurrency": settings.concurrency,
        "a_eval_phase_s": round(a, 3), "b_bare_client_s": round(b, 3), "c_lm_eval_concurrency_1_s": round(c, 3),
        "a_over_b": round(a / b, 3), "c_over_a": round(c / a, 3),
        "session_overhead_s": second["overhead_s"], "session_overhead_inside_s":
            round(second["total_s"] - second["server_ready_s"] - second["eval_s"], 3),
        "first_run_setup_s": first["setup_s"], "second_run_setup_s": second["setup_s"],
        "bare_client_sweep_s": sweep,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{CPU_DEFAULT}: {len(bodies)} questions, concurrency {settings.concurrency}, {report['machine']}")
    print(f"(a) eval phase            {a:8.2f} s")
    print(f"(b) bare asyncio client   {b:8.2f} s    a/b = {a / b:.3f}")
    print(f"(c) lm-eval concurrency 1 {c:8.2f} s    c/a = {c / a:.2f}")
    print(f"session overhead (wall - server ready - eval): {second['overhead_s']:.2f} s "
          f"(inside the session: {report['session_overhead_inside_s']:.2f} s)")
    print(f"setup: first run {first['setup_s']:.2f} s, second run {second['setup_s']:.2f} s")
    for n, seconds in sweep.items():
        print(f"bare client at concurrency {n:>3}: {seconds:8.2f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
