"""lm-eval's gsm8k against an OpenAI-compatible server: the command, the local-dataset task, the outputs.

lm-eval runs from its own shared environment and talks HTTP, so no serving image needs it installed.
With a local dataset directory the task is lm-eval's stock gsm8k (prompt, filters, metrics) with only
the data files swapped in, so a local run and a hub run score the same way.
"""

from __future__ import annotations

import ast
import json
import math
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gsm8k_bench.core.errors import ConfigError, EvalError
from gsm8k_bench.matrix.reasoning import Reasoning

STOCK_TASK = "gsm8k"
LOCAL_TASK = "gsm8k_local"
DATASET_ENV = "GSM8K_DATASET_DIR"
ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
LM_EVAL_MODELS = {"completions": "local-completions", "chat": "local-chat-completions"}
STRICT, FLEXIBLE = "strict-match", "flexible-extract"


@dataclass(frozen=True)
class EvalSettings:
    protocol: str
    num_fewshot: int
    limit: int | None
    concurrency: int
    request_timeout_s: float
    max_retries: int
    max_gen_toks: int
    reasoning: Reasoning | None = None
    reasoning_parser: str | None = None  # the serving framework's name for it
    budget_rule: str = "max_gen_toks"  # where max_gen_toks came from

    @property
    def endpoint(self) -> str:
        return ENDPOINTS[self.protocol]

    def protocol_record(self) -> dict[str, Any]:
        """What defines the score's protocol: results of different protocols are never compared."""
        chat = self.protocol == "chat"
        return {
            "endpoint": self.endpoint,
            "lm_eval_model": LM_EVAL_MODELS[self.protocol],
            "apply_chat_template": chat,
            "fewshot_as_multiturn": chat,
            "num_fewshot": self.num_fewshot,
            "max_gen_toks": self.max_gen_toks,
            **self.reasoning_protocol(),
        }

    def reasoning_protocol(self) -> dict[str, Any]:
        """The reasoning settings that change a score (their stock values for a non-reasoning model)."""
        reasoning = self.reasoning
        return {
            "reasoning_parser": self.reasoning_parser,
            "reasoning_effort": reasoning.effort if reasoning else None,
            "chat_template_kwargs": dict(reasoning.chat_template_kwargs) if reasoning else {},
            "answer_extraction": reasoning.extraction if reasoning else "stock",
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DRIVER = Path(__file__).with_name("lm_eval_driver.py")


def lm_eval_command(python: str | Path, settings: EvalSettings, *, served_name: str, base_url: str,
                    output_dir: Path, task: str, include_path: Path) -> list[str]:
    model_args = ",".join([
        f"model={served_name}",
        f"base_url={base_url}{settings.endpoint}",
        f"num_concurrent={settings.concurrency}",
        f"max_retries={settings.max_retries}",
        f"timeout={int(settings.request_timeout_s)}",
        f"max_gen_toks={settings.max_gen_toks}",
        "tokenized_requests=False",
        "tokenizer_backend=None",  # the server tokenizes; no tokenizer download here
    ])
    argv = [str(python), str(DRIVER),
            "--model", LM_EVAL_MODELS[settings.protocol],
            "--model_args", model_args,
            "--tasks", task,
            "--include_path", str(include_path),
            "--num_fewshot", str(settings.num_fewshot),
            "--output_path", str(output_dir),
            "--log_samples"]
    if settings.limit is not None:
        argv += ["--limit", str(settings.limit)]
    if settings.protocol == "chat":
        argv += ["--apply_chat_template", "--fewshot_as_multiturn"]
    request_fields = settings.reasoning.request_fields() if settings.reasoning else {}
    if request_fields:  # lm-eval sends gen_kwargs with every request, and records them
        argv += ["--gen_kwargs", json.dumps(request_fields, sort_keys=True)]
    return argv


# --------------------------------------------------------------------------- local dataset


def lm_eval_environment(dataset_dir: Path | None, environ: Mapping[str, str]) -> dict[str, str]:
    """lm-eval's environment: with local files, the datasets library never asks the hub."""
    return {**environ, "HF_DATASETS_OFFLINE": "1"} if dataset_dir else dict(environ)


def dataset_dir_from(option: str | None, environ: Mapping[str, str]) -> Path | None:
    value = option or environ.get(DATASET_ENV)
    return Path(value).expanduser().resolve() if value else None


def validate_dataset_dir(path: Path) -> None:
    """A clear error before any server starts: which file is missing or which line is malformed."""
    if not path.is_dir():
        raise ConfigError(f"dataset dir {path} (--dataset-dir or {DATASET_ENV}): not a directory; it must hold "
                          "train.jsonl and test.jsonl")
    for split in ("train", "test"):
        file = path / f"{split}.jsonl"
        if not file.is_file():
            raise ConfigError(f"{file}: missing; a GSM8K dataset dir holds train.jsonl and test.jsonl")
        _validate_jsonl(file)


def _validate_jsonl(file: Path) -> None:
    """Every line a GSM8K row; the first bad one is named file:line."""
    rows = 0
    with file.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{file}:{number}: not JSON lines ({exc.msg})") from None
            except RecursionError:
                raise ConfigError(f"{file}:{number}: not a GSM8K row (nested too deeply to parse)") from None
            if not isinstance(row, dict) or not {"question", "answer"} <= row.keys():
                raise ConfigError(f"{file}:{number}: each line needs keys 'question' and 'answer'")
            if "####" not in str(row["answer"]):
                raise ConfigError(f"{file}:{number}: 'answer' must end with '#### <number>' as in GSM8K")
            rows += 1
    if not rows:
        raise ConfigError(f"{file}: empty; a GSM8K split has one JSON object per line")


HUB_DATASET = ("openai/gsm8k", "main")
_EXPORT = """
import sys
from datasets import load_dataset
data = load_dataset(sys.argv[1], sys.argv[2])
for split in ("train", "test"):
    data[split].to_json(f"{sys.argv[3]}/{split}.jsonl", lines=True, force_ascii=False)
"""


def export_hub_dataset(lm_eval_python: Path, target: Path) -> None:
    """Write the hub's GSM8K as the local-dataset layout (run where the hub is reachable)."""
    target.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([str(lm_eval_python), "-c", _EXPORT, *HUB_DATASET, str(target)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise EvalError(f"exporting {HUB_DATASET[0]} failed (is the hub reachable?): {last}")


def stock_task_file(lm_eval_env: Path) -> Path:
    found = sorted(lm_eval_env.glob("lib/python*/site-packages/lm_eval/tasks/gsm8k/gsm8k.yaml"))
    if not found:
        raise EvalError(f"lm-eval's gsm8k task file is not in {lm_eval_env}; rebuild that environment")
    return found[0]


def last_match_filters(stock_task: Path) -> list[dict[str, Any]]:
    """The stock task's filters with strict-match taking the last `#### N` instead of the first."""
    import yaml

    filters: list[dict[str, Any]] = yaml.safe_load(stock_task.read_text(encoding="utf-8"))["filter_list"]
    strict = next(f for f in filters if f["name"] == STRICT)
    next(step for step in strict["filter"] if step["function"] == "regex")["group_select"] = -1
    return filters


def write_task(dataset_dir: Path | None, task_dir: Path, stock_task: Path, extraction: str = "stock") -> str:
    """The task folder lm-eval indexes: the stock gsm8k YAML included as it is (hub data), or with only
    its data files swapped for local JSON lines; with extraction `last-match`, strict-match takes the
    last `#### N`.  Returns the task's name."""
    task_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"include: {json.dumps(str(stock_task))}"]
    if extraction == "last-match":
        lines.append(f"filter_list: {json.dumps(last_match_filters(stock_task))}")
    task = STOCK_TASK
    if dataset_dir is not None:
        task = LOCAL_TASK
        lines += [
            f"task: {LOCAL_TASK}",
            "dataset_path: json",
            "dataset_name: null",
            "dataset_kwargs:",
            "  data_files:",
            f"    train: {json.dumps(str(dataset_dir / 'train.jsonl'))}",
            f"    test: {json.dumps(str(dataset_dir / 'test.jsonl'))}",
        ]
    (task_dir / f"{task}.yaml").write_text("\n".join(lines) + "\n")
    return task


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class EvalOutput:
    metrics: dict[str, Any]
    samples: list[dict[str, Any]]
    generation: dict[str, Any]
    results_file: Path
    samples_file: Path
    lm_eval_version: str | None


def _newest(output_dir: Path, pattern: str) -> Path:
    found = sorted(output_dir.rglob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise EvalError(f"lm-eval wrote no {pattern} under {output_dir}")
    return found[-1]


def literal(value: Any) -> Any:
    """lm-eval writes some sample fields as Python reprs rather than JSON; read both."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _first_response(resps: Any) -> str:
    resps = literal(resps)
    while isinstance(resps, list | tuple) and resps:
        resps = resps[0]
    return resps if isinstance(resps, str) else ""


def answer_counts(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """How many scored texts came from each response field, and how many hit the token limit (None where
    the client recorded nothing, as lm-eval's stock clients do not)."""
    if not samples or any("answer_source" not in s for s in samples):
        return {"answer_sources": None, "truncated": None}
    sources: dict[str, int] = {}
    for sample in samples:
        sources[sample["answer_source"]] = sources.get(sample["answer_source"], 0) + 1
    return {"answer_sources": dict(sorted(sources.items())),
            "truncated": sum(s.get("answer_finish_reason") == "length" for s in samples)}


# A sample's outcome label, first match wins: the request failed after its retries (an HTTP error, a reset
# connection, a body that is not JSON, a completion without text), the server aborted it, generation hit
# the token limit, the answer is empty, else right or wrong under strict-match (the headline metric).
# Aborted and server_error requests are never wrong answers: verdicts.gate.unanswered fails the run.
OUTCOMES = ("correct", "wrong", "truncated", "empty", "aborted", "server_error")


def outcome(sample: dict[str, Any]) -> str | None:
    """The sample's label, or None when the client recorded nothing about its request (lm-eval's stock
    clients): without the finish reason a truncated or aborted answer cannot be told from a wrong one."""
    if "answer_source" not in sample:
        return None
    if sample.get("answer_error"):
        return "server_error"
    if sample.get("answer_finish_reason") == "abort":
        return "aborted"
    if sample.get("answer_finish_reason") == "length":
        return "truncated"
    if not sample["response"].strip():
        return "empty"
    return "correct" if sample.get("strict_correct") else "wrong"


def outcome_counts(samples: list[dict[str, Any]]) -> dict[str, int] | None:
    """Label -> samples (every label, zeros too), or None when any sample has no label."""
    labels = [sample.get("outcome") for sample in samples]
    if not labels or None in labels:
        return None
    return {label: labels.count(label) for label in OUTCOMES}


def asked_metrics(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """lm-eval's metrics (the mean of exact_match, its standard error with n - 1) over the questions a
    staged run asked: lm-eval's own results also count the questions it never sent, as wrong."""
    n = len(samples)
    found: dict[str, Any] = {"n": n}
    for prefix, metric in (("strict", "strict_match"), ("flexible", "flexible_extract")):
        right = [float(s.get(f"{prefix}_correct", False)) for s in samples]
        mean = sum(right) / n if n else 0.0
        variance = sum((x - mean) ** 2 for x in right) / (n - 1) if n > 1 else 0.0
        found[metric], found[f"{metric}_stderr"] = mean, math.sqrt(variance / n) if n else 0.0
    return found


def parse_outputs(output_dir: Path, task: str) -> EvalOutput:
    results_file = _newest(output_dir, "results_*.json")
    samples_file = _newest(output_dir, f"samples_{task}_*.jsonl")
    try:
        results = json.loads(results_file.read_text())
    except ValueError as exc:
        raise EvalError(f"{results_file}: not a complete JSON file ({exc}): lm-eval's output is cut short "
                        "(a full disk?)") from None
    task_results = results.get("results", {}).get(task)
    if not task_results:
        raise EvalError(f"{results_file}: no results for task {task!r}")
    try:
        metrics = {
            "strict_match": task_results[f"exact_match,{STRICT}"],
            "strict_match_stderr": task_results[f"exact_match_stderr,{STRICT}"],
            "flexible_extract": task_results[f"exact_match,{FLEXIBLE}"],
            "flexible_extract_stderr": task_results[f"exact_match_stderr,{FLEXIBLE}"],
            "n": results["n-samples"][task]["effective"],
        }
    except KeyError as exc:
        raise EvalError(f"{results_file}: lm-eval's results lack {exc.args[0]!r}") from None

    by_doc: dict[int, dict[str, Any]] = {}
    with samples_file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise EvalError(f"{samples_file}:{number}: not a complete JSON line ({exc}): lm-eval's output is "
                                "cut short (a full disk?)") from None
            doc = literal(row["doc"])
            entry = by_doc.setdefault(row["doc_id"], {
                "doc_id": row["doc_id"],
                "question": doc.get("question") if isinstance(doc, dict) else None,
                "target": row["target"],
                "response": _first_response(row["resps"]),
                # Where the client found the scored text, why generation stopped, why the request failed.
                **{f"answer_{k}": v for k, v in (row.get("answer") or {}).items()},
            })
            filtered = literal(row["filtered_resps"])
            answer = filtered[0] if isinstance(filtered, list) and filtered else filtered
            prefix = {STRICT: "strict", FLEXIBLE: "flexible"}.get(row["filter"])
            if prefix:
                entry[f"{prefix}_answer"] = answer
                entry[f"{prefix}_correct"] = bool(row["exact_match"])
    samples = [by_doc[k] for k in sorted(by_doc)]
    if len(samples) != metrics["n"]:
        raise EvalError(f"{samples_file}: {len(samples)} question(s), but {results_file.name} scored {metrics['n']}: "
                        "lm-eval's output is cut short (a full disk?)")
    asked = [sample for sample in samples if not sample.pop("answer_not_asked", False)]
    if len(asked) < len(samples):  # a staged run that stopped early: lm-eval scored the rest as ""
        samples = asked
        metrics.update(asked_metrics(samples))
    for sample in samples:
        sample["outcome"] = outcome(sample)
    metrics.update(answer_counts(samples))
    metrics["outcomes"] = outcome_counts(samples)
    generation = results.get("configs", {}).get(task, {}).get("generation_kwargs", {})
    return EvalOutput(metrics, samples, generation, results_file, samples_file,
                      results.get("lm_eval_version"))
