"""Parse server commands with SGLang's own parser (run with the SGLang environment's python).

stdin: a JSON list of argv lists; stdout: a JSON list of {"ok": bool, "error": str, "parsed": {...}}.
"""

import contextlib
import io
import json
import sys


def check(argv, prepare_server_args, reasoning_parsers):
    if argv[1:3] != ["-m", "sglang.launch_server"]:
        return {"ok": False, "error": f"not an SGLang server command: {argv[:3]}"}
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = prepare_server_args(argv[3:])
    except SystemExit:
        return {"ok": False, "error": err.getvalue().strip().splitlines()[-1]}
    # argparse's choices come from a list of names; the registry is the detector map the server uses.
    if args.reasoning_parser and args.reasoning_parser not in reasoning_parsers:
        return {"ok": False, "error": f"--reasoning-parser {args.reasoning_parser!r} is not in SGLang's registry"}
    return {"ok": True, "error": "", "parsed": {
        "model_path": args.model_path, "tp_size": args.tp_size, "dtype": args.dtype,
        "quantization": args.quantization, "kv_cache_dtype": args.kv_cache_dtype,
        "context_length": args.context_length, "served_model_name": args.served_model_name,
        "port": args.port, "host": args.host, "reasoning_parser": args.reasoning_parser}}


def main():
    from sglang.srt.parser.reasoning_parser import ReasoningParser
    from sglang.srt.server_args import prepare_server_args

    registry = ReasoningParser.DetectorMap
    json.dump([check(argv, prepare_server_args, registry) for argv in json.load(sys.stdin)], sys.stdout)


if __name__ == "__main__":
    main()
