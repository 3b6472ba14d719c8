"""Parse server commands with vLLM's own serve parser (run with the vLLM environment's python).

stdin: a JSON list of argv lists; stdout: a JSON list of {"ok": bool, "error": str, "parsed": {...}}.
"""

import contextlib
import io
import json
import sys


def check(argv, make_serve_parser, make_module_parser, methods, reasoning_parsers):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            if argv[:2] == ["vllm", "serve"]:
                args = make_serve_parser().parse_args(argv[1:])
            elif argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]:
                args = make_module_parser().parse_args(argv[3:])
            else:
                return {"ok": False, "error": f"not a vLLM server command: {argv[:3]}"}
    except SystemExit:
        return {"ok": False, "error": err.getvalue().strip().splitlines()[-1]}
    model = getattr(args, "model_tag", None) or args.model
    if args.quantization is not None and args.quantization not in methods:
        return {"ok": False, "error": f"--quantization {args.quantization!r} is not one of vLLM's methods"}
    # --reasoning-parser is a free string to argparse: check it against vLLM's registry, after loading a
    # --reasoning-parser-plugin file the way the server does.
    if args.reasoning_parser:
        if args.reasoning_parser_plugin:
            reasoning_parsers.import_reasoning_parser(args.reasoning_parser_plugin)
        if args.reasoning_parser not in reasoning_parsers.list_registered():
            return {"ok": False, "error": f"--reasoning-parser {args.reasoning_parser!r} is not registered in vLLM"}
    return {"ok": True, "error": "", "parsed": {
        "model": model, "tensor_parallel_size": args.tensor_parallel_size, "dtype": args.dtype,
        "quantization": args.quantization, "kv_cache_dtype": args.kv_cache_dtype,
        "max_model_len": args.max_model_len, "served_model_name": args.served_model_name,
        "port": args.port, "host": args.host, "reasoning_parser": args.reasoning_parser or None}}


def main():
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
    from vllm.reasoning import ReasoningParserManager
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    def make_serve_parser():
        parser = FlexibleArgumentParser(prog="vllm")
        ServeSubcommand().subparser_init(parser.add_subparsers(dest="subparser"))
        return parser

    def make_module_parser():
        return make_arg_parser(FlexibleArgumentParser(prog="api_server"))

    commands = json.load(sys.stdin)
    results = [check(argv, make_serve_parser, make_module_parser, QUANTIZATION_METHODS, ReasoningParserManager)
               for argv in commands]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
