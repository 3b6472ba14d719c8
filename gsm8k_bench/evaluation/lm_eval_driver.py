"""`lm_eval run` for one task, indexing only the task folder it is given (run in the lm-eval env).

lm-eval's own CLI indexes every task the harness ships before the first request (about 8 s here);
this driver calls the same `simple_evaluate` with a TaskManager that sees only --include_path, and
saves results and samples with the same EvaluationTracker, so outputs and scores are lm-eval's own.
--model names a stock lm-eval API model; the driver runs this project's class derived from it
(lm_eval_client.py: the same requests, payloads and parsing).  It can be started early: with
--start-when FILE, lm-eval imports, builds the client, loads the dataset and builds every request while
the server loads, and sends the first one once FILE exists; with --answered-file FILE it creates FILE
once every answer is in (the server may go then: what is left is lm-eval's scoring and writing); with
--stages DIR it asks in the session's stages (lm_eval_client.staged).  The
chat client also scores a reasoning model's reasoning field when `content` is empty, and each sample
records where its scored text came from.
Flags are lm_eval's (but those three): swap `python lm_eval_driver.py` for `python -m lm_eval run`
to reproduce a run by hand with the stock model.
Standalone on purpose: the lm-eval environment does not have this project installed, so the client
module is loaded from beside this file.
"""

import argparse
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from types import ModuleType


def load_client() -> ModuleType:
    """lm_eval_client.py, from beside this file (importing it registers the classes with lm-eval)."""
    path = Path(__file__).with_name("lm_eval_client.py")
    spec = importlib.util.spec_from_file_location("lm_eval_client", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record_tasks(into: dict[str, object]) -> None:
    """Record the Task objects simple_evaluate hands to lm-eval's `evaluate` (name -> Task): a staged
    client scores each stage with their filters and metric.  The same call, its argument only looked at."""
    from lm_eval import evaluator

    evaluate = evaluator.evaluate

    def recording(*args: object, task_dict: dict[str, object], **kwargs: object) -> object:
        tasks = task_dict.get("tasks", task_dict)
        assert isinstance(tasks, dict)
        into.update({name: task for name, task in tasks.items() if hasattr(task, "process_results")})
        return evaluate(*args, task_dict=task_dict, **kwargs)

    evaluator.evaluate = recording


def main() -> None:
    # Flags not given stay out of the namespace, as in `lm_eval run`, so lm-eval's defaults apply.
    parser = argparse.ArgumentParser(prog="lm_eval_driver", argument_default=argparse.SUPPRESS)
    parser.add_argument("--model", required=True)
    parser.add_argument("--model_args", required=True)
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--include_path", required=True)
    parser.add_argument("--num_fewshot", type=int, required=True)
    parser.add_argument("--output_path", required=True)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--log_samples", action="store_true")
    parser.add_argument("--apply_chat_template", action="store_true")
    parser.add_argument("--fewshot_as_multiturn", action="store_true")
    parser.add_argument("--gen_kwargs", type=json.loads, help="a JSON object, sent with every request")
    parser.add_argument("--start-when", help="send the first request once this file exists")
    parser.add_argument("--answered-file", help="create this file once every request is answered")
    parser.add_argument("--stages", help="ask in the stages this folder's stages.json gives, scoring each "
                        "and waiting for the session's decision (lm_eval_client.staged)")
    args = parser.parse_args()

    from lm_eval import simple_evaluate
    from lm_eval.config.evaluate_config import EvaluatorConfig
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    client = load_client()
    if args.model not in client.BY_STOCK_MODEL:
        parser.error(f"--model {args.model!r}: allowed values are {', '.join(sorted(client.BY_STOCK_MODEL))}")
    client.SendsOnGo.go_file = vars(args).pop("start_when", None)
    client.SendsOnGo.answered_file = vars(args).pop("answered_file", None)
    client.SendsOnGo.stage_dir = vars(args).pop("stages", None)
    if client.SendsOnGo.stage_dir:
        record_tasks(client.TASKS)
    # lm-eval's own reading of its flags (model_args as a dict, defaults, metadata), as `lm_eval run` does.
    cfg = EvaluatorConfig.from_cli(args)

    tracker = EvaluationTracker(output_path=cfg.output_path)
    results = simple_evaluate(
        model=client.BY_STOCK_MODEL[cfg.model],
        model_args=cfg.model_args,
        tasks=cfg.tasks.split(","),
        num_fewshot=cfg.num_fewshot,
        batch_size=cfg.batch_size,
        device=cfg.device,
        limit=cfg.limit,
        log_samples=cfg.log_samples,
        apply_chat_template=cfg.apply_chat_template,
        fewshot_as_multiturn=cfg.fewshot_as_multiturn,
        gen_kwargs=cfg.gen_kwargs,
        evaluation_tracker=tracker,
        task_manager=TaskManager(include_path=cfg.include_path, include_defaults=False, metadata=cfg.metadata),
        metadata=cfg.metadata,
    )
    if results is None:
        raise SystemExit("lm-eval returned no results")
    samples = results.pop("samples", None)
    for task_samples in (samples or {}).values():
        client.annotate(task_samples)
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"] if samples else ():
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    print(make_table(results))
    # Every file is written and closed: skip the interpreter's teardown of lm-eval's imports (0.2 s here).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
