"""Staged evaluation on one server start: the questions in a fixed seeded order, a stage at a time, the
paired group-sequential test (verdicts/sequential.py) against the session's reference after each stage.

The one lm-eval process builds every request as a full run does (so each question gets the full run's
few-shot prompt); its client (evaluation/lm_eval_client.py, `staged`) sends them in this module's order,
writes each stage's questions as lm-eval's own filters and metric score them (look-<k>.json), and waits
for decision-<k>, which `Staging.poll` writes: "stop" on a regression or on futility (no regression the
full run could likely have caught), else "continue".  What is never asked is dropped from the results.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsm8k_bench.core.errors import EvalError
from gsm8k_bench.evaluation import progress
from gsm8k_bench.session.plan import Plan
from gsm8k_bench.verdicts import paired_stats, sequential

SEED = 27  # fixed: every staged run asks the same questions first, so their prefixes pair with each other too
STAGE_DIR = "stages"  # in the level's work dir
# A stage of fewer questions could not stop early (the first looks' nominal levels, 1e-4 and below, need a
# dozen or more lost in a row) and costs a stage boundary: smaller sets are asked whole.
MIN_STAGE_QUESTIONS = 20
STAGES_FILE, CONTINUE, STOP = "stages.json", "continue", "stop"  # as lm_eval_client.py reads and writes them


def question_order(questions: int, seed: int = SEED) -> list[int]:
    """The doc_ids 0..questions-1 in the seeded order: every prefix is a random sample of the set."""
    return random.Random(seed).sample(range(questions), questions)  # noqa: S311 (an order, not a secret)


def why_not_staged(plan: Plan, levels: int) -> str:
    """Why this session asks every question ('' when it runs staged)."""
    if plan.options.full:
        return "--full"
    if plan.baselines.reference is None:
        return "no per-question reference to pair with"
    if plan.baselines.reference.runs > 1:  # the looks' McNemar z pairs with one run, not with right counts
        return "a two-run reference is judged by its exact test over every question"
    if levels > 1:
        return "several concurrency levels compare full runs"
    questions = progress.question_count(plan.settings.limit, plan.dataset_dir)
    if questions < MIN_STAGE_QUESTIONS * plan.options.looks:
        return (f"{questions} questions are too few for {plan.options.looks} stages of at least "
                f"{MIN_STAGE_QUESTIONS} (--looks)")
    return ""


@dataclass
class Staging:
    """One staged evaluation: its design, order and looks so far; `poll` takes each stage's answers."""

    plan: Plan
    design: sequential.Design
    questions: int
    order: list[int]
    ends: list[int]
    looks: list[sequential.Look] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the asked questions, scored at their look

    @classmethod
    def of(cls, plan: Plan) -> Staging:
        questions = progress.question_count(plan.settings.limit, plan.dataset_dir)
        design = sequential.Design(fractions=sequential.equal_fractions(plan.options.looks))
        return cls(plan, design, questions, question_order(questions), design.stage_ends(questions))

    @property
    def directory(self) -> Path:
        return self.plan.work_dir / STAGE_DIR

    def write_plan(self) -> None:
        """The order and the stage ends, for lm-eval's client (a fresh folder: no earlier run's looks)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.iterdir():
            stale.unlink()
        (self.directory / STAGES_FILE).write_text(json.dumps({"order": self.order, "ends": self.ends}))

    @property
    def done(self) -> bool:
        return bool(self.looks) and self.looks[-1].decision != sequential.DECISIONS[2]

    def poll(self, log: Callable[[str], None]) -> None:
        """Decide on the next stage once the client has written it; say so and tell the client."""
        look = len(self.looks) + 1
        path = self.directory / f"look-{look}.json"
        if self.done or not path.exists():
            return
        self.rows += json.loads(path.read_text(encoding="utf-8"))
        reference = self.plan.baselines.reference
        assert reference is not None  # staged only with one
        settings = self.plan.baselines.settings
        run = paired_stats.outcomes(self.rows, settings.metric, reference.ids_cover_target)
        ids, before, now = paired_stats.align(reference.outcomes[settings.metric], run)
        lost, gained = paired_stats.discordant(ids, before, now)
        decided = sequential.decide(self.design, settings.level, self.questions, look, len(lost), len(gained))
        self.looks.append(decided)
        log(describe_look(decided, len(self.ends), self.questions))
        decision = self.directory / f"decision-{look}"
        decision.with_suffix(".tmp").write_text(STOP if self.done else CONTINUE)
        decision.with_suffix(".tmp").replace(decision)  # whole: the client reads it the moment it exists

    def check_final(self, samples: list[dict[str, Any]]) -> None:
        """lm-eval's final samples are the asked questions, scored as each look saw them."""
        seen = {row["doc_id"]: (row["strict_correct"], row["flexible_correct"]) for row in self.rows}
        final = {s["doc_id"]: (s.get("strict_correct"), s.get("flexible_correct")) for s in samples}
        if final != seen:
            differ = sorted(set(final.items()) ^ set(seen.items()))
            raise EvalError(f"lm-eval's samples differ from the staged looks' scores (doc_ids "
                            f"{', '.join(str(d) for d, _ in differ[:10])}): the stages were not scored as the run was")

    @property
    def stopped_early(self) -> bool:
        return bool(self.looks) and self.looks[-1].asked < self.questions

    def record(self) -> dict[str, Any]:
        """The session JSON's `staged` block."""
        return {"seed": SEED, "method": sequential.METHOD, "questions": self.questions,
                "design": {"looks": len(self.ends), "fractions": list(self.design.fractions),
                           "design_drop": self.design.design_drop, "beta": self.design.beta,
                           "level": self.plan.baselines.settings.level, "stage_ends": self.ends},
                "looks": [vars(look) | {"z": round(look.z, 4), "efficacy": round(look.efficacy, 4),
                                        "futility": round(look.futility, 4) if look.futility > -math.inf else None}
                          for look in self.looks],
                "stopped_early": self.stopped_early}


def describe_look(look: sequential.Look, looks: int, questions: int) -> str:
    """The console's line for one look."""
    futility = f"{look.futility:.2f}" if look.futility > -math.inf else "none"
    action = {"regression": "regression: stop, fail", "no_regression": "no regression: stop, pass",
              "continue": "continue"}[look.decision]
    return (f"staged look {look.look}/{looks}: {look.asked} of {questions} questions asked, lost {look.lost}, "
            f"gained {look.gained}, z {look.z:.2f}, one-sided McNemar p {look.p:.4g} (regression at p <= "
            f"{look.nominal:.4g}, z >= {look.efficacy:.2f}; futility below z {futility}): {action}")
