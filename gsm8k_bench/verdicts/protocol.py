"""What makes two runs comparable: the metrics both score and the protocol record's keys.

The gate (baselines), the references and the comparisons all read runs through these; a run, baseline
or reference whose protocol differs in any key is not compared.
"""

from __future__ import annotations

from typing import Any

from gsm8k_bench.verdicts import paired_stats

METRICS = tuple(paired_stats.CORRECT_FIELD)  # strict_match, flexible_extract
# A baseline may omit the reasoning settings: it then stands for a non-reasoning run (their stock values).
REASONING_DEFAULTS: dict[str, Any] = {"reasoning_parser": None, "reasoning_effort": None, "chat_template_kwargs": {},
                                      "answer_extraction": "stock"}
PROTOCOL_KEYS = ("endpoint", "apply_chat_template", "fewshot_as_multiturn", "num_fewshot", "max_gen_toks",
                 "until", *REASONING_DEFAULTS)
