"""What makes two runs comparable: the metrics both score and the protocol record's keys.

The gate (baselines), the references and the comparisons all read runs through these; a run, baseline
or reference whose protocol differs in any key, or whose fingerprint differs in any part, is not compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gsm8k_bench.evaluation import fingerprint
from gsm8k_bench.verdicts import paired_stats

METRICS = tuple(paired_stats.CORRECT_FIELD)  # strict_match, flexible_extract
# A baseline may omit the reasoning settings: it then stands for a non-reasoning run (their stock values).
REASONING_DEFAULTS: dict[str, Any] = {"reasoning_parser": None, "reasoning_effort": None, "chat_template_kwargs": {},
                                      "answer_extraction": "stock"}
FINGERPRINT_PARTS = fingerprint.PARTS
PROTOCOL_KEYS = ("endpoint", "apply_chat_template", "fewshot_as_multiturn", "num_fewshot", "max_gen_toks",
                 "until", *REASONING_DEFAULTS)


def fingerprint_difference(reference: Mapping[str, Any] | None, run: Mapping[str, Any] | None) -> str:
    """Why two runs' protocol fingerprints (gsm8k_bench/evaluation/fingerprint.py) forbid pairing them,
    naming the parts that differ; '' when they agree or either side predates fingerprints (the protocol
    record alone then decides).  `requests` is compared only between runs of the same questions: the
    request texts of other questions differ by design."""
    if not reference or not run:
        return ""
    parts = [part for part in FINGERPRINT_PARTS if part != "requests"]
    if reference.get("n") == run.get("n"):  # --limit N asks the first N questions
        parts.append("requests")
    differ = [part for part in parts if reference["parts"].get(part) != run["parts"].get(part)]
    if not differ:
        return ""
    return ("protocol fingerprints differ in " + ", ".join(differ) + " (reference, run): "
            + "; ".join(f"{part} {str(reference['parts'].get(part))[:12]} vs {str(run['parts'].get(part))[:12]}"
                        for part in differ))


def fingerprint_missing(reference: Mapping[str, Any] | None, run: Mapping[str, Any] | None) -> str:
    """Which side was recorded before fingerprints ('' when both have one): such runs are paired on the
    protocol record alone, and the verdict says so."""
    missing = [side for side, record in (("the reference", reference), ("the run", run)) if not record]
    return (f"{' and '.join(missing)} recorded no protocol fingerprint (written before fingerprints): paired on "
            "the protocol record alone") if missing else ""
