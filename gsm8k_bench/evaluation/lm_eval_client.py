"""This project's lm-eval clients: lm-eval's own OpenAI-compatible models, one class per endpoint
(runs in the lm-eval environment, loaded by lm_eval_driver.py).  Two changes, each a mixin:

- Sending waits for a go signal (SendsOnGo).  lm-eval builds everything a run needs before it calls the
  model's `generate_until`: the client, the dataset, the few-shot contexts, the request objects.  Gating
  only that call lets all of it happen while the server loads; the go signal releases the sending alone.
- Answers of reasoning models (ReasoningAnswers, chat only): a framework's reasoning parser moves the
  thinking out of `content` into `reasoning_content` (SGLang) or `reasoning` (vLLM), and leaves `content`
  empty when the model never closed its thinking or ran out of tokens.  lm-eval's chat client then scores
  an empty string (or, in older releases, retries and crashes: lm-eval #3244).  This client scores
  `content`, and the reasoning field only when `content` is empty; per request it remembers which field
  it used and why generation stopped, and `annotate` writes that into lm-eval's own samples.
Payloads and scoring stay the stock classes', so results and samples are lm-eval's.
Needs only lm-eval: the lm-eval environment does not have this project installed.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import time
from typing import TYPE_CHECKING, Any, TypedDict

from lm_eval.api.registry import register_model
from lm_eval.models.api_models import JsonChatStr
from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI
from lm_eval.models.utils import postprocess_generated_text

GO_POLL_S = 0.02
# Printed once the requests are built and the client waits; benchmarks wait for it before the go.
WAITING_LINE = "lm-eval requests built; waiting for the go file"


if TYPE_CHECKING:
    class _ApiModel:
        """The part of lm-eval's API model (TemplateAPI) the mixins build on: lm-eval ships no types."""

        think_end_token: str | None

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]: ...

        def _create_payload(self, messages: Any, *args: Any, **kwargs: Any) -> dict[str, Any]: ...
else:
    _ApiModel = object  # the mixins come first in the MRO, lm-eval's class supplies these


class SendsOnGo(_ApiModel):
    """Mixin for an lm-eval API model: `generate_until` (gsm8k's only request type) first waits for
    `go_file` to exist, and creates `answered_file` once every answer is in, so the session can stop the
    server while lm-eval scores and writes.  Both None: sends at once and tells no one, as the stock class."""

    go_file: str | None = None  # set by the driver from --start-when
    answered_file: str | None = None  # set by the driver from --answered-file

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        self.wait_for_go()
        answers = super().generate_until(requests, disable_tqdm=disable_tqdm)
        if self.answered_file:
            open(self.answered_file, "w").close()
        return answers

    def wait_for_go(self) -> None:
        if self.go_file is None:
            return
        print(WAITING_LINE, flush=True)
        while not os.path.exists(self.go_file):
            time.sleep(GO_POLL_S)


REASONING_FIELDS = ("reasoning_content", "reasoning")  # SGLang's name, vLLM's


class Answer(TypedDict):
    """Where the scored text came from and why generation stopped (a sample's `answer`)."""

    source: str  # "content", a reasoning field, or "none"
    finish_reason: str | None
    completion_tokens: int | None


# Per request, keyed by its prompt (None: a response parsed outside any payload's context).
ANSWERS: dict[str | None, Answer] = {}
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


class ReasoningAnswers(_ApiModel):
    """The answer-parsing part of the chat client (the rest is lm-eval's local-chat-completions)."""

    def _create_payload(self, messages: list[dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
        _PROMPT.set(prompt_key(messages))
        return super()._create_payload(messages, *args, **kwargs)

    def parse_generations(self, outputs: dict[str, Any] | list[dict[str, Any]], **kwargs: Any) -> list[str | None]:
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


COMPLETIONS = "gsm8k-bench-local-completions"
CHAT_COMPLETIONS = "gsm8k-bench-local-chat-completions"


# lm-eval ships no types: its classes are Any to the type checker.
@register_model(COMPLETIONS)
class Completions(SendsOnGo, LocalCompletionsAPI):  # type: ignore[misc]
    """/v1/completions: lm-eval's local-completions."""


@register_model(CHAT_COMPLETIONS)
class ChatCompletions(SendsOnGo, ReasoningAnswers, LocalChatCompletion):  # type: ignore[misc]
    """/v1/chat/completions: lm-eval's local-chat-completions, scoring the reasoning field when `content`
    is empty."""


# The stock lm-eval model (what commands and protocol records name) -> this project's registered name.
BY_STOCK_MODEL = {"local-completions": COMPLETIONS, "local-chat-completions": CHAT_COMPLETIONS}


def annotate(samples: list[dict[str, Any]]) -> None:
    """Add `answer` (source field, finish reason, tokens) to lm-eval's in-memory samples before saving."""
    for sample in samples:
        prompt = sample["arguments"][0][0]
        if isinstance(prompt, JsonChatStr):
            found = ANSWERS.get(prompt_key(json.loads(prompt.prompt)))
            if found:
                sample["answer"] = found
