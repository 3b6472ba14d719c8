"""Session JSONs of a generated history: nightly runs of sessions whose per-question outcomes are drawn
from known probabilities, so a test (or benchmarks/history_scale.py) knows the flip rate, the drop and the
image bump it built in.

Each question q has a probability p_q of being answered right; a run draws every question independently.
Two runs of the same stack then disagree on a question with probability 2 p_q (1 - p_q): the expected flip
rate is the mean of that over the questions (`expected_flip_rate`).  A drop of d turns the right answers of
a fixed d-share of the questions wrong from the bump on.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PROTOCOL = {"endpoint": "/v1/completions", "lm_eval_model": "local-completions", "apply_chat_template": False,
            "fewshot_as_multiturn": False, "num_fewshot": 5, "max_gen_toks": 256,
            "until": ["Question:", "</s>", "<|im_end|>"]}
START = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.timezone.utc)


def split_session(session: str) -> tuple[str, str, str, str, int]:
    """gsm8k-<model>-<runner>-<framework>-<precision>-tp<N> -> (model, runner, framework, precision, tp)."""
    *model, runner, framework, precision, tp = session.removeprefix("gsm8k-").split("-")
    return "-".join(model), runner, framework, precision, int(tp.removeprefix("tp"))


def question_text(doc_id: int) -> str:
    return f"Question {doc_id}: a farmer counts {doc_id} apples and sells a third of them. How many are left?"


def latent_probabilities(questions: int, borderline: float, seed: int, stable_p: float = 0.97) -> list[float]:
    """p_q per question: a `borderline` share at 0.5 (these flip), the rest right or wrong almost always."""
    rng = random.Random(seed)
    probabilities = []
    for _ in range(questions):
        if rng.random() < borderline:
            probabilities.append(0.5)
        else:
            probabilities.append(stable_p if rng.random() < 0.8 else 1 - stable_p)
    return probabilities


def expected_flip_rate(probabilities: Sequence[float]) -> float:
    return sum(2 * p * (1 - p) for p in probabilities) / len(probabilities)


def samples(outcomes: Sequence[bool], with_text: bool = True) -> list[dict[str, Any]]:
    rows = []
    for doc_id, right in enumerate(outcomes):
        answer = str(doc_id * 2 // 3) if right else "7"
        rows.append({"doc_id": doc_id, "question": question_text(doc_id), "target": f"#### {doc_id * 2 // 3}",
                     "response": f"#### {answer}" if with_text else "", "strict_answer": answer,
                     "strict_correct": right, "flexible_answer": answer, "flexible_correct": right})
    return rows


def document(session: str, started: dt.datetime, levels: dict[int, Sequence[bool]], *, image: str = "vllm/vllm:v1",
             digest: str = "sha256:aaa", framework_version: str = "0.11.0", checkpoint: str = "org/model",
             run_id: str | None = None, attempt: int | None = 1, status: str = "passed") -> dict[str, Any]:
    """One session JSON (schema 1) with every level's per-question outcomes; the first level gates."""
    model, runner, framework, precision, tp = split_session(session)
    level_list = list(levels)
    gate_level = level_list[0]

    def metrics(outcomes: Sequence[bool]) -> dict[str, Any]:
        accuracy = sum(outcomes) / len(outcomes)
        stderr = (accuracy * (1 - accuracy) / max(1, len(outcomes) - 1)) ** 0.5
        return {"strict_match": accuracy, "strict_match_stderr": stderr, "flexible_extract": accuracy,
                "flexible_extract_stderr": stderr, "n": len(outcomes)}

    doc: dict[str, Any] = {
        "schema": 1, "session": session, "status": status, "error": None,
        "config": {"model": model, "runner": runner, "framework": framework, "precision": precision, "tp": tp,
                   "image": image, "checkpoint": checkpoint, "protocol": PROTOCOL, "concurrency": gate_level,
                   "concurrency_levels": level_list, "server": {"image_digests": [digest]}},
        "metrics": metrics(levels[gate_level]), "gate": {"verdict": "pass"},
        "server_metrics": {"output_tokens_per_s": 1000.0, "requests": len(levels[gate_level])},
        "samples": samples(levels[gate_level]),
        "environment": {"framework_version": framework_version, "run_id": run_id or f"r{started:%Y%m%d%H%M}",
                        "ci_run_attempt": attempt, "git_commit": "0" * 40,
                        "started_at": started.isoformat(timespec="seconds")},
    }
    if len(level_list) > 1:
        doc["concurrency"] = {
            "levels": level_list, "gate_level": gate_level, "comparisons": [],
            "runs": [{"concurrency": level, "gating": level == gate_level, "metrics": metrics(outcomes),
                      "samples": None if level == gate_level else samples(outcomes)}
                     for level, outcomes in levels.items()]}
    return doc


@dataclass
class Nightly:
    """A session's nightly runs: `days` runs a day apart; from `bump_day` on, another image and a drop."""

    session: str
    days: int
    questions: int = 1319
    borderline: float = 0.1
    seed: int = 1
    levels: tuple[int, ...] = (1,)
    bump_day: int | None = None
    drop: float = 0.0
    noisy_from: int | None = None  # from this day on, `noisy_borderline` of the questions are borderline
    noisy_borderline: float = 0.0
    probabilities: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.probabilities = latent_probabilities(self.questions, self.borderline, self.seed)

    def run_day(self, day: int) -> dict[str, Any]:
        rng = random.Random(self.seed * 100003 + day)
        probabilities = self.probabilities
        if self.noisy_from is not None and day >= self.noisy_from:
            # More borderline questions at the same mean accuracy: every p moves halfway to the mean.
            probabilities = [p if rng.random() >= self.noisy_borderline else 0.5 * p + 0.5 * 0.78
                             for p in probabilities]
        bumped = self.bump_day is not None and day >= self.bump_day
        dropped = set(range(0, self.questions, max(1, round(1 / self.drop)))) if bumped and self.drop else set()
        levels = {level: [rng.random() < p and q not in dropped for q, p in enumerate(probabilities)]
                  for level in self.levels}
        return document(self.session, START + dt.timedelta(days=day), levels,
                        image="vllm/vllm:v2" if bumped else "vllm/vllm:v1",
                        digest="sha256:bbb" if bumped else "sha256:aaa")

    def documents(self) -> list[dict[str, Any]]:
        return [self.run_day(day) for day in range(self.days)]
