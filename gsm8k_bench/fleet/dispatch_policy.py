"""What the plan job enforces beyond matrix.yaml's vocabulary: which serving images a dispatch may run
on the GPU fleet, and a time budget that ends every cell's own timeouts before GitHub's.

Images: the fleet runs an image with the HF token, host networking and host IPC, so `image` may only
come from a repository matrix.yaml lists for that framework and runner (or vendor): any tag of it (the
publisher is the one reviewed) or a digest (`repo@sha256:<64 hex>`, immutable content).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from gsm8k_bench.core.errors import ConfigError, shorten
from gsm8k_bench.matrix.types import Combination, Defaults, Matrix

DIGEST = re.compile(r"^(?P<repo>[^@]+)@sha256:[0-9a-f]{64}$")
WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "gsm8k-benchmark.yml"
BENCHMARK_JOB = "benchmark"
# Checkout, install, environments, image pull, cleanup and upload: everything but server start and eval.
SETUP_MARGIN_S = 30 * 60
MIN_EVAL_S = 30 * 60


def repository(image: str) -> str:
    """`registry/org/name` without its tag or digest (a port in the registry is not a tag)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    return name.rsplit(":", 1)[0] if ":" in last[-1] else name


def allowed_images(matrix: Matrix, combo: Combination) -> list[str]:
    """matrix.yaml's images for the combination's framework on its runner or vendor (an ad-hoc combination
    carries the requested image itself, so the listed ones come from the matrix)."""
    images = matrix.frameworks[combo.framework.name].images
    return sorted({images[key] for key in (combo.runner.name, combo.runner.vendor) if key in images})


def check_image(image: str, matrix: Matrix, combos: Iterable[Combination]) -> None:
    """Raise unless the image comes from a repository allowed for every selected combination."""
    for combo in combos:
        allowed = allowed_images(matrix, combo)
        repos = sorted({repository(a) for a in allowed})
        pinned = DIGEST.match(image)
        if (pinned.group("repo") if pinned else repository(image)) in repos:
            continue
        raise ConfigError(
            f"input 'image': {shorten(image)} is not from a repository allowed for {combo.framework.name} on "
            f"{combo.runner.name}. Allowed repositories: {', '.join(repos) or '(none listed in matrix.yaml)'} "
            "(any tag, or a digest pinned as REPO@sha256:<64 hex>); other repositories are added to "
            "matrix.yaml by review")


def job_timeout_minutes(workflow: Path = WORKFLOW) -> int:
    jobs = yaml.safe_load(workflow.read_text(encoding="utf-8"))["jobs"]
    return int(jobs[BENCHMARK_JOB]["timeout-minutes"])


def eval_timeout_s(combo: Combination, defaults: Defaults, job_minutes: int) -> int:
    """The eval's own limit, so that server start + eval + setup end before GitHub kills the job (a
    killed job writes no JSON).  A start timeout leaving too little for the eval is refused."""
    start_s = combo.runner.start_timeout_s or defaults.start_timeout_s
    budget = job_minutes * 60 - SETUP_MARGIN_S - start_s
    if budget < MIN_EVAL_S:
        raise ConfigError(
            f"{combo.name}: start timeout {start_s:.0f} s + setup {SETUP_MARGIN_S} s leave {budget:.0f} s of the "
            f"{BENCHMARK_JOB} job's timeout-minutes {job_minutes} for the eval (at least {MIN_EVAL_S} s needed); "
            f"raise timeout-minutes in {WORKFLOW.name} or lower start_timeout_s in matrix.yaml")
    return math.floor(budget)
