"""How much the harness costs on top of generation, measured in one run against one warm server.

    python benchmarks/eval_overhead.py [--limit 40] [--rounds 3] [--dataset-dir DIR] [--sweep 1,4,8,16]

On the CPU default (vLLM CPU, SmolLM2) it measures, on the same questions, prompts, stop sequences and
token limit: (a) this project's eval phase (lm-eval through its driver, started ahead with every request
built, as in a session, timed from its go signal to its exit) and (b) a bare asyncio client sending the
same requests at the same concurrency, alternating (b, a) for --rounds rounds so that both see the same
machine load; then (c) lm-eval at num_concurrent=1 once, and one whole session through nox for its
overhead (wall time minus server start minus eval).  Prints every round, the median and spread of a/b,
and the load average before and after; writes all of it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gsm8k_bench.evaluation import harness, server_metrics  # noqa: E402
from gsm8k_bench.matrix.loader import load_matrix  # noqa: E402
from gsm8k_bench.session.commands import CPU_DEFAULT  # noqa: E402
from gsm8k_bench.session.warm_server import warm_server  # noqa: E402


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
            "overhead_inside_s": round(timings["total_s"] - timings["server_ready_s"] - timings["eval_s"], 3),
            "setup_s": round(timings["env_setup_s"] + timings["model_prep_s"], 3)}


def requests_from_samples(samples_file: Path, served_name: str, max_tokens: int) -> list[dict]:
    """The bodies lm-eval's local-completions sent (prompt, stop, max_tokens, greedy), in its order."""
    bodies = []
    for line in samples_file.open():
        row = json.loads(line)
        if row["filter"] != harness.STRICT:
            continue  # one line per filter; one request per question
        arguments = harness._literal(row["arguments"])
        prompt, gen = arguments["gen_args_0"]["arg_0"], arguments["gen_args_0"]["arg_1"]
        # lm-eval's payload exactly: it sends each request as a batch of one prompt (a list), which the
        # server serves through its batch path; a bare string would time a different server path.
        bodies.append({"prompt": [prompt], "model": served_name, "max_tokens": max_tokens, "temperature": 0,
                       "stop": gen["until"], "seed": 1234})
    # In the order lm-eval sends them (longest context first), so (a) and (b) differ only by the harness.
    return sorted(bodies, key=lambda body: -len(body["prompt"][0]))


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset-dir", default=os.environ.get("GSM8K_DATASET_DIR"))
    parser.add_argument("--sweep", default="", help="bare-client concurrencies to compare, e.g. 1,4,8,16")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "eval_overhead.json")
    args = parser.parse_args()

    load_before = load_average()
    matrix = load_matrix(ROOT / "matrix.yaml")
    session_argv = ["--limit", str(args.limit)] + (["--dataset-dir", args.dataset_dir] if args.dataset_dir else [])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        session = session_run(args, tmp / "session")
        with warm_server(matrix, session_argv, tmp / "warm") as warm:
            concurrency = warm.plan.settings.concurrency

            def lm_eval(name: str, **settings) -> float:
                return warm.gated_eval(warm.lm_eval_argv(tmp / name / "lm-eval", **settings), tmp / name)

            lm_eval("warmup")  # fills the prefix cache; gives the exact prompts
            samples = next((tmp / "warmup").rglob(f"samples_{warm.task}_*.jsonl"))
            bodies = requests_from_samples(samples, warm.plan.combo.model.name, warm.plan.settings.max_gen_toks)
            (tmp / "requests.json").write_text(json.dumps(bodies))
            url = f"{warm.plan.base_url}{warm.plan.settings.endpoint}"

            def bare(n: int) -> float:
                out = subprocess.run([str(warm.plan.lm_eval_python), str(ROOT / "benchmarks" / "bare_client.py"),
                                      str(tmp / "requests.json"), url, str(n)],
                                     capture_output=True, text=True, check=True)
                return float(out.stdout.strip())

            def generated_tokens() -> float:
                """The server's count of generated tokens: (a) and (b) are compared per token too, since
                greedy outputs can differ in length between two batch compositions."""
                return server_metrics.counts("vllm", server_metrics.scrape(warm.plan.base_url)).step_tokens

            print(f"{CPU_DEFAULT}: {len(bodies)} questions, concurrency {concurrency}; "
                  f"load average before {load_before}", flush=True)
            rounds = []
            for i in range(1, args.rounds + 1):
                tokens = [generated_tokens()]
                b = bare(concurrency)
                tokens.append(generated_tokens())
                a = lm_eval(f"a{i}")
                tokens.append(generated_tokens())
                b_tokens, a_tokens = tokens[1] - tokens[0], tokens[2] - tokens[1]
                per_token = (a / a_tokens) / (b / b_tokens)
                rounds.append({"a_s": round(a, 3), "b_s": round(b, 3), "a_over_b": round(a / b, 3),
                               "a_tokens": a_tokens, "b_tokens": b_tokens, "a_over_b_per_token": round(per_token, 3),
                               "load_average": load_average()})
                print(f"round {i}: (b) bare client {b:7.2f} s {b_tokens:6.0f} tokens   (a) eval phase {a:7.2f} s "
                      f"{a_tokens:6.0f} tokens   a/b = {a / b:.3f} (per token {per_token:.3f})   "
                      f"load {rounds[-1]['load_average'][0]}", flush=True)
            c = lm_eval("c", concurrency=1)
            sweep = {int(n): round(bare(int(n)), 3) for n in args.sweep.split(",") if n}
    load_after = load_average()

    ratios = [r["a_over_b"] for r in rounds]
    a_median = statistics.median(r["a_s"] for r in rounds)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "command": " ".join(["python", "benchmarks/eval_overhead.py", *sys.argv[1:]]),
        "session": CPU_DEFAULT, "questions": len(bodies), "concurrency": concurrency,
        "load_average_before": load_before, "load_average_after": load_after,
        "rounds": rounds,
        "a_over_b_rounds": ratios, "a_over_b_median": round(statistics.median(ratios), 3),
        "a_over_b_spread": spread(ratios),
        "a_over_b_per_token_spread": spread([r["a_over_b_per_token"] for r in rounds]),
        "a_eval_phase_s": spread([r["a_s"] for r in rounds]),
        "b_bare_client_s": spread([r["b_s"] for r in rounds]),
        "c_lm_eval_concurrency_1_s": round(c, 3), "c_over_a_median": round(c / a_median, 3),
        "session_run": session,
        "session_overhead_s": session["overhead_s"], "session_overhead_inside_s": session["overhead_inside_s"],
        "bare_client_sweep_s": sweep,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    ab = report["a_over_b_spread"]
    print(f"a/b median {ab['median']:.3f} (min {ab['min']:.3f}, max {ab['max']:.3f}) over {len(rounds)} rounds")
    per_token = report["a_over_b_per_token_spread"]
    print(f"a/b per generated token: median {per_token['median']:.3f} (min {per_token['min']:.3f}, "
          f"max {per_token['max']:.3f})")
    print(f"(a) eval phase median {a_median:.2f} s; (c) lm-eval concurrency 1: {c:.2f} s, c/a = {c / a_median:.2f}")
    print(f"session overhead (wall - server ready - eval): {session['overhead_s']:.2f} s "
          f"(inside the session: {session['overhead_inside_s']:.2f} s; setup {session['setup_s']:.2f} s)")
    for n, seconds in sweep.items():
        print(f"bare client at concurrency {n:>3}: {seconds:8.2f} s")
    print(f"load average before {load_before}, after {load_after}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
