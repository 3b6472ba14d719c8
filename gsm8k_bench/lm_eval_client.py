"""lm-eval's API clients as this project runs them (loaded by lm_eval_driver.py, in the lm-eval environment).

Standalone on purpose: the lm-eval environment does not have this project installed.

Answers of reasoning models: a framework's reasoning parser moves the thinking out of `content` into
`reasoning_content` (SGLang) or `reasoning` (vLLM), and leaves `content` empty when the model never
closed its thinking or ran out of tokens.  lm-eval's chat client then scores an empty string (or, in
older releases, retries and crashes: lm-eval #3244).  This client scores `content`, and the reasoning
field only when `content` is empty; per request it remembers which field it used and why generation
stopped, and `annotate` writes that into lm-eval's own samples.  The scoring itself stays lm-eval's.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.api_models import JsonChatStr
from lm_eval.models.openai_completions import LocalChatCompletion
from lm_eval.models.utils import postprocess_generated_text

REASONING_FIELDS = ("reasoning_content", "reasoning")  # SGLang's name, vLLM's
# Per request (keyed by its prompt): where the scored text came from and why generation stopped.
ANSWERS: dict[str, dict[str, Any]] = {}
# The prompt of the request being sent: set where the payload is built, read where its response is
# parsed; each concurrent request runs in its own asyncio task, so each sees its own value.
_PROMPT: contextvars.ContextVar[str | None] = contextvars.ContextVar("gsm8k_bench_prompt", default=None)


def prompt_key(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode("utf-8")).hexdigest()


def answer_text(message: dict[str, Any]) -> tuple[str | None, str]:
    """The text to score and the field it came from: `content`, else the first non-empty reasoning field."""
    content = message.get("content")
    if content:
        return content, "content"
    for name in REASONING_FIELDS:
        if message.get(name):
            return message[name], name
    return content, "none"


class ReasoningAnswers:
    """The answer-parsing part of the chat client (the rest is lm-eval's local-chat-completions)."""

    def _create_payload(self, messages, *args, **kwargs) -> dict:
        _PROMPT.set(prompt_key(messages))
        return super()._create_payload(messages, *args, **kwargs)

    def parse_generations(self, outputs: dict | list[dict], **kwargs) -> list[str | None]:
        texts: list[str | None] = []
        for out in outputs if isinstance(outputs, list) else [outputs]:
            choices = sorted(out.get("choices") or [], key=lambda c: c.get("index", 0))
            for choice in choices:
                text, source = answer_text(choice.get("message") or {})
                texts.append(postprocess_generated_text(text, stop=None, think_end_token=self.think_end_token)
                             if text is not None else None)
                ANSWERS[_PROMPT.get()] = {
                    "source": source,
                    "finish_reason": choice.get("finish_reason"),
                    "completion_tokens": (out.get("usage") or {}).get("completion_tokens"),
                }
            if not choices:  # e.g. a content filter: lm-eval's own client scores an empty answer
                texts.append("")
                ANSWERS[_PROMPT.get()] = {"source": "none", "finish_reason": None, "completion_tokens": None}
        return texts


@register_model("gsm8k-bench-chat-completions")
class ChatCompletions(ReasoningAnswers, LocalChatCompletion):
    """lm-eval's local-chat-completions, scoring the reasoning field when `content` is empty."""


# The stock model name (what a run's protocol record and command line say) -> the client that runs it.
CLIENTS = {"local-chat-completions": "gsm8k-bench-chat-completions"}


def annotate(samples: list[dict[str, Any]]) -> None:
    """Add `answer` (source field, finish reason, tokens) to lm-eval's in-memory samples before saving."""
    for sample in samples:
        prompt = sample["arguments"][0][0]
        if isinstance(prompt, JsonChatStr):
            found = ANSWERS.get(prompt_key(json.loads(prompt.prompt)))
            if found:
                sample["answer"] = found
