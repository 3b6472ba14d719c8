"""How a reasoning model is served and scored: models.<name>.reasoning in matrix.yaml.

A reasoning model thinks before it answers.  The framework's reasoning parser moves the thinking into
the response's reasoning field (`reasoning_content` in SGLang, `reasoning` in vLLM); `content` keeps
the answer, and is empty when the model never closed its thinking (or ran out of tokens).  What the
request asks for (reasoning effort, chat-template arguments), the output budget and the answer
extraction rule change the score, so all of them are part of the run's protocol record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gsm8k_bench.core.yaml_reader import NodeChecker

# The request field `reasoning_effort` as vLLM 0.32 accepts it (SGLang 0.5.23 accepts these too).
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# How the strict-match filter picks the `#### N` answer: lm-eval's stock gsm8k takes the first match;
# a reasoning model's text may recite `#### N` lines before its own (lm-eval #3438), so take the last.
EXTRACTIONS = ("stock", "last-match")
# The output budget when the model names none: the context less room for the prompt, capped, as peers
# size it for reasoning models (InferenceX: context - 4096, at most 16384).
PROMPT_RESERVE = 4096
MAX_BUDGET = 16384
BUDGET_RULE = f"min(max_model_len - {PROMPT_RESERVE}, {MAX_BUDGET})"
KEYS = ("parser", "effort", "chat_template_kwargs", "extraction")


@dataclass(frozen=True)
class Reasoning:
    parser: Mapping[str, str]  # framework -> that framework's reasoning-parser name
    effort: str | None = None
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    extraction: str = "last-match"
    budget_rule: str = BUDGET_RULE  # how the output budget was set: derived from the context, or explicit

    def request_fields(self) -> dict[str, Any]:
        """What every chat request carries besides the prompt (lm-eval passes it through gen_kwargs)."""
        fields: dict[str, Any] = {}
        if self.effort:
            fields["reasoning_effort"] = self.effort
        if self.chat_template_kwargs:
            fields["chat_template_kwargs"] = dict(self.chat_template_kwargs)
        return fields


def output_budget(max_model_len: int) -> int:
    return min(max_model_len - PROMPT_RESERVE, MAX_BUDGET)


def read_reasoning(r: NodeChecker, node: Any, key: str, frameworks: tuple[str, ...], protocol: str) -> Reasoning:
    """models.<name>.reasoning, validated: a parser for each of the model's frameworks, known choices."""
    node = r.mapping(node, key, KEYS, required=("parser",))
    if protocol != "chat":
        raise r.fail(key, f"a reasoning model needs protocol: chat (got {protocol!r}): the reasoning "
                     "parser splits the answer from the thinking only in chat responses", node)
    parsers = r.mapping(node["parser"], f"{key}.parser", frameworks)
    for framework in frameworks:
        if framework not in parsers:
            raise r.fail(f"{key}.parser", f"missing the {framework!r} parser: the model runs on "
                         f"{', '.join(frameworks)}, and each framework names its own parser", node, "parser")
        value = r.typed(parsers[framework], f"{key}.parser.{framework}", str, parsers, framework)
        if not value.strip():
            raise r.fail(f"{key}.parser.{framework}", "must not be empty", parsers, framework)
    effort = node.get("effort")
    if effort is not None:
        r.choice(effort, f"{key}.effort", "reasoning effort", EFFORTS, node, "effort")
    kwargs = r.mapping(node.get("chat_template_kwargs", {}), f"{key}.chat_template_kwargs")
    for name in kwargs:
        r.typed(name, f"{key}.chat_template_kwargs.{name}", str, kwargs, name)
    extraction = r.choice(node.get("extraction", "last-match"), f"{key}.extraction", "answer extraction",
                          EXTRACTIONS, node, "extraction")
    return Reasoning(dict(parsers), effort, dict(kwargs), extraction)


def check_budget(r: NodeChecker, node: Any, key: str, max_model_len: int, max_gen_toks: int | None) -> tuple[int, str]:
    """The model's output budget and its rule: an explicit max_gen_toks, else derived from the context."""
    if max_gen_toks is None:
        budget = output_budget(max_model_len)
        if budget < 1:
            raise r.fail(f"{key}.max_model_len", f"a reasoning model's output budget is {BUDGET_RULE}; "
                         f"max_model_len {max_model_len} leaves none: raise max_model_len or set "
                         "max_gen_toks", node, "max_model_len")
        return budget, BUDGET_RULE
    if max_gen_toks >= max_model_len:
        raise r.fail(f"{key}.max_gen_toks", f"{max_gen_toks} leaves no room for the prompt in "
                     f"max_model_len {max_model_len}", node, "max_gen_toks")
    return max_gen_toks, "max_gen_toks"
