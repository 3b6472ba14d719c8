"""The protocol fingerprint: sha256 of what the model actually saw, read back from lm-eval's own records.

The protocol record (endpoint, few-shot count, token limit, ...) says what was asked for; lm-eval's samples
file holds what was sent: each question's rendered request (`arguments`: the prompt, or the chat messages
as JSON, with its generation arguments), and its results file the chat template it applied.  Hashed per
part, so that two runs that differ can be told where:

    requests          every rendered request, in doc order (differs between runs of other questions)
    prompt_template   the first question's request with its own question text blanked: the few-shot
                      examples (their source file, their sampling), the prompt format and the chat rendering
    generation_args   the generation arguments but the stop sequences (temperature, max tokens, ...)
    stop_sequences    `until`
    chat_template     the chat template lm-eval applied (null without one; a server-side template is the
                      server's and not visible here)

A changed few-shot source changes `prompt_template`; a changed test file changes the question ids (the
gate's coverage) and `requests`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gsm8k_bench.core.errors import EvalError
from gsm8k_bench.evaluation import harness

PARTS = ("requests", "prompt_template", "generation_args", "stop_sequences", "chat_template")
BLANK = "{question}"


def sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _request(row: Mapping[str, Any], path: Path) -> tuple[Any, dict[str, Any]]:
    """A samples row's rendered request and its generation arguments: lm-eval writes `arguments` as
    {"gen_args_0": {"arg_0": context, "arg_1": gen_kwargs}} (a prompt string, or for chat a one-item list
    holding the messages as JSON)."""
    arguments = harness.literal(row.get("arguments"))
    request = arguments.get("gen_args_0") if isinstance(arguments, Mapping) else None
    if not isinstance(request, Mapping) or "arg_0" not in request or not isinstance(request.get("arg_1"), Mapping):
        raise EvalError(f"{path}: doc_id {row.get('doc_id')}: no rendered request in `arguments` (expected "
                        "lm-eval's {\"gen_args_0\": {\"arg_0\": request, \"arg_1\": generation arguments}})")
    return request["arg_0"], dict(request["arg_1"])


def _blanked(context: Any, question: str) -> str:
    """The request as JSON with the question's own text replaced (also where it sits inside a JSON string)."""
    text = json.dumps(context, sort_keys=True, ensure_ascii=False)
    once = json.dumps(question, ensure_ascii=False)[1:-1]
    twice = json.dumps(once, ensure_ascii=False)[1:-1]
    return text.replace(twice, BLANK).replace(once, BLANK)


def of_rows(rows: Iterable[Mapping[str, Any]], chat_template: str | None, path: Path) -> dict[str, Any]:
    """The fingerprint of a samples file's rows (one per question and filter)."""
    requests: dict[int, tuple[Any, dict[str, Any], str]] = {}
    for row in rows:
        if row["doc_id"] not in requests:
            doc = harness.literal(row.get("doc"))
            question = doc.get("question") if isinstance(doc, Mapping) else None
            context, kwargs = _request(row, path)
            requests[row["doc_id"]] = (context, kwargs, question or "")
    if not requests:
        raise EvalError(f"{path}: no samples to fingerprint")
    ordered = [requests[doc_id] for doc_id in sorted(requests)]
    first_context, _, first_question = ordered[0]
    generation = sorted({json.dumps({k: v for k, v in kw.items() if k != "until"}, sort_keys=True)
                         for _, kw, _ in ordered})
    stops = sorted({json.dumps(kw.get("until"), sort_keys=True) for _, kw, _ in ordered})
    parts = {"requests": sha256([context for context, _, _ in ordered]),
             "prompt_template": sha256(_blanked(first_context, first_question)),
             "generation_args": sha256(generation), "stop_sequences": sha256(stops),
             "chat_template": sha256(chat_template) if chat_template else None}
    return {"sha256": sha256([parts[p] for p in PARTS]), "n": len(ordered), "parts": parts}


def of_outputs(samples_file: Path, results_file: Path) -> dict[str, Any]:
    """The fingerprint of one lm-eval run (its samples and results files)."""
    results = json.loads(results_file.read_text(encoding="utf-8"))
    with samples_file.open(encoding="utf-8") as handle:
        return of_rows((json.loads(line) for line in handle if line.strip()), results.get("chat_template"),
                       samples_file)
