"""This project's lm-eval clients: lm-eval's own OpenAI-compatible models, one class per endpoint,
each sending nothing before a go signal (runs in the lm-eval environment, loaded by lm_eval_driver.py).

lm-eval builds everything a run needs before it calls the model's `generate_until`: the client, the
dataset, the few-shot contexts, the request objects.  Gating only that call lets all of it happen while
the server loads; the go signal releases the sending alone.  Payloads, parsing and outputs are the
stock classes' own, so results and samples are lm-eval's.
Needs only lm-eval: the lm-eval environment does not have this project installed.
"""

from __future__ import annotations

import os
import time

from lm_eval.api.registry import register_model
from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

GO_POLL_S = 0.02
# Printed once the requests are built and the client waits; benchmarks wait for it before the go.
WAITING_LINE = "lm-eval requests built; waiting for the go file"


class SendsOnGo:
    """Mixin for an lm-eval API model: `generate_until` (gsm8k's only request type) first waits for
    `go_file` to exist.  `go_file` None sends at once, as the stock class does."""

    go_file: str | None = None  # set by the driver from --start-when

    def generate_until(self, requests, disable_tqdm: bool = False):
        self.wait_for_go()
        return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def wait_for_go(self) -> None:
        if self.go_file is None:
            return
        print(WAITING_LINE, flush=True)
        while not os.path.exists(self.go_file):
            time.sleep(GO_POLL_S)


COMPLETIONS = "gsm8k-bench-local-completions"
CHAT_COMPLETIONS = "gsm8k-bench-local-chat-completions"


@register_model(COMPLETIONS)
class Completions(SendsOnGo, LocalCompletionsAPI):
    """/v1/completions: lm-eval's local-completions."""


@register_model(CHAT_COMPLETIONS)
class ChatCompletions(SendsOnGo, LocalChatCompletion):
    """/v1/chat/completions: lm-eval's local-chat-completions."""


# The stock lm-eval model (what commands and protocol records name) -> this project's registered name.
BY_STOCK_MODEL = {"local-completions": COMPLETIONS, "local-chat-completions": CHAT_COMPLETIONS}
