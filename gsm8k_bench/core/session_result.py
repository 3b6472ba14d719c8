"""What is in a session JSON (`results/<session>.json`): one typed model, field by field.

The session (gsm8k_bench/session/run.py) builds it phase by phase and writes it; every reader loads a file
through it (`results.read`).  `schema/session-result.schema.json` is this model's JSON Schema, checked
in (a test keeps it in sync): `python -m gsm8k_bench.core.session_result --write-schema` rewrites it.

Only `schema`, `session` and `status` are required.  A stub (a session stopped by bad input, or a job that
died before its session wrote its JSON) has no config or metrics, and files of earlier versions of
schema 1 lack the keys added since (`served_model_name`, `gpus`, `reasoning`, `concurrency_levels`, the
gate's `method`, `run_id`, `ci_run_attempt`, ...); they still load.  A key that is present is checked, and
a key the model does not know is refused, except inside lm-eval's own records (`config.generation`) and
Slurm's accounting record.  Dumped with `document()`, a result holds exactly the keys that were set or
read, so a file read and written back is unchanged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gsm8k_bench.core import json_input

SCHEMA_VERSION: Final = 1
STATUSES = ("passed", "failed", "error")
# A full run's JSON is a few MB (1,319 samples); long reasoning responses at several concurrency levels
# stay far below this.  A bigger file is refused before it is parsed.
MAX_FILE_BYTES = 256 * 1024 * 1024
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema" / "session-result.schema.json"

Number = int | float  # as written: an int stays an int (a float field would turn 600 into 600.0)
Status = Literal["passed", "failed", "error"]
# evaluation/harness.py OUTCOMES: what became of each question's request.
OutcomeLabel = Literal["correct", "wrong", "truncated", "empty", "aborted", "server_error"]


class Part(BaseModel):
    """A part of the session JSON whose shape is this project's: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    def document(self) -> dict[str, Any]:
        """As JSON: exactly the keys that were set (or read)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class ErrorRecord(Part):
    message: str = Field(description="What went wrong, prefixed with the phase (setup, server start, "
                                     "evaluation, gate) or `input:` for bad input.")
    log_tail: str = Field(default="", description="The last lines of the server's or lm-eval's log (or a traceback).")


class ContainerRecord(Part):
    """The container spec the server ran in (containers/spec.py `describe`)."""

    image: str | None = Field(default=None, description="The image run.")
    name: str | None = Field(default=None, description="The container's name.")
    command: list[str] = Field(default_factory=list, description="The server command inside the container.")
    devices: list[str] = Field(default_factory=list, description="Device nodes passed in.")
    gpu_ids: list[str] = Field(default_factory=list, description="GPUs requested through the NVIDIA runtime.")
    group_add: list[str] = Field(default_factory=list, description="Extra groups (AMD: video, render).")
    security_opt: list[str] = Field(default_factory=list, description="Security options.")
    ipc: str | None = Field(default=None, description="IPC mode.")
    shm_size: str | None = Field(default=None, description="Shared memory size.")
    network: str | None = Field(default=None, description="Network mode.")
    mounts: list[str] = Field(default_factory=list, description="`source:target[:ro]` per mount.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables set (never secrets).")
    env_by_name: list[str] = Field(
        default_factory=list, description="Variables passed by name from the host (secrets; values never written).")
    labels: dict[str, str] = Field(default_factory=dict, description="Container labels (session, owner run).")
    warm_cache: str | None = Field(default=None, description="Where the compile caches are mounted in the container.")
    docker_run: str | None = Field(default=None, description="The equivalent `docker run` command line.")


class GpuRecord(Part):
    ids: list[int | str] = Field(default_factory=list, description="The GPUs the session held.")
    source: str | None = Field(
        default=None, description="Where the assignment came from (--gpus, the environment, ...).")
    render_nodes: list[int | str] = Field(default_factory=list, description="AMD render nodes of those GPUs.")


class ProtocolRecord(Part):
    """What defines the score's protocol: runs of different protocols are never gated or compared."""

    endpoint: str | None = Field(default=None, description="The API path lm-eval asks (/v1/completions or "
                                                   "/v1/chat/completions).")
    lm_eval_model: str | None = Field(default=None, description="lm-eval's stock model for the endpoint.")
    apply_chat_template: bool | None = Field(default=None, description="Whether the chat template is applied.")
    fewshot_as_multiturn: bool | None = Field(default=None, description="Whether few-shot examples are chat turns.")
    num_fewshot: int | None = Field(default=None, description="Few-shot examples per question.")
    max_gen_toks: int | None = Field(default=None, description="Output token budget per answer.")
    reasoning_parser: str | None = Field(
        default=None, description="The framework's reasoning parser (reasoning models).")
    reasoning_effort: str | None = Field(default=None, description="reasoning_effort sent with every request.")
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict,
                                                 description="chat_template_kwargs sent with every request.")
    answer_extraction: str | None = Field(default=None, description="`stock` (lm-eval's gsm8k) or `last-match`.")
    until: list[str] = Field(default_factory=list, description="Stop sequences, from lm-eval's task config.")


class FingerprintRecord(Part):
    """sha256 of what the model was sent, from lm-eval's samples file (gsm8k_bench/evaluation/fingerprint.py)."""

    sha256: str = Field(description="Of the parts below, in order.")
    n: int | None = Field(default=None, description="Requests hashed (one per question).")
    parts: dict[str, str | None] = Field(
        description="Per part: requests (every rendered request, in doc order), prompt_template (the first "
                    "question's request with its question text blanked: few-shot examples and format), "
                    "generation_args, stop_sequences, chat_template (null when lm-eval applied none).")


class ReasoningRecord(Part):
    """A reasoning model's settings, as the JSON and --dry-run show them."""

    reasoning_parser: str | None = Field(default=None, description="The framework's reasoning parser.")
    reasoning_effort: str | None = Field(default=None, description="reasoning_effort sent with every request.")
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict,
                                                 description="chat_template_kwargs sent with every request.")
    answer_extraction: str | None = Field(default=None, description="`stock` or `last-match`.")
    max_gen_toks: int | None = Field(default=None, description="Output token budget per answer.")
    output_budget: str | None = Field(default=None, description="Where the budget came from.")
    answer_text: str | None = Field(default=None, description="Which response field is scored.")


class DatasetRecord(Part):
    source: Literal["local", "hub"] = Field(description="Local GSM8K files or the Hugging Face hub.")
    dir: str | None = Field(default=None, description="The local folder (train.jsonl, test.jsonl).")
    path: str | None = Field(default=None, description="The hub dataset.")


class ServerRecord(Part):
    """What the launcher keeps about the server it ran."""

    launcher: str | None = Field(default=None, description="process, docker or pyxis.")
    pid: int | None = Field(default=None, description="The server process (process launcher).")
    container: str | None = Field(default=None, description="The container's name (docker).")
    image_id: str | None = Field(default=None, description="The image's id (docker).")
    image_digests: list[str] = Field(default_factory=list, description="The image's repository digests (docker).")
    image_tags: list[str] = Field(default_factory=list, description="The image's tags (docker).")
    log: str | None = Field(default=None, description="The server's log file.")
    warm_cache: str | None = Field(default=None, description="The host folder of the compile caches (docker).")


class Config(Part):
    """What ran: the combination, the commands, the evaluation settings."""

    model: str | None = Field(default=None, description="The model's short name in matrix.yaml.")
    served_model_name: str | None = Field(default=None, description="The name the server answered to (unique per run).")
    checkpoint: str | None = Field(default=None, description="The Hugging Face checkpoint.")
    model_source: str | None = Field(
        default=None, description="Where the weights came from (hub, a converted package, ...).")
    runner: str | None = Field(default=None, description="The runner (h100 ... mi355x, cpu).")
    runner_label: str | None = Field(default=None, description="The runner's CI label.")
    vendor: str | None = Field(default=None, description="nvidia, amd or cpu.")
    framework: str | None = Field(default=None, description="vllm or sglang.")
    launcher: str | None = Field(default=None, description="process, docker or pyxis.")
    image: str | None = Field(default=None, description="The serving image (container launchers; else null).")
    image_override: bool | None = Field(default=None, description="True when --image replaced matrix.yaml's image.")
    server_command: str | None = Field(default=None, description="The exact server command line.")
    container: ContainerRecord | None = Field(default=None, description="The container spec (container launchers).")
    precision: str | None = Field(default=None, description="fp16, fp8 or fp4.")
    precision_description: str | None = Field(default=None, description="The precision in words.")
    dtype: str | None = Field(default=None, description="The dtype asked for.")
    dtype_used: str | None = Field(default=None, description="The dtype the server's log reports it loaded with.")
    quantization: str | None = Field(default=None, description="The quantization method passed to the server.")
    kv_cache_dtype: str | None = Field(default=None, description="The KV-cache dtype passed to the server.")
    tp: int | None = Field(default=None, description="Tensor-parallel size.")
    gpus: GpuRecord | None = Field(default=None, description="The GPUs assigned (null on cpu).")
    num_fewshot: int | None = Field(default=None, description="Few-shot examples per question.")
    limit: int | None = Field(default=None, description="Questions asked (the first N); null for all 1,319.")
    endpoint: str | None = Field(default=None, description="The API path lm-eval asked.")
    protocol: ProtocolRecord | None = Field(default=None, description="The protocol record the gate compares.")
    fingerprint: FingerprintRecord | None = Field(
        default=None, description="What the model actually saw, hashed: the gate pairs only equal fingerprints.")
    generation: dict[str, Any] | None = Field(
        default=None, description="Generation settings: max_gen_toks, and lm-eval's generation_kwargs (until, "
                          "temperature, do_sample, ...) as lm-eval records them.")
    reasoning: ReasoningRecord | None = Field(
        default=None, description="Reasoning settings (reasoning models; else null).")
    concurrency: int | None = Field(default=None, description="The gating level's concurrent requests.")
    concurrency_levels: list[int] = Field(default_factory=list, description="Every level, in run order.")
    request_timeout_s: Number | None = Field(default=None, description="Per-request timeout of lm-eval's client.")
    max_retries: int | None = Field(default=None, description="Retries of lm-eval's client.")
    dataset: DatasetRecord | None = Field(default=None, description="Where the questions came from.")
    lm_eval_command: str | None = Field(default=None, description="The gating level's lm-eval command line.")
    server: ServerRecord | None = Field(default=None, description="The launcher's record of the server (once started).")


class Metrics(Part):
    """lm-eval's numbers, and what the session counts in its samples."""

    strict_match: Number | None = Field(default=None, description="Accuracy, strict-match filter (`#### N`).")
    strict_match_stderr: Number | str | None = Field(
        default=None, description="Its stderr (lm-eval writes \"N/A\" at n = 1).")
    flexible_extract: Number | None = Field(
        default=None, description="Accuracy, flexible-extract filter (the last number).")
    flexible_extract_stderr: Number | str | None = Field(default=None, description="Its stderr.")
    n: int | None = Field(default=None, description="Questions scored.")
    answer_sources: dict[str, int] | None = Field(
        default=None, description="How many scored texts came from each response field (`text` for completions); "
                                  "null in files from before completions runs recorded it.")
    truncated: int | None = Field(default=None, description="Answers that hit the token limit; null when not recorded.")
    outcomes: dict[OutcomeLabel, int] | None = Field(
        default=None, description="Samples per outcome label (every label, zeros too); null when not recorded.")
    strict_invalid_rate: Number | None = Field(
        default=None, description="Share of answers with no number for strict-match.")
    flexible_invalid_rate: Number | None = Field(default=None, description="The same for flexible-extract.")


class ServerMetrics(Part):
    """Deltas of the server's /metrics over the evaluation."""

    output_tokens: int | None = Field(default=None, description="Output tokens generated.")
    output_tokens_per_s: Number | None = Field(default=None, description="Output tokens per second of eval time.")
    requests: int | None = Field(default=None, description="Requests finished.")
    requests_per_s: Number | None = Field(default=None, description="Requests per second of eval time.")
    truncations: int | None = Field(
        default=None, description="Requests that hit the token limit (vLLM; null on SGLang).")
    latency_p50_s: Number | None = Field(default=None, description="End-to-end request latency, median (s).")
    latency_p90_s: Number | None = Field(default=None, description="End-to-end request latency, 90th percentile (s).")
    source: str | None = Field(default=None, description="`<framework> /metrics`; null when not scraped.")


class ScalarCheck(Part):
    """One metric against a scalar baseline (one-sided Wilson bound)."""

    metric: str = Field(description="strict_match or flexible_extract.")
    observed: Number | None = Field(default=None, description="The run's accuracy.")
    baseline: Number | None = Field(default=None, description="The baseline's accuracy.")
    threshold: Number | None = Field(default=None, description="baseline - tolerance.")
    upper_bound: Number | None = Field(default=None, description="The run's one-sided Wilson upper bound.")
    regression: bool = Field(description="True when the upper bound lies below the threshold.")


class ExchangeableSplit(Part):
    """What the two-run test counted: questions right in 1 and in 2 of the 3 runs (the reference's two and
    this one), and this run's right answers among them."""

    right_in_1_of_3: int = Field(description="Right in one of the three runs.")
    right_in_2_of_3: int = Field(description="Right in two of the three runs.")
    run_right: int = Field(description="This run's right answers among those questions.")


class PairedCheck(Part):
    """One metric against the session's reference, question by question."""

    metric: str = Field(description="strict_match or flexible_extract.")
    n: int = Field(description="Questions compared.")
    observed: Number = Field(description="The run's accuracy over them.")
    reference: Number = Field(description="The reference's accuracy over them.")
    difference: Number = Field(description="run - reference.")
    lost: int = Field(description="Right in the reference, wrong now.")
    gained: int = Field(description="Wrong in the reference, right now.")
    test: str | None = Field(default=None, description="The exact test of a drop: 'McNemar exact' (a one-run "
                             "reference) or 'two-run exact' (a reference of two runs; null before).")
    reference_runs: int | None = Field(default=None, description="Runs the reference was built from (null: one).")
    p: Number | None = Field(default=None, description="The test's one-sided p-value of a drop (null before: "
                             "mcnemar_p).")
    mcnemar_p: Number | None = Field(default=None, description="McNemar's exact p-value of a drop, one-sided like "
                                     "the bounds (two-sided in JSONs written before the fingerprint existed); null "
                                     "against a two-run reference.")
    split: ExchangeableSplit | None = Field(default=None, description="Two-run reference: what its test counted.")
    lower_bound: Number = Field(description="One-sided lower bound on the difference (Newcombe method 10).")
    upper_bound: Number = Field(description="One-sided upper bound on the difference, unrounded.")
    threshold: Number | None = Field(
        default=None, description="Results before the per-session level: -tolerance, the upper bound's threshold.")
    gates: bool | None = Field(default=None, description="True for the metric the verdict is decided on.")
    regression: bool = Field(description="The gating metric: p <= the verdict's level (before: the upper "
                             "bound below the threshold); false for a metric that is reported, not gated.")
    lost_doc_ids: list[int] = Field(default_factory=list, description="Every lost question.")
    gained_doc_ids: list[int] = Field(default_factory=list, description="Every gained question.")


class RunOnlyCheck(Part):
    """One metric of the run's questions the reference lacks, against the reference's accuracy (unpaired)."""

    metric: str = Field(description="strict_match or flexible_extract.")
    n: int = Field(description="The run's questions the reference lacks.")
    observed: Number = Field(description="The run's accuracy over them.")
    reference: Number = Field(description="The reference's accuracy over all its questions.")
    lower_bound: Number = Field(description="One-sided lower bound on observed - reference (Newcombe method 10, "
                                            "independent samples).")
    upper_bound: Number = Field(description="One-sided upper bound on observed - reference.")
    threshold: Number = Field(description="-tolerance.")
    regression: bool = Field(description="True when the upper bound lies below the threshold.")


class Coverage(Part):
    """What a paired verdict covered: questions are identified by doc_id, question text and answer key."""

    run: int = Field(description="Questions the run answered.")
    reference: int = Field(description="Questions in the reference.")
    compared: int = Field(description="Questions both answered (paired).")
    run_only: int = Field(description="The run's questions the reference lacks (judged unpaired, run_only_checks).")
    reference_only: int = Field(description="The reference's questions the run did not ask.")
    changed: int = Field(description="doc_ids both asked under another question text or answer key (not compared).")
    changed_doc_ids: list[int] = Field(default_factory=list, description="Those doc_ids.")
    ids_cover_target: bool = Field(
        description="False for a reference written before the answer key was part of a question's id.")
    fingerprint_note: str = Field(default="", description="Which side recorded no protocol fingerprint (paired on "
                                                          "the protocol record alone); empty when both did.")
    run_only_checks: list[RunOnlyCheck] = Field(default_factory=list,
                                                description="Per metric, the run-only questions' check.")


class TruncationCheck(Part):
    """Truncation against the session's reference, question by question (as accuracy, on the share of
    answers that did not hit the token limit)."""

    n: int = Field(description="Questions compared.")
    observed: Number = Field(description="The run's share of truncated answers over them.")
    reference: Number = Field(description="The reference's share.")
    difference: Number = Field(description="run - reference.")
    more: int = Field(description="Truncated now, not in the reference.")
    fewer: int = Field(description="Truncated in the reference, not now.")
    test: str | None = Field(default=None, description="As the paired checks': McNemar exact or two-run exact.")
    reference_runs: int | None = Field(default=None, description="Runs the reference was built from (null: one).")
    p: Number | None = Field(default=None, description="The test's one-sided p-value of a rise (null before: "
                             "mcnemar_p).")
    mcnemar_p: Number | None = Field(default=None, description="McNemar's exact p-value of a rise, one-sided; null "
                                     "against a two-run reference.")
    split: ExchangeableSplit | None = Field(default=None, description="Two-run reference: what its test counted.")
    lower_bound: Number = Field(description="One-sided lower bound on the difference.")
    upper_bound: Number = Field(description="One-sided upper bound on the difference.")
    level: Number = Field(description="The session's level, as for accuracy: (1 - confidence) / family.")
    regression: bool = Field(description="True when p <= level: a truncation regression.")
    more_doc_ids: list[int] = Field(default_factory=list, description="Every question truncated now, not before.")


class BaselineRecord(Part):
    filters: dict[str, Any] = Field(default_factory=dict, description="The baselines.yaml entry's filters.")
    n: int | None = Field(default=None, description="Its number of questions.")
    accuracy: dict[str, Number] = Field(default_factory=dict, description="Metric -> expected accuracy.")
    source: str | None = Field(default=None, description="Where the number comes from.")


class ReferenceRecord(Part):
    path: str = Field(description="The reference file (references/<session>.json).")
    n: int | None = Field(default=None, description="Questions in the reference.")
    compared: int | None = Field(default=None, description="Questions both answered.")
    accuracy: dict[str, Number] = Field(default_factory=dict, description="The reference's accuracies.")
    git_commit: str | None = Field(default=None, description="The commit the reference run ran.")
    date: str | None = Field(default=None, description="When the reference ran.")


class GateVerdict(Part):
    """The gate's verdict: against the session's reference (paired), else a scalar baseline, else not gated."""

    verdict: Literal["pass", "regression", "not_comparable", "not_gated"] | None = Field(
        default=None, description="The verdict; not_comparable (too little of the run compared with its reference, "
                          "see coverage) fails the session like a regression.")
    confidence: Number | None = Field(
        default=None, description="One-sided confidence of the bounds; paired: family-wise, over the family.")
    tolerance: Number | None = Field(default=None, description="The drop tolerated: scalar baselines, and the "
                                     "unpaired check of the run's questions the reference lacks.")
    metric: str | None = Field(default=None, description="Paired: the metric the verdict is decided on.")
    family: int | None = Field(default=None, description="Paired: sessions judged together (--gate-family).")
    level: Number | None = Field(
        default=None, description="Paired: the level of each test, (1 - confidence) / (family x tests).")
    tests: int | None = Field(default=None, description="Paired: the session's tests (2 when truncation is "
                              "checked too; null before: one).")
    baseline: BaselineRecord | None = Field(
        default=None, description="The scalar baseline used (null when paired or none).")
    checks: list[PairedCheck | ScalarCheck] = Field(default_factory=list, description="One check per metric.")
    reason: str | None = Field(default=None, description="Why, in words (for not_gated: what would gate it).")
    method: str | None = Field(default=None, description="Which test judged (null when not gated).")
    changed_doc_ids: list[int] = Field(default_factory=list,
                                       description="Paired: questions whose text differs from the reference's.")
    reference: ReferenceRecord | None = Field(default=None, description="Paired: the reference used.")
    coverage: Coverage | None = Field(default=None, description="Paired: what the verdict covered.")
    truncation: TruncationCheck | None = Field(
        default=None, description="Paired: truncation against the reference (null when it recorded none).")


class Sample(Part):
    """One question as lm-eval scored it."""

    doc_id: int = Field(description="The question's index in GSM8K's test split.")
    question: str | None = Field(default=None, description="The question's text.")
    target: str | None = Field(default=None, description="The reference solution.")
    response: str = Field(default="", description="The scored text.")
    answer_source: str | None = Field(
        default=None, description="The response field scored: text (completions), content, reasoning_content, "
                                  "reasoning, or none (no text, or the request failed).")
    answer_finish_reason: str | None = Field(
        default=None, description="Why generation stopped, as the server said (stop, length, abort, ...).")
    answer_completion_tokens: int | None = Field(default=None, description="Output tokens of the answer.")
    answer_error: str | None = Field(
        default=None, description="Why the request failed after its last retry (HTTP 500, the body is not JSON, "
                                  "a reset connection, a completion without text); absent when it did not.")
    outcome: OutcomeLabel | None = Field(
        default=None, description="correct or wrong (strict-match), truncated (hit the token limit), empty (no "
                                  "text), aborted (finish_reason abort) or server_error (answer_error); null when "
                                  "the client recorded nothing about the request.")
    strict_answer: Any = Field(default=None, description="What strict-match extracted (\"[invalid]\" for nothing).")
    strict_correct: bool | None = Field(default=None, description="strict-match right.")
    flexible_answer: Any = Field(default=None, description="What flexible-extract extracted.")
    flexible_correct: bool | None = Field(default=None, description="flexible-extract right.")


class Timings(Part):
    """Seconds per phase; a phase the session never reached is absent."""

    env_setup_s: Number | None = Field(default=None, description="Shared environments checked or built.")
    model_prep_s: Number | None = Field(default=None, description="Model converted or checked.")
    server_ready_s: Number | None = Field(default=None, description="Server start until it served.")
    eval_s: Number | None = Field(default=None, description="lm-eval, all levels.")
    results_s: Number | None = Field(default=None, description="Reading lm-eval's outputs.")
    total_s: Number | None = Field(default=None, description="The whole session.")


def utc_now() -> str:
    """A timestamp as the result holds them (started_at, ended_at): ISO 8601, UTC, whole seconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Environment(Part):
    gsm8k_bench: str | None = Field(default=None, description="This project's version.")
    lm_eval: str | None = Field(default=None, description="lm-eval's version.")
    nox: str | None = Field(default=None, description="nox's version.")
    framework_version: str | None = Field(default=None, description="The serving framework's version.")
    python: str | None = Field(default=None, description="The session's Python.")
    host: str | None = Field(default=None, description="The host's name.")
    run_id: str | None = Field(
        default=None, description="This run's id (in the served model name and container labels).")
    ci_run_attempt: int | None = Field(default=None, description="GITHUB_RUN_ATTEMPT: the report keeps the newest.")
    git_commit: str | None = Field(default=None, description="The checkout's commit.")
    started_at: str | None = Field(default=None, description="Start, ISO 8601 UTC.")
    ended_at: str | None = Field(default=None, description="End, ISO 8601 UTC.")


class Artifacts(Part):
    work_dir: str | None = Field(default=None, description="The session's folder of logs and lm-eval outputs.")
    server_log: str | None = Field(default=None, description="The server's log.")
    lm_eval_results: str | None = Field(default=None, description="lm-eval's results file (gating level).")
    lm_eval_samples: str | None = Field(default=None, description="lm-eval's samples file (gating level).")
    lm_eval_log: str | None = Field(default=None, description="lm-eval's log (gating level).")


class LevelRunRecord(Part):
    concurrency: int = Field(description="Concurrent requests.")
    gating: bool = Field(description="True for the gating level.")
    eval_s: Number | None = Field(default=None, description="Its eval time.")
    server_metrics: ServerMetrics | None = Field(default=None, description="Its /metrics deltas.")
    lm_eval_dir: str | None = Field(default=None, description="Its lm-eval folder.")
    metrics: Metrics | None = Field(default=None, description="Its metrics.")
    samples: list[Sample] | None = Field(
        default=None, description="Its samples; null for the gating level (top level).")


class PairedNumbers(Part):
    n: int = Field(description="Questions compared.")
    reference: Number = Field(description="The earlier level's accuracy.")
    run: Number = Field(description="The later level's accuracy.")
    difference: Number = Field(description="run - reference.")
    lower: Number = Field(description="One-sided lower bound on the difference.")
    upper: Number = Field(description="One-sided upper bound on the difference.")
    confidence: Number = Field(description="The bounds' confidence.")
    mcnemar_p: Number = Field(description="McNemar's exact p-value, one-sided in the direction of the difference "
                                          "(two-sided in older JSONs).")
    lost: int = Field(description="Right before, wrong now.")
    gained: int = Field(description="Wrong before, right now.")
    regressed: bool = Field(description="Upper bound below -tolerance.")
    improved: bool = Field(description="Lower bound above +tolerance.")
    significant: bool = Field(description="The one-sided bound in the direction of the difference excludes 0 "
                                          "(the same level as the p-value).")


class Flip(Part):
    doc_id: int = Field(description="The question.")
    moves: dict[str, Literal["lost", "gained"]] = Field(description="Metric -> lost or gained.")


class LevelComparison(Part):
    reference: int = Field(description="The earlier level.")
    run: int = Field(description="The later level.")
    verdict: str = Field(description="regression, improvement, within_tolerance or not_compared.")
    reason: str = Field(default="", description="Why not compared.")
    metrics: dict[str, PairedNumbers] = Field(default_factory=dict, description="Per metric.")
    flips: list[Flip] = Field(default_factory=list, description="Questions whose outcome changed.")
    answers_changed: list[int] = Field(default_factory=list, description="Same outcome, another answer.")


class ConcurrencyBlock(Part):
    """Several concurrency levels on one server start (absent with one level)."""

    levels: list[int] = Field(description="Every level, in run order.")
    gate_level: int = Field(description="The gated level (its metrics and samples are the top-level ones).")
    runs: list[LevelRunRecord] = Field(description="Per level.")
    comparisons: list[LevelComparison] = Field(description="Each pair of levels, the earlier as the reference.")


class PackRecord(Part):
    gpus: list[int | str] = Field(default_factory=list, description="The GPUs `nox -s pack` gave the session.")
    log: str | None = Field(default=None, description="The session's nox log.")


class StagedDesign(Part):
    """A staged run's design (verdicts/sequential.py Design, at the gate's level)."""

    looks: int = Field(description="Looks (stages) planned.")
    fractions: list[Number] = Field(description="Share of the questions asked at each look.")
    design_drop: Number = Field(description="The drop (accuracy, e.g. 0.02) the futility boundary protects against.")
    beta: Number = Field(description="The beta spent on futility over the run.")
    level: Number = Field(description="The one-sided level spent on efficacy: the gate's per-session level.")
    stage_ends: list[int] = Field(description="Questions asked by each look.")


class StagedLook(Part):
    """One look of a staged run: the paired counts so far, the boundaries and the decision."""

    look: int = Field(description="1-based.")
    asked: int = Field(description="Questions asked so far.")
    lost: int = Field(description="Right in the reference, wrong now (gating metric).")
    gained: int = Field(description="Wrong in the reference, right now.")
    z: Number = Field(description="McNemar z of a drop, (lost - gained) / sqrt(lost + gained).")
    p: Number = Field(description="One-sided exact McNemar p of a drop.")
    efficacy: Number = Field(description="The efficacy (regression) boundary on z.")
    nominal: Number = Field(description="The p at or below which this look calls a regression.")
    futility: Number | None = Field(description="The futility boundary on z (stop, pass below it); null: none.")
    drift: Number = Field(description="The expected full-run z at the design drop the boundaries were computed for.")
    decision: Literal["regression", "no_regression", "continue"] = Field(description="What this look decided.")


class StagedRecord(Part):
    """A staged run (a session with a per-question reference and without --full)."""

    seed: int = Field(description="Seed of the question order (staging.question_order).")
    method: str = Field(description="The group-sequential test, named.")
    questions: int = Field(description="Questions in the staged set (the first --limit N, else the test split).")
    design: StagedDesign = Field(description="The design.")
    looks: list[StagedLook] = Field(description="Every look taken, in order; the last one's decision is the verdict's.")
    stopped_early: bool = Field(description="Fewer questions asked than the set holds: `nox -s promote` refuses it.")


class SessionResult(Part):
    """`results/<session>.json`: one session's outcome, written whatever happened."""

    schema_: Literal[1] = Field(alias="schema", description="The file format's version.")
    session: str = Field(description="gsm8k-<model>-<runner>-<framework>-<precision>-tp<N>.")
    status: Status = Field(description="passed (scored, no regression), failed (a regression, a dead or hung "
                                       "server, lm-eval failed, an interrupt) or error (bad input).")
    error: ErrorRecord | None = Field(default=None, description="Why the session did not pass (null when it did).")
    config: Config | None = Field(default=None, description="What ran (null in a stub).")
    metrics: Metrics | None = Field(default=None, description="The gating level's numbers (null when nothing scored).")
    gate: GateVerdict | None = Field(default=None, description="The verdict (null when the session never got there).")
    server_metrics: ServerMetrics | None = Field(
        default=None, description="Server-side numbers over the gating level's eval.")
    samples: list[Sample] = Field(default_factory=list, description="Per question, the gating level's.")
    timings: Timings = Field(default_factory=Timings, description="Seconds per phase.")
    environment: Environment | None = Field(default=None, description="Versions, host, commit, start and end.")
    artifacts: Artifacts | None = Field(default=None, description="Where the logs and lm-eval's files are.")
    concurrency: ConcurrencyBlock | None = Field(default=None, description="Only with several concurrency levels.")
    staged: StagedRecord | None = Field(default=None, description="Only for a staged run: its design and looks.")
    slurm: dict[str, Any] | None = Field(
        default=None, description="Slurm runs: sacct's record of the job, its log, partition.")
    pack: PackRecord | None = Field(default=None, description="`nox -s pack` runs: the GPUs and the log.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InvalidResult(ValueError):
    """A session JSON (its schema and session name right) whose content does not fit the model."""

    def __init__(self, path: Path, error: ValidationError) -> None:
        self.keys = [".".join(map(str, e["loc"])) for e in error.errors()]
        super().__init__(f"{path}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                 for e in error.errors()[:5]))


def load(path: Path) -> SessionResult:
    """A session JSON through the model; files of earlier versions of the schema load too.  Any file that
    is not one (unreadable, too big or deep, not JSON, another schema) is a ValueError naming it."""
    document = json_input.read(path, MAX_FILE_BYTES)
    if not isinstance(document, dict) or document.get("schema") != SCHEMA_VERSION or "session" not in document:
        raise ValueError(f"{path}: not a gsm8k-bench session JSON (schema {SCHEMA_VERSION})")
    try:
        return SessionResult.model_validate(document)
    except ValidationError as exc:
        raise InvalidResult(path, exc) from None


def json_schema() -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **SessionResult.model_json_schema(by_alias=True)}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m gsm8k_bench.core.session_result",
                                     description="The session JSON's JSON Schema (from the typed model).")
    parser.add_argument("--write-schema", action="store_true", help=f"rewrite {SCHEMA_FILE}")
    args = parser.parse_args(argv)
    if args.write_schema:
        SCHEMA_FILE.parent.mkdir(exist_ok=True)
        SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}")
    else:
        print(schema_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
