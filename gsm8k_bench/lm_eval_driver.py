"""`lm_eval run` for one task, indexing only the task folder it is given (run in the lm-eval env).

lm-eval's own CLI indexes every task the harness ships before the first request (about 8 s here);
this driver calls the same `simple_evaluate` with a TaskManager that sees only --include_path, and
saves results and samples with the same EvaluationTracker, so outputs and scores are lm-eval's own.
It can also be started early: with --start-when FILE it imports lm-eval (seconds) while the server
loads, then waits for FILE to exist before sending the first request.
The chat model runs as this project's client (lm_eval_client.py: lm-eval's local-chat-completions,
scoring a reasoning model's reasoning field when `content` is empty), and each sample records where
its scored text came from.
Flags are lm_eval's (but --start-when): swap `python lm_eval_driver.py` for `python -m lm_eval run`
to reproduce a run by hand with lm-eval's stock clients.
Standalone on purpose: the lm-eval environment does not have this project installed.
"""

import argparse
import json
import os
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(prog="lm_eval_driver")
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
    parser.add_argument("--start-when", help="wait for this file to exist after importing lm-eval")
    args = parser.parse_args()

    import lm_eval.models.openai_completions  # noqa: F401 - the API clients, imported ahead of the start
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import lm_eval_client

    if args.start_when:
        print("lm-eval imported; waiting for the server", flush=True)
        while not os.path.exists(args.start_when):
            time.sleep(0.05)

    tracker = EvaluationTracker(output_path=args.output_path)
    results = simple_evaluate(
        model=lm_eval_client.CLIENTS.get(args.model, args.model),
        model_args=args.model_args,
        gen_kwargs=args.gen_kwargs,
        tasks=args.tasks.split(","),
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        log_samples=args.log_samples,
        apply_chat_template=args.apply_chat_template,
        fewshot_as_multiturn=args.fewshot_as_multiturn,
        evaluation_tracker=tracker,
        task_manager=TaskManager(include_path=args.include_path, include_defaults=False),
    )
    if results is None:
        raise SystemExit("lm-eval returned no results")
    samples = results.pop("samples", None)
    for task_samples in (samples or {}).values():
        lm_eval_client.annotate(task_samples)
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"] if samples else ():
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    print(make_table(results))


if __name__ == "__main__":
    main()
