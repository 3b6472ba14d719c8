"""A vLLM reasoning parser for the CPU model, loaded with `--reasoning-parser-plugin FILE --reasoning-parser
think-text`: the thinking ends at the text `</think>`, and without it the whole output is reasoning.

vLLM's own thinking parsers refuse a tokenizer without `<think>`/`</think>` tokens, which SmolLM2's lacks.  This
one splits on text, so the CPU model's real answers arrive in the response's reasoning field with `content`
empty: the case that zeroes (or crashes) lm-eval's chat client (lm-eval #3244).
"""

from vllm.entrypoints.generate.base.protocol import DeltaMessage
from vllm.reasoning import ReasoningParser, ReasoningParserManager

END = "</think>"


class ThinkTextReasoningParser(ReasoningParser):
    def is_reasoning_end(self, input_ids):
        return False  # asked by structured outputs only; the end is a text here, never a token

    def extract_content_ids(self, input_ids):
        return []

    def extract_reasoning(self, model_output, request):
        reasoning, found, content = model_output.partition(END)
        return reasoning, (content or None) if found else None

    def extract_reasoning_streaming(self, previous_text, current_text, delta_text, previous_token_ids,
                                    current_token_ids, delta_token_ids):
        if END in previous_text:
            return DeltaMessage(content=delta_text)
        return DeltaMessage(reasoning=delta_text)


ReasoningParserManager.register_module("think-text", module=ThinkTextReasoningParser)
