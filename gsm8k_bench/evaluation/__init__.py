"""lm-eval's gsm8k against the served model: the command and local-dataset task (harness), the driver and
client that run inside lm-eval's own environment, the server's /metrics and live progress while it runs,
and the fingerprint of what the model was sent (from lm-eval's samples file).

Imports: core, matrix, serving.  lm_eval_driver.py and lm_eval_client.py run inside lm-eval's environment
and import nothing of gsm8k_bench.
"""
