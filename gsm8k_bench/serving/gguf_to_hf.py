"""Convert a GGUF file shipped in a Python package to a Hugging Face folder (run in the server's env).

usage: python gguf_to_hf.py PACKAGE|FOLDER GGUF_FILE OUT_DIR EOS_TOKEN
Standalone on purpose: it runs with the serving environment's interpreter, which has transformers,
gguf and torch but not this project.
"""

import importlib.util
import json
import shutil
import sys
from pathlib import Path


def main(package: str, gguf_file: str, out_dir: str, eos_token: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if Path(package).is_dir():  # a GGUF joined from parts, in a folder of the cache
        source = Path(package)
    else:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            sys.exit(f"package {package!r} is not installed in {sys.prefix}")
        source = Path(spec.submodule_search_locations[0])
    out = Path(out_dir)
    staging = out.with_name(out.name + ".converting")
    shutil.rmtree(staging, ignore_errors=True)

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.bfloat16)
    # transformers refuses to save a GGUF-loaded model while its quantizer is attached; the
    # weights are already dequantized to bfloat16 at this point.
    model.hf_quantizer = None
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)

    config_path = staging / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)  # else the server would look for GGUF weights
    config_path.write_text(json.dumps(config, indent=2))

    check = AutoTokenizer.from_pretrained(staging)
    if check.eos_token != eos_token:
        sys.exit(f"converted tokenizer has eos {check.eos_token!r}, expected {eos_token!r}")
    ids = check("2 + 2 =").input_ids
    if check.bos_token_id is not None and ids and ids[0] == check.bos_token_id:
        sys.exit("converted tokenizer adds a BOS token; the model was trained without one")

    (staging / ".converted").write_text(f"{package}/{gguf_file}\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    print(f"converted {package}/{gguf_file} -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
