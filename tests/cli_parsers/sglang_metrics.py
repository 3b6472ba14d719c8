"""Print SGLang's own /metrics text for known events (run with the SGLang environment's python).

SGLang has no CPU serving path here, so its metric collectors (the code behind its /metrics) record
a scheduler state and finished requests, and prometheus_client renders them exactly as the server
would.  argv[1]: a local Hugging Face model folder (SGLang reads its config); stdin: a JSON object
with running, queued (each a total and a per-priority breakdown), decode_tokens, finished and
generation_tokens; stdout: the exposition text.
"""

import json
import sys


def main():
    from prometheus_client import generate_latest
    from sglang.srt.observability import metrics_collector as mc
    from sglang.srt.server_args import prepare_server_args, set_global_server_args_for_scheduler

    events = json.load(sys.stdin)
    args = prepare_server_args(["--model-path", sys.argv[1], "--enable-metrics", "--device", "cpu",
                                "--enable-priority-scheduling"])
    set_global_server_args_for_scheduler(args)
    labels = {"model_name": "m", "engine_type": "unified", "tp_rank": 0, "pp_rank": 0, "moe_ep_rank": 0,
              "priority": ""}
    scheduler = mc.SchedulerMetricsCollector(labels, args)
    scheduler.log_stats(mc.SchedulerStats(
        num_running_reqs=mc.QueueCount(events["running"], {int(k): v for k, v in events["running_by"].items()}),
        num_queue_reqs=mc.QueueCount(events["queued"], {int(k): v for k, v in events["queued_by"].items()})))
    scheduler.increment_realtime_tokens(None, prefill_compute_tokens=1000, decode_tokens=events["decode_tokens"])
    tokenizer = mc.TokenizerMetricsCollector(args, {"model_name": "m", "engine_type": "unified", "priority": ""})
    for _ in range(events["finished"]):
        tokenizer.observe_one_finished_request({"model_name": "m", "engine_type": "unified", "priority": ""},
                                               prompt_tokens=500, generation_tokens=events["generation_tokens"],
                                               cached_tokens=0, e2e_latency=1.5, has_grammar=False)
    sys.stdout.write(generate_latest().decode())


if __name__ == "__main__":
    main()
