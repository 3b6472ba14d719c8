"""Parse server commands with SGLang's own parser (run with the SGLang environment's python).

stdin: a JSON list of argv lists; stdout: a JSON list of {"ok": bool, "error": str, "parsed": {...}}.
"""

import contextlib
import io
import json
import sys


def check(argv, prepare_server_args):
    if argv[1:3] != ["-m", "sglang.launch_server"]:
        return {"ok": False, "error": f"not an SGLang server command: {argv[:3]}"}
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = prepare_server_args(argv[3:])
    except SystemExit:
        return {"ok": False, "error": err.getvalue().strip().splitlines()[-1]}
    return {"ok": True, "error": "", "parsed": {
        "model_path": args.model_path, "tp_size": args.tp_size, "dtype": args.dtype,
        "quantization": args.quantization, "kv_cache_dtype": args.kv_cache_dtype,
        "context_length": args.context_length, "served_model_name": args.served_model_name,
        "port": args.port, "host": args.host}}


def main():
    from sglang.srt.server_args import prepare_server_args

    json.dump([check(argv, prepare_server_args) for argv in json.load(sys.stdin)], sys.stdout)


if __name__ == "__main__":
    main()
