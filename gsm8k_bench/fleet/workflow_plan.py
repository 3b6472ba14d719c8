"""The workflow's plan step: dispatch inputs -> a validated job matrix, one row per session.

Inputs arrive through environment variables (never spliced into a script), are checked against
matrix.yaml's vocabulary and a safe pattern, and only then become arguments.  Every row names the
nox session that reruns it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping

from gsm8k_bench.core.errors import ConfigError, shorten
from gsm8k_bench.fleet import dispatch_policy
from gsm8k_bench.matrix.combinations import adhoc_combination
from gsm8k_bench.matrix.selection import check_keywords, select
from gsm8k_bench.matrix.types import Combination, Matrix

GITHUB_MAX_JOBS = 256
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
LOCAL_PATH = re.compile(r"^(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+/?$")  # absolute; no '..' or '.' parts
SESSION_LIST = re.compile(r"^gsm8k-[a-z0-9.-]+( +gsm8k-[a-z0-9.-]+)*$")
TAG_LIST = re.compile(r"^tags?: *[a-z0-9.-]+( +[a-z0-9.-]+)*$")
INPUTS = ("sessions", "model", "runner", "image", "framework", "precision", "tp", "num_fewshot", "limit")


def _keyword_expression(text: str) -> str:
    """A nox -k expression made only of names, and/or/not and parentheses (nox evaluates it)."""
    check_keywords(text, "input 'sessions'")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise ConfigError(f"input 'sessions': {shorten(text)} is neither session names, 'tags: ...', nor a "
                          "-k expression") from None
    allowed = (ast.Expression, ast.BoolOp, ast.UnaryOp, ast.Name, ast.And, ast.Or, ast.Not, ast.Load)
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            raise ConfigError(f"input 'sessions': -k expressions may use names, and, or, not and "
                              f"parentheses only; found {type(node).__name__}")
    return text


def _int_input(name: str, text: str, minimum: int, maximum: int) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", text):
        raise ConfigError(f"input '{name}': expected a whole number, got {text!r}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ConfigError(f"input '{name}': must be between {minimum} and {maximum}, got {value}")
    return value


def read_inputs(environ: Mapping[str, str]) -> dict[str, str]:
    """INPUT_<NAME> variables, stripped; the workflow maps each dispatch input to one."""
    return {name: environ.get(f"INPUT_{name.upper()}", "").strip() for name in INPUTS}


def _session_args(inputs: dict[str, str]) -> list[str]:
    args = ["--num-fewshot", str(_int_input("num-fewshot", inputs["num_fewshot"] or "5", 0, 25))]
    if inputs["limit"]:
        args += ["--limit", str(_int_input("limit", inputs["limit"], 1, 100000))]
    if inputs["image"]:
        if not IMAGE_REF.match(inputs["image"]):
            raise ConfigError(f"input 'image': {inputs['image']!r} is not an image reference "
                              f"({IMAGE_REF.pattern})")
        args += ["--image", inputs["image"]]
    return args


def _adhoc(matrix: Matrix, inputs: dict[str, str]) -> tuple[Combination, str, list[str]]:
    """The combination, the nox session that runs it and that session's arguments.  A matrix model (by
    name or by the checkpoint it serves) on a listed combination runs as that matrix session."""
    missing = [n for n in ("model", "runner", "framework", "precision") if not inputs[n]]
    if missing:
        raise ConfigError(f"inputs {', '.join(missing)} are required without 'sessions' "
                          "(or give 'sessions' to rerun part of matrix.yaml)")
    model = inputs["model"]
    if model not in matrix.models and not (HUB_ID.match(model) or LOCAL_PATH.match(model)):
        raise ConfigError(f"input 'model': {model!r} is neither a matrix.yaml model "
                          f"({', '.join(matrix.models)}), a hub id like org/name, nor an absolute path")
    tp = _int_input("tp", inputs["tp"] or "1", 1, 64)
    combo = adhoc_combination(matrix, model=model, runner=inputs["runner"], framework=inputs["framework"],
                              precision=inputs["precision"], tp=tp, image=inputs["image"] or None)
    listed = matrix.by_name().get(combo.name)
    if listed is not None and listed.model == combo.model:
        return listed, listed.name, []
    args = ["--model", combo.model.name, "--runner", combo.runner.name, "--framework", combo.framework.name,
            "--precision", combo.precision.name, "--tp", str(tp)]
    if combo.model.name not in matrix.models:
        args += ["--checkpoint", combo.model.checkpoint]
    return combo, "gsm8k", args


def check_size(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """A selection GitHub would refuse or that runs nothing fails here, never half-runs."""
    if not rows:
        raise ConfigError("the selection matches no session (list them: nox -l)")
    if len(rows) > GITHUB_MAX_JOBS:
        raise ConfigError(f"the selection has {len(rows)} sessions, over GitHub's {GITHUB_MAX_JOBS}-job "
                          "matrix limit; narrow it or dispatch it in parts")
    return rows


def job_rows(matrix: Matrix, inputs: dict[str, str]) -> list[dict[str, str]]:
    """The job matrix for the benchmark job: one row per session, each with its exact nox call (artifacts
    are named by the benchmark job itself, with its own run attempt)."""
    session_args = _session_args(inputs)
    sessions = inputs["sessions"]
    if sessions:
        if SESSION_LIST.match(sessions):
            combos = select(matrix.combinations, names=sessions.split())
        elif TAG_LIST.match(sessions):
            combos = select(matrix.combinations, tags=sessions.split(":", 1)[1].split())
        else:
            combos = select(matrix.combinations, keywords=_keyword_expression(sessions))
        rows = [{**c.summary(), "nox_session": c.name, "image": inputs["image"] or c.image,
                 "session_args": " ".join(session_args)} for c in combos]
    else:
        combo, nox_session, adhoc_args = _adhoc(matrix, inputs)
        combos = [combo]
        rows = [{**combo.summary(), "nox_session": nox_session, "image": inputs["image"] or combo.image,
                 "session_args": " ".join([*adhoc_args, *session_args])}]
    check_size(rows)
    if inputs["image"]:
        dispatch_policy.check_image(inputs["image"], matrix, combos)
    job_minutes = dispatch_policy.job_timeout_minutes()
    for row, combo in zip(rows, combos, strict=True):
        row["session_args"] += f" --eval-timeout {dispatch_policy.eval_timeout_s(combo, matrix.defaults, job_minutes)}"
        # The dispatch is one family: each session's gate level is (1 - confidence) / len(rows).
        row["session_args"] += f" --gate-family {len(rows)}"
    return rows
