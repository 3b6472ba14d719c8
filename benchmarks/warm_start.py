"""Warm restarts on CPU: the CPU default's server started on a fresh warm-cache folder (cold), again on the
same folder (warm), and on another fresh folder (control: the OS file cache is as warm as for the second
start, only the framework caches are empty), measured in one invocation, per mode:
eager (--enforce-eager, the matrix's setting), compiled (torch.compile, vLLM's default AOT compile cache)
and compiled-no-aot (VLLM_USE_AOT_COMPILE=0).

    python benchmarks/warm_start.py [--modes eager compiled ...] [--out FILE]

Prints per mode the seconds to ready, warm/cold and warm/control, and what vLLM logged about its compile
cache (AOT artifacts saved, loaded, or recompiled and why).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gsm8k_bench.matrix.loader import load_matrix  # noqa: E402
from gsm8k_bench.serving import compile_caches  # noqa: E402
from gsm8k_bench.serving.launchers import pick_port, wait_ready  # noqa: E402
from gsm8k_bench.serving.launchers.process import process_server  # noqa: E402
from gsm8k_bench.session.options import parse_session_args  # noqa: E402
from gsm8k_bench.session.plan import HOST, plan_session  # noqa: E402

SESSION = "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1"
MODES = {"eager": {}, "compiled": {}, "compiled-no-aot": {"VLLM_USE_AOT_COMPILE": "0"}}
# What vLLM logs about its compile cache, and torch.compile's own time.
CACHE_LINES = re.compile(r"Compiling model again due to a load failure.*|Directly load AOT compilation.*|"
                         r"saved AOT compiled function.*|torch\.compile took [\d.]+ s.*|"
                         r"Compilation (?:took|finished).*|Using cache directory: .*", re.IGNORECASE)


def start_once(argv: list[str], env: dict[str, str], log: Path, served: str) -> tuple[float, list[str]]:
    port = pick_port(HOST, 8000)
    argv = [*argv[:argv.index("--port") + 1], str(port), *argv[argv.index("--port") + 2:]]
    with process_server(argv, base_url=f"http://{HOST}:{port}", env=env, log_path=log) as server:
        ready = wait_ready(server, served, 900, print)
    text = log.read_text(errors="replace")
    return ready, sorted({m.group(0)[:400] for m in CACHE_LINES.finditer(text)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    matrix = load_matrix(ROOT / "matrix.yaml")
    combo = matrix.get(SESSION)
    plan = plan_session(combo, parse_session_args(SESSION, []), matrix.defaults, os.environ)
    report = {"session": SESSION, "cpus": os.cpu_count(), "modes": {}}
    with tempfile.TemporaryDirectory(prefix="warm-start-") as tmp:
        for mode in args.modes:
            argv = [a for a in plan.server_argv if mode == "eager" or a != "--enforce-eager"]
            runs = []
            for attempt, folder in (("cold", "a"), ("warm", "a"), ("control", "b")):
                env = {**os.environ, **plan.server_env, **MODES[mode],
                       **compile_caches.environment(Path(tmp) / mode / folder)}
                t = time.monotonic()
                ready, lines = start_once(argv, env, Path(tmp) / f"{mode}-{attempt}.log", combo.model.name)
                runs.append({"attempt": attempt, "ready_s": round(ready, 1),
                             "wall_s": round(time.monotonic() - t, 1), "cache_log": lines})
            cache = Path(tmp) / mode / "a"
            files = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
            cold, warm_run, control = (r["ready_s"] for r in runs)
            report["modes"][mode] = {"runs": runs, "warm_over_cold": round(warm_run / cold, 3),
                                     "warm_over_control": round(warm_run / control, 3), "cache_files": len(files),
                                     "cache_sample": files[:12]}
    print(json.dumps(report, indent=2))
    for mode, result in report["modes"].items():
        cold, warm_run, control = (r["ready_s"] for r in result["runs"])
        print(f"{mode:<16} cold {cold:>6.1f} s  warm {warm_run:>6.1f} s  control {control:>6.1f} s  "
              f"warm/cold {result['warm_over_cold']:.2f}  warm/control {result['warm_over_control']:.2f}  "
              f"({result['cache_files']} cache files)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
