"""This project's lm-eval clients: lm-eval's own OpenAI-compatible models, one class per endpoint
(runs in the lm-eval environment, loaded by lm_eval_driver.py).  Three changes, each a mixin:

- Sending waits for a go signal (SendsOnGo).  lm-eval builds everything a run needs before it calls the
  model's `generate_until`: the client, the dataset, the few-shot contexts, the request objects.  Gating
  only that call lets all of it happen while the server loads; the go signal releases the sending alone.
- Answers of reasoning models (ReasoningAnswers, chat only): a framework's reasoning parser moves the
  thinking out of `content` into `reasoning_content` (SGLang) or `reasoning` (vLLM), and leaves `content`
  empty when the model never closed its thinking or ran out of tokens.  lm-eval's chat client then scores
  an empty string (or, in older releases, retries and crashes: lm-eval #3244).  This client scores
  `content`, and the reasoning field only when `content` is empty; per request it remembers which field
  it used and why generation stopped, and `annotate` writes that into lm-eval's own samples.
- Each request's fate (RecordsAnswers, both endpoints): why generation stopped (`finish_reason`:
  `length` is the token limit, `abort` a request the server dropped), and the error that ended a
  request after its last retry (an HTTP error status, a reset connection, a body that is not JSON, a
  completion without text).  The stock client lets that error end the whole run; this one answers ""
  for that request, records why, and goes on, so the session can name every failed request
  (harness.parse_outputs labels each sample) instead of losing the run or scoring a failure as a wrong answer.
Payloads and scoring stay the stock classes', so results and samples are lm-eval's.
Needs only lm-eval: the lm-eval environment does not have this project installed.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import os
import time
from itertools import pairwise
from typing import TYPE_CHECKING, Any, TypedDict

import aiohttp
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

        max_retries: int

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]: ...

        def _create_payload(self, messages: Any, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

        def parse_generations(self, outputs: Any, **kwargs: Any) -> list[str | None]: ...

        def model_call(self, messages: Any, **kwargs: Any) -> Any: ...

        def create_message(self, messages: Any, generate: bool = False) -> Any: ...

        _concurrent: int

        async def amodel_call(self, *args: Any, **kwargs: Any) -> Any: ...
else:
    _ApiModel = object  # the mixins come first in the MRO, lm-eval's class supplies these


class SendsOnGo(_ApiModel):
    """Mixin for an lm-eval API model: `generate_until` (gsm8k's only request type) first waits for
    `go_file` to exist, and creates `answered_file` once every answer is in, so the session can stop the
    server while lm-eval scores and writes.  Both None: sends at once and tells no one, as the stock class."""

    go_file: str | None = None  # set by the driver from --start-when
    answered_file: str | None = None  # set by the driver from --answered-file

    stage_dir: str | None = None  # set by the driver from --stages: ask in stages (staged, pipelined)
    _gate: StageGate | None = None  # while a pipelined staged run sends

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        self.wait_for_go()

        def send(part: list[Any]) -> list[str]:
            return super(SendsOnGo, self).generate_until(part, disable_tqdm=disable_tqdm)

        if self.stage_dir and self._concurrent > 1:
            answers = self.pipelined(self.stage_dir, requests, send)
        elif self.stage_dir:  # one request at a time: a stage boundary leaves nothing idle
            answers = staged(self.stage_dir, requests, send)
        else:
            answers = send(requests)
        if self.answered_file:
            open(self.answered_file, "w").close()
        return answers

    def pipelined(self, stage_dir: str, requests: list[Any], send: Any) -> list[str]:
        """The staged run as one lm-eval call, so the server always has `concurrency` requests: the next
        stage's requests go out as the current stage's last ones finish, each request held in `amodel_call`
        until the gate lets it go."""
        self._gate = StageGate(stage_dir, requests)
        try:
            send(requests)  # in lm-eval's own order: the gate keeps the stages'
            return self._gate.finish()
        finally:
            self._gate = None

    async def amodel_call(self, *args: Any, **kwargs: Any) -> Any:
        gate = self._gate
        if gate is None:
            return await super().amodel_call(*args, **kwargs)
        keys = prompt_keys(self.create_message(kwargs["messages"]))
        if not await gate.turn(keys):
            return [""] * len(keys)  # the run stopped before this request's turn: never sent
        answers = await super().amodel_call(*args, **kwargs)
        await gate.answered(keys, answers)
        return answers

    def wait_for_go(self) -> None:
        if self.go_file is None:
            return
        print(WAITING_LINE, flush=True)
        while not os.path.exists(self.go_file):
            time.sleep(GO_POLL_S)


REASONING_FIELDS = ("reasoning_content", "reasoning")  # SGLang's name, vLLM's


class _Stop(TypedDict):
    source: str  # "text" (completions), "content", a reasoning field, or "none"
    finish_reason: str | None
    completion_tokens: int | None


class Answer(_Stop, total=False):
    """Where the scored text came from and why generation stopped (a sample's `answer`)."""

    error: str  # why the request failed after its last retry (its answer is then "")
    not_asked: bool  # a staged run stopped before this request was sent (its answer is then "")


# Per request, keyed by its prompt (None: a response parsed outside any payload's context).
ANSWERS: dict[str | None, Answer] = {}
# The prompts of the request being sent: set where the payload is built, read where its response is
# parsed; each concurrent request runs in its own asyncio task, so each sees its own value.
_PROMPTS: contextvars.ContextVar[tuple[str | None, ...]] = contextvars.ContextVar("gsm8k_bench_prompts",
                                                                                  default=(None,))


def prompt_key(prompt: Any) -> str:
    """A prompt (a completion's text, a chat's messages) -> the key its answer is recorded under."""
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode("utf-8")).hexdigest()


def prompt_keys(messages: Any) -> tuple[str, ...]:
    """A payload's prompts: one chat, one completion prompt, or a batch of completion prompts."""
    if isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        return tuple(prompt_key(m) for m in messages)
    return (prompt_key(messages),)


def answer_text(message: dict[str, Any]) -> tuple[str | None, str]:
    """The text to score and the field it came from: `content`, else the first non-empty reasoning field."""
    content = message.get("content")
    if content:
        return content, "content"
    for name in REASONING_FIELDS:
        if message.get(name):
            return message[name], name
    return content, "none"


def _record(index: int, choice: dict[str, Any], out: dict[str, Any], source: str) -> None:
    keys = _PROMPTS.get()
    ANSWERS[keys[index] if index < len(keys) else None] = {
        "source": source, "finish_reason": choice.get("finish_reason"),
        "completion_tokens": (out.get("usage") or {}).get("completion_tokens")}


class MalformedAnswer(ValueError):
    """A 200 whose body lacks what the endpoint must return: retried like an HTTP error."""


def failure(exc: BaseException) -> str:
    """Why a request failed, in a few words (the sample's `answer_error`)."""
    if isinstance(exc, MalformedAnswer):
        return str(exc)
    if isinstance(exc, (json.JSONDecodeError, aiohttp.ContentTypeError)):
        return "the body is not JSON"
    status = getattr(exc, "status", None) or getattr(getattr(exc, "response", None), "status_code", None)
    if status:
        return f"HTTP {status}"
    return f"{type(exc).__name__}: {exc}"[:200] if str(exc) else type(exc).__name__  # a timeout has no text


# What a request that failed for good returns through lm-eval's parsing: its prompts' answers are "".
FAILED = "gsm8k_bench_failed"
# Failed attempts per request (its prompts), counted across lm-eval's retries of it.
FAILED_ATTEMPTS: dict[tuple[str | None, ...], int] = {}


class RecordsAnswers(_ApiModel):
    """Per request: why generation stopped, and the error that ended it after its last retry.

    lm-eval retries each request (tenacity, `max_retries` attempts in all) around `model_call` (one at a
    time) or `amodel_call` (concurrent); the last attempt's error would end the run.  Here every attempt
    but the last raises as before; the last records the error and answers "" instead."""

    def _create_payload(self, messages: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        _PROMPTS.set(prompt_keys(messages))
        return super()._create_payload(messages, *args, **kwargs)

    def _give_up(self, exc: Exception) -> list[str]:
        """Raise again while attempts remain; on the last, record the failure and answer "" per prompt."""
        keys = _PROMPTS.get()
        attempts = FAILED_ATTEMPTS[keys] = FAILED_ATTEMPTS.get(keys, 0) + 1
        if attempts < max(1, self.max_retries):
            raise exc
        for key in keys:
            ANSWERS[key] = {"source": "none", "finish_reason": None, "completion_tokens": None, "error": failure(exc)}
        return [""] * len(keys)

    def model_call(self, messages: Any, **kwargs: Any) -> Any:
        try:
            outputs = super().model_call(messages, **kwargs)
            self.parse_generations(outputs=outputs)  # a malformed body fails here, inside the retries
            return outputs
        except Exception as exc:  # any failure of the request: recorded at the last attempt
            return {FAILED: self._give_up(exc)}

    async def amodel_call(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().amodel_call(*args, **kwargs)
        except Exception as exc:
            return self._give_up(exc)

    def parse_generations(self, outputs: Any, **kwargs: Any) -> list[str | None]:
        if isinstance(outputs, dict) and FAILED in outputs:
            return list(outputs[FAILED])
        return self.parse_choices(outputs)

    def parse_choices(self, outputs: dict[str, Any] | list[dict[str, Any]]) -> list[str | None]:
        """/v1/completions: each choice's `text` (a string the endpoint must return)."""
        texts: list[str | None] = []
        for out in outputs if isinstance(outputs, list) else [outputs]:
            for choice in sorted(out["choices"], key=lambda c: c.get("index", 0)):
                if not isinstance(choice.get("text"), str):
                    raise MalformedAnswer(f"a completion without text (text: {json.dumps(choice.get('text'))})")
                texts.append(choice["text"])
                _record(choice.get("index", 0), choice, out, "text")
        return texts


class ReasoningAnswers(RecordsAnswers):
    """The answer-parsing part of the chat client (the rest is lm-eval's local-chat-completions)."""

    def parse_choices(self, outputs: dict[str, Any] | list[dict[str, Any]]) -> list[str | None]:
        texts: list[str | None] = []
        for out in outputs if isinstance(outputs, list) else [outputs]:
            choices = sorted(out.get("choices") or [], key=lambda c: c.get("index", 0))
            for choice in choices:
                text, source = answer_text(choice.get("message") or {})
                texts.append(postprocess_generated_text(text, stop=None, think_end_token=self.think_end_token)
                             if text is not None else None)
                _record(0, choice, out, source)
            if not choices:  # e.g. a content filter: lm-eval's own client scores an empty answer
                texts.append("")
                _record(0, {}, {}, "none")
        return texts


COMPLETIONS = "gsm8k-bench-local-completions"
CHAT_COMPLETIONS = "gsm8k-bench-local-chat-completions"


# lm-eval ships no types: its classes are Any to the type checker.
@register_model(COMPLETIONS)
class Completions(SendsOnGo, RecordsAnswers, LocalCompletionsAPI):  # type: ignore[misc]
    """/v1/completions: lm-eval's local-completions, recording each request's finish reason or failure."""


@register_model(CHAT_COMPLETIONS)
class ChatCompletions(SendsOnGo, ReasoningAnswers, LocalChatCompletion):  # type: ignore[misc]
    """/v1/chat/completions: lm-eval's local-chat-completions, scoring the reasoning field when `content`
    is empty."""


# The stock lm-eval model (what commands and protocol records name) -> this project's registered name.
BY_STOCK_MODEL = {"local-completions": COMPLETIONS, "local-chat-completions": CHAT_COMPLETIONS}


def request_key(prompt: Any) -> str:
    """A request's context (a completion's text, or a chat as lm-eval's JsonChatStr) -> its ANSWERS key."""
    return prompt_key(json.loads(prompt.prompt) if isinstance(prompt, JsonChatStr) else prompt)


def annotate(samples: list[dict[str, Any]]) -> None:
    """Add `answer` (source field, finish reason, tokens, the error of a failed request) to lm-eval's
    in-memory samples before saving."""
    for sample in samples:
        found = ANSWERS.get(request_key(sample["arguments"][0][0]))
        if found:
            sample["answer"] = found


# --------------------------------------------------------------------------- staged sending
# The session writes STAGES_FILE into the stage dir: {"order": [doc_id, ...], "ends": [asked at look 1, ...]}.
# After each stage the client writes look-<k>.json (each asked question's doc_id, question, target and
# lm-eval's own strict/flexible scores of its answer) and waits for decision-<k> ("continue" or "stop").
STAGES_FILE = "stages.json"
CONTINUE, STOP = "continue", "stop"
# The task objects lm-eval built (name -> Task), recorded by the driver: a look is scored by their filters.
TASKS: dict[str, Any] = {}


def read_stages(stage_dir: str, requests: list[Any]) -> tuple[dict[int, int], list[int], list[int]]:
    """STAGES_FILE against lm-eval's requests: doc_id -> request index, the indices in the session's
    order, and the stage ends."""
    with open(os.path.join(stage_dir, STAGES_FILE), encoding="utf-8") as handle:
        plan = json.load(handle)
    by_doc = {request.doc_id: index for index, request in enumerate(requests)}
    order = [by_doc[doc_id] for doc_id in plan["order"]]
    if sorted(order) != list(range(len(requests))):
        raise RuntimeError(f"{STAGES_FILE}: the order must name each of the {len(requests)} requests' doc_ids once")
    ends = plan["ends"]
    if not ends or ends[-1] != len(requests) or any(a >= b for a, b in pairwise([0, *ends])):
        raise RuntimeError(f"{STAGES_FILE}: the stage ends must rise to {len(requests)}, the requests; got {ends}")
    return by_doc, order, ends


def staged(stage_dir: str, requests: list[Any], send: Any) -> list[str]:
    """Send `requests` a stage at a time in the session's order; after a "stop" the rest are not sent:
    each answers "" and is recorded as not_asked.  The answers, in `requests`' order."""
    by_doc, order, ends = read_stages(stage_dir, requests)
    answers: list[str | None] = [None] * len(requests)
    start = 0
    for look, end in enumerate(ends, 1):
        part = [requests[i] for i in order[start:end]]
        for index, answer in zip(order[start:end], send(part), strict=True):
            answers[index] = answer
        _write_json(os.path.join(stage_dir, f"look-{look}.json"), scored(part, answers, by_doc))
        start = end
        if wait_for_decision(os.path.join(stage_dir, f"decision-{look}")) == STOP:
            break
    for index in order[start:]:
        _not_asked(request_key(requests[index].arguments[0]))
    return [answer if answer is not None else "" for answer in answers]


def _not_asked(key: str) -> None:
    ANSWERS[key] = {"source": "none", "finish_reason": None, "completion_tokens": None, "not_asked": True}


class StageGate:
    """The stages of a pipelined staged run (SendsOnGo.pipelined), inside lm-eval's event loop.

    The requests of the stages up to the one after the last decided look may be sent: while a stage's
    slowest answers come in, the next stage's fill the free slots, so the server never runs short (a
    stage's tail of long answers is where a stage-at-a-time client drains).  A look is written once its
    stage's answers are all in, the decision read, the stage after next opened; after a "stop" nothing
    more is sent, and the answers sent ahead (those that fit beside the stopping stage's last answers) are
    dropped: the run's questions are the looked-at ones, as in `staged`."""

    def __init__(self, stage_dir: str, requests: list[Any]) -> None:
        self.stage_dir, self.requests = stage_dir, requests
        self.by_doc, order, ends = read_stages(stage_dir, requests)
        self.stages = [order[start:end] for start, end in pairwise([0, *ends])]
        self.index_of = {request_key(requests[i].arguments[0]): i for i in order}
        self.stage_of = {request_key(requests[i].arguments[0]): look
                         for look, stage in enumerate(self.stages, 1) for i in stage}
        self.left = [len(stage) for stage in self.stages]  # answers still out, per stage
        self.answers: list[str | None] = [None] * len(requests)
        self.written, self.decided = 0, 0  # looks
        self.closed = False  # a "stop", or the last look decided: nothing more is sent
        self.granted: set[str] = set()
        self._changed: asyncio.Condition | None = None  # made in lm-eval's event loop, on the first turn
        # Held here: the event loop keeps only a weak reference to a task.  asyncio.run cancels it if the
        # requests are all in before the last look is decided; finish() takes over from there.
        self._looker: asyncio.Task[None] | None = None

    async def turn(self, keys: tuple[str, ...]) -> bool:
        """Wait for these prompts' turn; False: the run stopped first, so they are never sent."""
        if all(key in self.granted for key in keys):  # lm-eval's retry of a request already let go
            return True
        if self._changed is None:
            self._changed = asyncio.Condition()
            self._looker = asyncio.get_running_loop().create_task(self._look_as_stages_end())
        stage = max(self.stage_of[key] for key in keys)
        async with self._changed:
            await self._changed.wait_for(lambda: self.closed or stage <= self.decided + 2)
            if self.closed:
                return False
            self.granted.update(keys)
            return True

    async def answered(self, keys: tuple[str, ...], texts: list[str]) -> None:
        assert self._changed is not None
        async with self._changed:
            for key, text in zip(keys, texts, strict=True):
                index = self.index_of[key]
                if self.answers[index] is None:
                    self.answers[index] = text
                    self.left[self.stage_of[key] - 1] -= 1
            self._changed.notify_all()

    async def _look_as_stages_end(self) -> None:
        assert self._changed is not None
        while not self.closed:
            async with self._changed:
                await self._changed.wait_for(lambda: self.left[self.decided] == 0)
            self._write_look()
            path = self._decision_path()
            while not os.path.exists(path):
                await asyncio.sleep(GO_POLL_S)
            async with self._changed:
                self._decide(wait_for_decision(path))
                self._changed.notify_all()

    def _decision_path(self) -> str:
        return os.path.join(self.stage_dir, f"decision-{self.decided + 1}")

    def _write_look(self) -> None:
        if self.written == self.decided:
            part = [self.requests[i] for i in self.stages[self.decided]]
            _write_json(os.path.join(self.stage_dir, f"look-{self.decided + 1}.json"),
                        scored(part, self.answers, self.by_doc))
            self.written += 1

    def _decide(self, decision: str) -> None:
        self.decided += 1
        self.closed = decision == STOP or self.decided == len(self.stages)

    def finish(self) -> list[str]:
        """After lm-eval's event loop ended (every request answered or refused): the looks it left, then
        the answers in `requests`' order, "" for each question no look scored (recorded not_asked)."""
        while not self.closed:
            if self.left[self.decided]:
                raise RuntimeError(f"look {self.decided + 1}: {self.left[self.decided]} answers never came")
            self._write_look()
            self._decide(wait_for_decision(self._decision_path()))
        looked = {i for stage in self.stages[:self.decided] for i in stage}
        for key, index in self.index_of.items():
            if index not in looked:
                _not_asked(key)
        return [self.answers[i] or "" if i in looked else "" for i in range(len(self.requests))]


def scored(part: list[Any], answers: list[str | None], by_doc: dict[int, int]) -> list[dict[str, Any]]:
    """The stage's questions scored by the task's own filter ensembles and metric, as lm-eval scores them
    after the run (on copies: lm-eval's own instances get their answers from its evaluator)."""
    from dataclasses import replace

    task = TASKS[part[0].task_name]
    copies = [replace(r, resps=[answers[by_doc[r.doc_id]] or ""], filtered_resps={}) for r in part]
    for ensemble in task._filters:
        ensemble.apply(copies)
    rows = []
    for copy in copies:
        row = {"doc_id": copy.doc_id, "question": copy.doc.get("question"), "target": str(task.doc_to_target(copy.doc))}
        for name, field in (("strict-match", "strict_correct"), ("flexible-extract", "flexible_correct")):
            row[field] = bool(task.process_results(copy.doc, [copy.filtered_resps[name]])["exact_match"])
        rows.append(row)
    return rows


def _write_json(path: str, document: Any) -> None:
    """Whole or not at all: the session reads the file the moment it exists."""
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    os.replace(path + ".tmp", path)


def wait_for_decision(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(GO_POLL_S)
    with open(path, encoding="utf-8") as handle:
        decision = handle.read().strip()
    if decision not in (CONTINUE, STOP):
        raise RuntimeError(f"{path}: {decision!r}; allowed values are {CONTINUE}, {STOP}")
    return decision
