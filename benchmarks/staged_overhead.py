"""What staging costs when it never stops: a staged pass whose every look answers `continue` against one
plain pass over the same questions, on one warm server (issue #27's goal: staged / plain <= 1.05).

    python benchmarks/staged_overhead.py [--limit 160] [--looks 8] [--rounds 2] [--num-fewshot N] [--dataset-dir DIR]

On the CPU default (vLLM CPU, SmolLM2), started once: a warm-up pass (fills the prefix cache), then
--rounds rounds of (A) a plain pass and (B) a staged pass, alternating A B A B so that warm-up and drift
weigh on both alike.  Both are the session's eval phase (WarmServer.gated_eval: lm-eval started ahead with
every request built, timed from its go to its exit).  The staged pass is lm-eval's client in its `staged`
mode with the session's stages (staging.Staging: the seeded order, the design's stage ends); a thread
answers each look `continue` the moment its file appears, polling as often as the session does.  Prints
each pass's seconds and generated tokens (the server's counter: greedy answers can differ in length between
batch compositions), the ratio B/A per round, per token, and their medians, and when each look came in;
writes it all as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gsm8k_bench.evaluation import server_metrics  # noqa: E402
from gsm8k_bench.matrix.loader import load_matrix  # noqa: E402
from gsm8k_bench.session import run, staging  # noqa: E402
from gsm8k_bench.session.commands import CPU_DEFAULT  # noqa: E402
from gsm8k_bench.session.warm_server import WarmServer, warm_server  # noqa: E402


def answer_continue(stages: staging.Staging, go: list[float], seen: list[float]) -> None:
    """Staging.poll's part that the client waits for, every look answered `continue`; records when each
    look's file appeared, in seconds after the go (go[0], set just before it)."""
    for look in range(1, len(stages.ends) + 1):
        path = stages.directory / f"look-{look}.json"
        while not path.exists():
            time.sleep(run.ANSWERED_POLL_S)
        seen.append(time.monotonic() - go[0])
        decision = stages.directory / f"decision-{look}"
        decision.with_suffix(".tmp").write_text(staging.CONTINUE)
        decision.with_suffix(".tmp").replace(decision)


def plain(warm: WarmServer, work: Path) -> float:
    return warm.gated_eval(warm.lm_eval_argv(work / "lm-eval"), work)


def staged(warm: WarmServer, work: Path) -> tuple[float, list[float]]:
    stages = staging.Staging.of(warm.plan)
    stages.write_plan()  # a fresh folder: no earlier pass's looks or decisions
    go: list[float] = []
    seen: list[float] = []
    decider = threading.Thread(target=answer_continue, args=(stages, go, seen), daemon=True)

    def start_decider() -> None:
        go.append(time.monotonic())
        decider.start()

    seconds = warm.gated_eval([*warm.lm_eval_argv(work / "lm-eval"), "--stages", str(stages.directory)], work,
                              before_go=start_decider)
    decider.join(timeout=1)
    if len(seen) != len(stages.ends):
        sys.exit(f"the staged pass took {len(seen)} of {len(stages.ends)} looks")
    return seconds, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=160)
    parser.add_argument("--looks", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples (default: the session's)")
    parser.add_argument("--dataset-dir", default=os.environ.get("GSM8K_DATASET_DIR"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "staged_overhead.json")
    args = parser.parse_args()

    load_before = [round(x, 2) for x in os.getloadavg()]
    session_argv = ["--limit", str(args.limit), "--looks", str(args.looks)]
    session_argv += ["--dataset-dir", args.dataset_dir] if args.dataset_dir else []
    session_argv += ["--num-fewshot", str(args.num_fewshot)] if args.num_fewshot is not None else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with warm_server(load_matrix(ROOT / "matrix.yaml"), session_argv, tmp / "warm") as warm:
            ends = staging.Staging.of(warm.plan).ends
            print(f"{CPU_DEFAULT}: {args.limit} questions, {len(ends)} stages ending at {ends}, concurrency "
                  f"{warm.plan.settings.concurrency}, {warm.plan.settings.num_fewshot}-shot; load average "
                  f"before {load_before}", flush=True)

            def tokens() -> float:
                return server_metrics.counts("vllm", server_metrics.scrape(warm.plan.base_url)).step_tokens

            warmup = plain(warm, tmp / "warmup")
            print(f"warm-up plain pass {warmup:7.2f} s", flush=True)
            rounds = []
            for i in range(1, args.rounds + 1):
                counts = [tokens()]
                a = plain(warm, tmp / f"a{i}")
                counts.append(tokens())
                b, looks = staged(warm, tmp / f"b{i}")
                counts.append(tokens())
                a_tokens, b_tokens = counts[1] - counts[0], counts[2] - counts[1]
                per_token = (b / b_tokens) / (a / a_tokens)
                rounds.append({"a_plain_s": round(a, 3), "b_staged_s": round(b, 3), "b_over_a": round(b / a, 3),
                               "a_tokens": a_tokens, "b_tokens": b_tokens,
                               "b_over_a_per_token": round(per_token, 3),
                               "looks_at_s": [round(s, 2) for s in looks],
                               "load_average": [round(x, 2) for x in os.getloadavg()]})
                print(f"round {i}: (A) plain {a:7.2f} s {a_tokens:6.0f} tokens   (B) staged {b:7.2f} s "
                      f"{b_tokens:6.0f} tokens   B/A = {b / a:.3f} (per token {per_token:.3f})   looks at "
                      f"{', '.join(f'{s:.1f}' for s in looks)} s   load {rounds[-1]['load_average'][0]}", flush=True)
            concurrency, fewshot = warm.plan.settings.concurrency, warm.plan.settings.num_fewshot
    load_after = [round(x, 2) for x in os.getloadavg()]

    ratios = [r["b_over_a"] for r in rounds]
    per_tokens = [r["b_over_a_per_token"] for r in rounds]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "command": " ".join(["python", "benchmarks/staged_overhead.py", *sys.argv[1:]]),
        "session": CPU_DEFAULT, "questions": args.limit, "stage_ends": ends, "concurrency": concurrency,
        "num_fewshot": fewshot, "warmup_plain_s": round(warmup, 3),
        "load_average_before": load_before, "load_average_after": load_after, "rounds": rounds,
        "b_over_a_median": round(statistics.median(ratios), 3),
        "b_over_a_per_token_median": round(statistics.median(per_tokens), 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"staged / plain: median {report['b_over_a_median']:.3f} (rounds {', '.join(map(str, ratios))}); "
          f"per generated token {report['b_over_a_per_token_median']:.3f}")
    print(f"load average before {load_before}, after {load_after}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
