"""`nox -l` over a generated matrix of 1,000 combinations: the time users wait for a listing.

    python benchmarks/matrix_scale.py [--models 100] [--repeat 5]

Generates 100 models x 5 GPU runners x 2 frameworks (1,000 sessions) from this repository's own
runners, frameworks and precisions, then times `nox -l` on it and on the real matrix.yaml.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def generated_matrix(models: int) -> dict:
    base = yaml.safe_load((ROOT / "matrix.yaml").read_text())
    base.pop("exclude", None)
    base["models"] = {
        f"model{i:03d}": {"checkpoint": f"org/model-{i}", "runners": ["h100", "h200", "b200", "mi300x", "mi325x"],
                          "frameworks": ["vllm", "sglang"], "precisions": ["fp16"], "tp": [1]}
        for i in range(models)
    }
    return base


def time_listing(matrix: Path, repeat: int) -> tuple[float, int]:
    env = {**os.environ, "GSM8K_MATRIX": str(matrix)}
    times, count = [], 0
    for _ in range(repeat):
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "nox", "-l"], cwd=ROOT, env=env, capture_output=True,
                             text=True, check=True)
        times.append(time.monotonic() - start)
        count = sum(line.startswith("- gsm8k-") for line in out.stdout.splitlines())
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "matrix.yaml"
        big.write_text(yaml.safe_dump(generated_matrix(args.models), sort_keys=False))
        big_s, big_n = time_listing(big, args.repeat)
    real_s, real_n = time_listing(ROOT / "matrix.yaml", args.repeat)
    print(f"nox -l, median of {args.repeat}: {big_n} sessions {big_s:.3f} s; matrix.yaml ({real_n}) {real_s:.3f} s;"
          f" ratio {big_s / real_s:.2f}")


if __name__ == "__main__":
    main()
