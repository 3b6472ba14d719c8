from __future__ import annotations

import re

import pytest
from conftest import MINIMAL, SEED_SESSIONS, parse

from gsm8k_bench.core.errors import ConfigError
from gsm8k_bench.matrix.combinations import adhoc_combination
from gsm8k_bench.matrix.selection import select


def names(matrix) -> list[str]:
    return [c.name for c in matrix.combinations]


def test_product_skips_precisions_the_chip_lacks():
    m = parse(MINIMAL)
    # fp4 only on mi355x (h100 lacks it); both frameworks, both tp sizes.
    assert "gsm8k-tiny-mi355x-vllm-fp4-tp2" in names(m)
    assert not [n for n in names(m) if "h100" in n and "fp4" in n]
    assert len(m.combinations) == 2 * 2 * 2 + 1 * 2 * 2 * 2 + 0 + 2 * 2  # h100: fp16,fp8; mi355x: 3 precs
    assert len(set(names(m))) == len(names(m))


def test_names_and_tags_are_stable_and_in_the_alphabet():
    first, second = parse(MINIMAL), parse(MINIMAL)
    assert names(first) == names(second)
    combo = first.get("gsm8k-tiny-mi355x-sglang-fp8-tp2")
    assert combo.tags == ("tiny", "mi355x", "amd", "sglang", "fp8", "tp2")
    assert names(first) == [
        f"gsm8k-tiny-{runner}-{framework}-{precision}-tp{tp}"
        for runner, precisions in (("h100", ("fp16", "fp8")), ("mi355x", ("fp16", "fp8", "fp4")))
        for framework in ("vllm", "sglang") for precision in precisions for tp in (1, 2)]


def test_seed_matrix_covers_every_runner_framework_and_precision(matrix):
    combos = matrix.combinations
    assert [c.name for c in combos] == SEED_SESSIONS and len(combos) == 106
    assert {c.runner.name for c in combos} == {"h100", "h200", "b200", "mi300x", "mi325x", "mi355x", "cpu"}
    assert {c.framework.name for c in combos} == {"vllm", "sglang"}
    assert {c.precision.name for c in combos} == {"fp16", "fp8", "fp4"}
    fp4_runners = {c.runner.name for c in combos if c.precision.name == "fp4"}
    assert fp4_runners == {"b200", "mi355x"}  # the chips with FP4
    for combo in combos:
        assert combo.tp <= max(combo.runner.gpus, 1)
        assert combo.precision.name in combo.runner.precisions


def test_precision_resolves_per_framework_and_vendor():
    m = parse(MINIMAL)
    online = m.get("gsm8k-tiny-h100-vllm-fp8-tp1")
    assert (online.checkpoint, online.quantization, online.flags.kv_cache_dtype) == ("org/tiny", "fp8", "fp8")
    prequant = m.get("gsm8k-tiny-mi355x-sglang-fp4-tp1")
    assert prequant.checkpoint == "org/tiny-mxfp4"
    assert prequant.quantization == "quark"  # checkpoint_quantization for amd
    # vLLM reads the method from the checkpoint's config: no flag.
    assert m.get("gsm8k-tiny-mi355x-vllm-fp4-tp1").quantization is None


def test_exclude_and_include():
    text = MINIMAL + """\
exclude:
  - {model: tiny, framework: sglang}
include:
  - {model: tiny, runner: cpu, framework: vllm, precision: fp16, tp: 1}
"""
    m = parse(text)
    assert not [n for n in names(m) if "sglang" in n]
    assert "gsm8k-tiny-cpu-vllm-fp16-tp1" in names(m)


def edited(edit) -> str:
    """MINIMAL with one edit: text appended, or (old, new[, count]) replaced."""
    text = MINIMAL + edit if isinstance(edit, str) else MINIMAL.replace(*edit)
    assert text != MINIMAL
    return text


# Each mistake -> the one exact message: file, line, key path, what is wrong and what is allowed.
@pytest.mark.parametrize(("edit", "message"), [
    (('  h100: {vendor', '  h100: {vendor: [', 1),
     "matrix.yaml:3: YAML syntax error: expected the node content, but found ':'"),
    (('version: 1\n', 'version: 1\nversion: 1\n'),
     "matrix.yaml:2: duplicate key 'version' (first at line 1)"),
    ('extra: 1\n',
     "matrix.yaml:31: (top level).extra: unknown key 'extra' Allowed: defaults, exclude, frameworks, "
     'include, models, precisions, runners, version'),
    (('version: 1\n', ''),
     "matrix.yaml:1: (top level): missing required key 'version'"),
    (('version: 1', 'version: 7'),
     'matrix.yaml:1: version: schema version 7 is not supported; allowed: 1'),
    (('  cpu: {vendor', '  cpu-box: {vendor'),
     "matrix.yaml:5: runners.cpu-box: name 'cpu-box' must match ^[a-z0-9][a-z0-9.]*$ (lowercase letters, "
     "digits, '.' and '-')"),
    (('  cpu: {vendor', '  7: {vendor'),
     'matrix.yaml:5: runners.7: expected str, got 7'),
    (('gpus: 8, label: h100-cr', 'gpus: 8, gpu: 8, label: h100-cr'),
     "matrix.yaml:3: runners.h100.gpu: unknown key 'gpu'; did you mean 'gpus'? Allowed: concurrency, gpus, "
     'label, precisions, start_timeout_s, vendor'),
    (('gpus: 8, label: h100-cr, ', 'gpus: 8, '),
     "matrix.yaml:3: runners.h100: missing required key 'label'"),
    (('vendor: amd', 'vendor: amdd'),
     "matrix.yaml:4: runners.mi355x.vendor: unknown vendor 'amdd'; did you mean 'amd'? Allowed: amd, cpu, nvidia"),
    (('gpus: 8, label: h100-cr', 'gpus: eight, label: h100-cr'),
     "matrix.yaml:3: runners.h100.gpus: expected int, got 'eight'"),
    (('gpus: 8, label: h100-cr', 'gpus: -1, label: h100-cr'),
     'matrix.yaml:3: runners.h100.gpus: must be >= 0, got -1'),
    (('gpus: 8, label: h100-cr', 'gpus: 0, label: h100-cr'),
     'matrix.yaml:3: runners.h100.gpus: a nvidia runner needs at least one GPU'),
    (('label: h100-cr', "label: 'h100 cr'"),
     "matrix.yaml:3: runners.h100.label: runner label 'h100 cr' has characters outside [A-Za-z0-9._-]"),
    (('label: h100-cr', 'label: 5'),
     'matrix.yaml:3: runners.h100.label: expected str, got 5'),
    (('label: h100-cr, precisions: [fp16, fp8]', 'label: h100-cr, precisions: fp16'),
     "matrix.yaml:3: runners.h100.precisions: expected list, got 'fp16'"),
    (('label: h100-cr, precisions: [fp16, fp8]', 'label: h100-cr, precisions: [fp16, 8]'),
     'matrix.yaml:3: runners.h100.precisions[1]: expected str, got 8'),
    (('label: h100-cr, precisions: [fp16, fp8]', 'label: h100-cr, precisions: [fp16, fp8], concurrency: 0'),
     'matrix.yaml:3: runners.h100.concurrency: must be >= 1, got 0'),
    (('label: h100-cr, precisions: [fp16, fp8]', 'label: h100-cr, precisions: [fp16, fp8], start_timeout_s: soon'),
     "matrix.yaml:3: runners.h100.start_timeout_s: expected int or float, got 'soon'"),
    (('  sglang:\n    port: 30000', '  trt:\n    port: 30000'),
     "matrix.yaml:11: frameworks.trt: unknown framework 'trt' Allowed: sglang, vllm (one module each under "
     'gsm8k_bench/serving/frameworks/)'),
    (('    port: 30000', '    port: 30000\n    ports: 1'),
     "matrix.yaml:12: frameworks.sglang.ports: unknown key 'ports'; did you mean 'port'? Allowed: env, "
     'images, port'),
    (('    port: 30000\n', ''),
     "matrix.yaml:11: frameworks.sglang: missing required key 'port'"),
    (('port: 8000', 'port: 0'),
     'matrix.yaml:8: frameworks.vllm.port: must be >= 1, got 0'),
    (('images: {nvidia: lmsysorg/sglang:v1, amd: lmsysorg/sglang:v1-rocm}', 'images: lmsysorg/sglang:v1'),
     'matrix.yaml: frameworks.sglang.images: expected a mapping, got str'),
    (('amd: lmsysorg/sglang:v1-rocm', 'amd: 3'),
     'matrix.yaml:12: frameworks.sglang.images.amd: expected str, got 3'),
    (('amd: lmsysorg/sglang:v1-rocm}', 'amd: lmsysorg/sglang:v1-rocm, 5: x}'),
     'matrix.yaml:12: frameworks.sglang.images.5: expected str, got 5'),
    (('    port: 30000\n', "    port: 30000\n    env:\n      amd: {bad-name: '1'}\n"),
     'matrix.yaml:13: frameworks.sglang.env.amd.bad-name: environment names are [A-Z_][A-Z0-9_]*'),
    (('    port: 30000\n', '    port: 30000\n    env:\n      amd: {GOOD: 1}\n'),
     'matrix.yaml:13: frameworks.sglang.env.amd.GOOD: expected str, got 1'),
    ((
          'fp16: {vllm: {dtype: bfloat16}, sglang: {dtype: bfloat16}}',
          'fp16: {vllm: {dtype: bfloat16}, sglang: {dtype: bfloat16}, trt: {}}',
     ),
     "matrix.yaml:14: precisions.fp16.trt: unknown key 'trt' Allowed: checkpoint_required, description, "
     'sglang, vllm'),
    (('fp16: {vllm: {dtype: bfloat16}, sglang', 'fp16: {vllm: {dtypes: bfloat16}, sglang'),
     "matrix.yaml:14: precisions.fp16.vllm.dtypes: unknown key 'dtypes'; did you mean 'dtype'? Allowed: "
     'checkpoint_quantization, dtype, kv_cache_dtype, online_quantization'),
    (('fp16: {vllm: {dtype: bfloat16}, sglang', 'fp16: {description: 5, vllm: {dtype: bfloat16}, sglang'),
     'matrix.yaml:14: precisions.fp16.description: expected str, got 5'),
    (('checkpoint_required: true', 'checkpoint_required: yes please'),
     "matrix.yaml:19: precisions.fp4.checkpoint_required: expected bool, got 'yes please'"),
    (('checkpoint_quantization: {amd: quark}', 'checkpoint_quantization: {amdx: quark}'),
     "matrix.yaml:21: precisions.fp4.sglang.checkpoint_quantization.amdx: unknown vendor 'amdx'; did you "
     "mean 'amd'? Allowed: amd, cpu, nvidia"),
    (('checkpoint_quantization: {amd: quark}', 'checkpoint_quantization: {amd: 4}'),
     'matrix.yaml:21: precisions.fp4.sglang.checkpoint_quantization.amd: expected str, got 4'),
    (('online_quantization: fp8, kv_cache_dtype: fp8}', 'online_quantization: 8, kv_cache_dtype: fp8}'),
     'matrix.yaml:16: precisions.fp8.vllm.online_quantization: expected str, got 8'),
    (('  tiny:\n', '  Tiny_Model:\n'),
     "matrix.yaml:23: models.Tiny_Model: name 'Tiny_Model' must match ^[a-z0-9][a-z0-9.]*(-[a-z0-9.]+)*$ "
     "(lowercase letters, digits, '.' and '-')"),
    (('    tp: [1, 2]', '    tp: [1, 2]\n    tensor_parallel: 2'),
     "matrix.yaml:29: models.tiny.tensor_parallel: unknown key 'tensor_parallel' Allowed: checkpoint, "
     'checkpoint_quantization, checkpoints, frameworks, limit, max_gen_toks, max_model_len, precisions, protocol, '
     'reasoning, runners, server_args, tp'),
    (('    checkpoint: org/tiny\n', ''),
     "matrix.yaml:24: models.tiny: missing required key 'checkpoint'"),
    (('checkpoint: org/tiny', 'checkpoint: [org/tiny]'),
     "matrix.yaml:24: models.tiny.checkpoint: expected str, got ['org/tiny']"),
    (('    checkpoint: org/tiny\n', '    checkpoint: org/tiny\n    protocol: chatty\n'),
     "matrix.yaml:25: models.tiny.protocol: unknown protocol 'chatty'; did you mean 'chat'? Allowed: chat, "
     'completions'),
    (('runners: [h100, mi355x]', 'runners: [h10, mi355x]'),
     "matrix.yaml:25: models.tiny.runners[0]: unknown runner 'h10'; did you mean 'h100'? Allowed: cpu, "
     'h100, mi355x'),
    (('runners: [h100, mi355x]', 'runners: [h100, h100]'),
     "matrix.yaml:25: models.tiny.runners: lists a value twice: ['h100', 'h100']"),
    (('frameworks: [vllm, sglang]', 'frameworks: [vllm, sglan]'),
     "matrix.yaml:26: models.tiny.frameworks[1]: unknown framework 'sglan'; did you mean 'sglang'? Allowed: "
     'sglang, vllm'),
    (('precisions: [fp16, fp8, fp4]\n    tp', 'precisions: [fp16, fp9]\n    tp'),
     "matrix.yaml:27: models.tiny.precisions[1]: unknown precision 'fp9'; did you mean 'fp8'? Allowed: "
     'fp16, fp4, fp8'),
    (('runners: [h100, mi355x]', 'runners: h100'),
     "matrix.yaml:25: models.tiny.runners: expected list, got 'h100'"),
    (('tp: [1, 2]', 'tp: 2'),
     'matrix.yaml:28: models.tiny.tp: expected list, got 2'),
    (('tp: [1, 2]', 'tp: [0]'),
     'matrix.yaml:28: models.tiny.tp[0]: must be >= 1, got 0'),
    (('tp: [1, 2]', 'tp: [1, 16]'),
     "matrix.yaml:23: models.tiny (gsm8k-tiny-h100-vllm-fp16-tp16): tp 16 is larger than runner 'h100''s 8 GPUs"),
    (('fp4: {amd: org/tiny-mxfp4}', 'fp5: {amd: org/tiny-mxfp4}'),
     "matrix.yaml:30: models.tiny.checkpoints.fp5: unknown key 'fp5'; did you mean 'fp8'? Allowed: fp16, fp4, fp8"),
    (('fp4: {amd: org/tiny-mxfp4}', 'fp4: {amx: org/tiny-mxfp4}'),
     "matrix.yaml:30: models.tiny.checkpoints.fp4.amx: unknown vendor 'amx'; did you mean 'amd'? Allowed: "
     'amd, cpu, nvidia'),
    (('fp4: {amd: org/tiny-mxfp4}', 'fp4: {nvidia: org/tiny-nvfp4}'),
     "matrix.yaml:23: models.tiny (gsm8k-tiny-mi355x-vllm-fp4-tp1): precision 'fp4' needs a pre-quantized "
     'checkpoint; add models.tiny.checkpoints.fp4.amd or exclude this combination'),
    ('    server_args: {trt: [--x]}\n',
     "matrix.yaml:31: models.tiny.server_args.trt: unknown key 'trt' Allowed: sglang, vllm"),
    ('    server_args: {vllm: --x}\n',
     "matrix.yaml:31: models.tiny.server_args.vllm: expected list, got '--x'"),
    ('    server_args: {vllm: [1]}\n',
     'matrix.yaml:31: models.tiny.server_args.vllm[0]: expected str, got 1'),
    ('    max_model_len: 0\n',
     'matrix.yaml:31: models.tiny.max_model_len: must be >= 1, got 0'),
    ('    max_gen_toks: many\n',
     "matrix.yaml:31: models.tiny.max_gen_toks: expected int, got 'many'"),
    ('    limit: 0\n',
     'matrix.yaml:31: models.tiny.limit: must be >= 1, got 0'),
    (('runners:\n', 'defaults: {fewshot: 5}\nrunners:\n', 1),
     "matrix.yaml:2: defaults.fewshot: unknown key 'fewshot'; did you mean 'num_fewshot'? Allowed: "
     'max_gen_toks, max_model_len, max_retries, num_fewshot, request_timeout_s, start_timeout_s'),
    (('runners:\n', 'defaults: {num_fewshot: -1}\nrunners:\n', 1),
     'matrix.yaml:2: defaults.num_fewshot: must be positive, got -1'),
    (('runners:\n', 'defaults: {max_retries: 0}\nrunners:\n', 1),
     'matrix.yaml:2: defaults.max_retries: must be positive, got 0'),
    (('runners:\n', 'defaults: {request_timeout_s: fast}\nrunners:\n', 1),
     "matrix.yaml:2: defaults.request_timeout_s: expected int or float, got 'fast'"),
    (('runners:\n', 'defaults: {max_gen_toks: 1.5}\nrunners:\n', 1),
     'matrix.yaml:2: defaults.max_gen_toks: expected int, got 1.5'),
    ('include:\n  - {model: tiny, runner: h100, framework: vllm, precision: fp4, tp: 1}\n',
     "matrix.yaml:32: include[0] (gsm8k-tiny-h100-vllm-fp4-tp1): runner 'h100' cannot run precision 'fp4'; "
     'its hardware does: fp16, fp8'),
    ('include:\n  - {model: tiny, runner: h100, framework: vllm, precision: fp8, tp: 1}\n',
     "matrix.yaml:1: include: duplicate session name 'gsm8k-tiny-h100-vllm-fp8-tp1' (listed twice, by the "
     "product of a model's lists and by include, or names that run together)"),
    ('include:\n  - {model: tiny, runner: h100}\n',
     "matrix.yaml:32: include[0]: missing required key 'framework'"),
    ('include:\n  - {model: tiny, runner: cpu, framework: vllm, precision: fp16, tp: 2}\n',
     "matrix.yaml:32: include[0] (gsm8k-tiny-cpu-vllm-fp16-tp2): tp 2 on GPU-less runner 'cpu'; allowed: 1"),
    ('include:\n  - {model: tiny, runner: cpu, framework: sglang, precision: fp16, tp: 1}\n',
     "matrix.yaml:32: include[0] (gsm8k-tiny-cpu-sglang-fp16-tp1): framework 'sglang' has no image for "
     "runner 'cpu' (vendor cpu); add frameworks.sglang.images.cpu"),
    ('include: {model: tiny}\n',
     "matrix.yaml:31: include: expected list, got {'model': 'tiny'}"),
    ('exclude:\n  - {}\n',
     'matrix.yaml:32: exclude[0]: an empty rule would match everything; use keys: model, runner, framework, '
     'precision, tp'),
    ('exclude:\n  - {modle: tiny}\n',
     "matrix.yaml:32: exclude[0].modle: unknown key 'modle'; did you mean 'model'? Allowed: framework, "
     'model, precision, runner, tp'),
    ('exclude:\n  - {runner: h10}\n',
     "matrix.yaml:32: exclude[0].runner: unknown runner 'h10'; did you mean 'h100'? Allowed: cpu, h100, mi355x"),
    ('exclude:\n  - {tp: 0}\n',
     'matrix.yaml:32: exclude[0].tp: must be >= 1, got 0'),
    ('exclude: tiny\n',
     "matrix.yaml:31: exclude: expected list, got 'tiny'"),

])
def test_validation_errors_name_file_line_key_and_allowed_values(edit, message):
    with pytest.raises(ConfigError) as info:
        parse(edited(edit))
    assert str(info.value) == message


# MINIMAL with one runner, one image list and one precision in block style: each key on its own line, so a
# message must carry the key's line, not its mapping's.
BLOCK = (MINIMAL.replace("  h100: {vendor: nvidia, gpus: 8, label: h100-cr, precisions: [fp16, fp8]}\n",
                         "  h100:\n    precisions: [fp16, fp8]\n    vendor: nvidia\n    gpus: 8\n    label: h100-cr\n")
         .replace("    images: {nvidia: lmsysorg/sglang:v1, amd: lmsysorg/sglang:v1-rocm}\n",
                  "    images:\n      nvidia: lmsysorg/sglang:v1\n      amd: lmsysorg/sglang:v1-rocm\n")
         .replace("    vllm: {dtype: bfloat16, online_quantization: fp8, kv_cache_dtype: fp8}\n",
                  "    vllm:\n      dtype: bfloat16\n      online_quantization: fp8\n      kv_cache_dtype: fp8\n"))


def test_block_style_reads_the_same():
    assert names(parse(BLOCK)) == names(parse(MINIMAL))


@pytest.mark.parametrize(("edit", "message"), [
    (('    vendor: nvidia\n', '    vendor: nvidiaa\n', 1),
     "matrix.yaml:5: runners.h100.vendor: unknown vendor 'nvidiaa'; did you mean 'nvidia'? Allowed: amd, "
     'cpu, nvidia'),
    (('    gpus: 8\n    label', '    gpus: eight\n    label', 1),
     "matrix.yaml:6: runners.h100.gpus: expected int, got 'eight'"),
    (('    gpus: 8\n    label', '    gpus: 0\n    label', 1),
     'matrix.yaml:6: runners.h100.gpus: a nvidia runner needs at least one GPU'),
    (('    label: h100-cr\n', "    label: 'h 1'\n", 1),
     "matrix.yaml:7: runners.h100.label: runner label 'h 1' has characters outside [A-Za-z0-9._-]"),
    (('    label: h100-cr\n', '    label: 5\n', 1),
     'matrix.yaml:7: runners.h100.label: expected str, got 5'),
    (('    label: h100-cr\n', '    label: h100-cr\n    concurrency: 0\n', 1),
     'matrix.yaml:8: runners.h100.concurrency: must be >= 1, got 0'),
    (('    label: h100-cr\n', '    label: h100-cr\n    start_timeout_s: soon\n', 1),
     "matrix.yaml:8: runners.h100.start_timeout_s: expected int or float, got 'soon'"),
    (('    label: h100-cr\n', '    label: h100-cr\n    gpu: 1\n', 1),
     "matrix.yaml:8: runners.h100.gpu: unknown key 'gpu'; did you mean 'gpus'? Allowed: concurrency, gpus, "
     'label, precisions, start_timeout_s, vendor'),
    (('      amd: lmsysorg/sglang:v1-rocm\n', '      amd: 3\n', 1),
     'matrix.yaml:18: frameworks.sglang.images.amd: expected str, got 3'),
    (('      kv_cache_dtype: fp8\n', '      kv_cache_dtype: 8\n', 1),
     'matrix.yaml:25: precisions.fp8.vllm.kv_cache_dtype: expected str, got 8'),
    (('      kv_cache_dtype: fp8\n', '      kv_cache_dtypes: fp8\n', 1),
     "matrix.yaml:25: precisions.fp8.vllm.kv_cache_dtypes: unknown key 'kv_cache_dtypes'; did you mean "
     "'kv_cache_dtype'? Allowed: checkpoint_quantization, dtype, kv_cache_dtype, online_quantization"),
    (('      kv_cache_dtype: fp8\n', '      kv_cache_dtype: {amdd: fp8}\n', 1),
     "matrix.yaml:25: precisions.fp8.vllm.kv_cache_dtype.amdd: unknown vendor 'amdd'; did you mean 'amd'? "
     'Allowed: amd, cpu, nvidia'),
    (('    port: 30000\n', "    port: 30000\n    env:\n      amd:\n        A: '1'\n        bad-name: '1'\n", 1),
     'matrix.yaml:19: frameworks.sglang.env.amd.bad-name: environment names are [A-Z_][A-Z0-9_]*'),
    (('    port: 30000\n', "    port: 30000\n    env:\n      amd:\n        A: '1'\n        B: 1\n", 1),
     'matrix.yaml:19: frameworks.sglang.env.amd.B: expected str, got 1'),
    (('    port: 30000\n', '    images2: 1\n    port: 30000\n', 1),
     "matrix.yaml:15: frameworks.sglang.images2: unknown key 'images2'; did you mean 'images'? Allowed: "
     'env, images, port'),
    (('    port: 30000\n', '    port: 0\n', 1),
     'matrix.yaml:15: frameworks.sglang.port: must be >= 1, got 0'),

    (("    checkpoint: org/tiny\n", "    protocol: completions\n    checkpoint: [org/tiny]\n", 1),
     "matrix.yaml:34: models.tiny.checkpoint: expected str, got ['org/tiny']"),
    (("    port: 30000\n    images:\n      nvidia: lmsysorg/sglang:v1\n      amd: lmsysorg/sglang:v1-rocm\n",
      "    images:\n      nvidia: lmsysorg/sglang:v1\n      amd: lmsysorg/sglang:v1-rocm\n    port: 0\n", 1),
     "matrix.yaml:18: frameworks.sglang.port: must be >= 1, got 0"),
    (("runners:\n", "defaults:\n  num_fewshot: 5\n  max_retries: 0\nrunners:\n", 1),
     "matrix.yaml:4: defaults.max_retries: must be positive, got 0"),
    (("runners:\n", "defaults:\n  num_fewshot: 5\n  request_timeout_s: fast\nrunners:\n", 1),
     "matrix.yaml:4: defaults.request_timeout_s: expected int or float, got 'fast'"),
])
def test_block_style_errors_carry_the_keys_own_line(edit, message):
    text = BLOCK.replace(*edit)
    assert text != BLOCK
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value) == message


def test_error_carries_the_line_of_the_key():
    text = MINIMAL.replace("runners: [h100, mi355x]", "runners: [h10, mi355x]")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "[h10," in row)
    with pytest.raises(ConfigError, match=rf"^matrix\.yaml:{line}: "):
        parse(text)


def test_select_uses_nox_keyword_and_tag_semantics(matrix):
    h100_vllm = select(matrix.combinations, keywords="h100 and vllm")
    assert h100_vllm and all(c.runner.name == "h100" and c.framework.name == "vllm" for c in h100_vllm)
    mi355x = select(matrix.combinations, tags=["mi355x"])
    assert mi355x and all(c.runner.name == "mi355x" for c in mi355x)
    fp4_not_sglang = select(matrix.combinations, keywords="fp4 and not sglang")
    assert {c.framework.name for c in fp4_not_sglang} == {"vllm"}
    with pytest.raises(ConfigError, match="did you mean"):
        select(matrix.combinations, names=["gsm8k-smollm2-135m-cpu-vllm-fp16-tp2"])
    with pytest.raises(ConfigError, match="not a valid expression"):
        select(matrix.combinations, keywords="h100 and (")


def test_runner_inputs_take_the_name_or_the_ci_label():
    m = parse(MINIMAL)
    assert m.runner("mi355x") is m.runner("mi355x-amd") is m.runners["mi355x"]
    with pytest.raises(ConfigError, match=r"unknown runner 'mi355-amd'; did you mean 'mi355x-amd'\?"):
        m.runner("mi355-amd")


def adhoc(m, model, precision="fp16", runner="mi355x-amd", **kwargs):
    return adhoc_combination(m, model=model, runner=runner, framework="vllm", precision=precision, tp=1,
                             **kwargs)


def test_a_checkpoint_resolves_to_the_model_that_serves_it_at_that_precision():
    m = parse(MINIMAL.replace("checkpoint: org/tiny\n", "checkpoint: /models/tiny\n"))
    # A local path, spelled differently, at fp16; the vendor's pre-quantized checkpoint at fp4.
    assert adhoc(m, "/models/../models/tiny/").name == "gsm8k-tiny-mi355x-vllm-fp16-tp1"
    assert adhoc(m, "org/tiny-mxfp4", "fp4").name == "gsm8k-tiny-mi355x-vllm-fp4-tp1"
    # Not what the model serves at that precision or on that vendor: ad hoc, named after the checkpoint.
    other = adhoc(m, "org/tiny-mxfp4", "fp8")
    assert other.name == "gsm8k-tiny-mxfp4-mi355x-vllm-fp8-tp1" and other.checkpoint == "org/tiny-mxfp4"
    assert adhoc(m, "Org/Other_Model.v2").name == "gsm8k-other-model.v2-mi355x-vllm-fp16-tp1"
    # An explicit short name keeps the user's choice.
    assert adhoc(m, "mine", checkpoint="/models/tiny").name == "gsm8k-mine-mi355x-vllm-fp16-tp1"


def test_a_checkpoint_two_models_serve_must_be_named():
    twin = MINIMAL.split("models:\n")[1].replace("  tiny:", "  tiny-long:").replace(
        "    tp: [1, 2]", "    tp: [1, 2]\n    max_model_len: 8192")
    m = parse(MINIMAL + twin)
    with pytest.raises(ConfigError, match=r"'org/tiny' is the fp16 checkpoint of several models in "
                                          r"matrix\.yaml \(tiny, tiny-long\)"):
        adhoc(m, "org/tiny")
    assert adhoc(m, "tiny-long").name == "gsm8k-tiny-long-mi355x-vllm-fp16-tp1"


def test_loaded_objects_are_exactly_what_the_file_says():
    from gsm8k_bench.matrix.precisions import Precision
    from gsm8k_bench.matrix.types import Defaults, Framework, Model, Runner

    text = MINIMAL.replace("runners:\n", "defaults: {num_fewshot: 0, max_model_len: 2048, request_timeout_s: 30}\n"
                           "runners:\n", 1).replace(
        "precisions: [fp16, fp8]}", "precisions: [fp16, fp8], concurrency: 32, start_timeout_s: 60}").replace(
        "    port: 30000\n", "    port: 30000\n    env:\n      amd: {A: '1', B: '2'}\n      mi355x: {B: '3'}\n")
    m = parse(text + "    server_args: {vllm: [--enforce-eager]}\n    max_gen_toks: 512\n    limit: 7\n"
                     "    protocol: chat\n")
    assert m.defaults == Defaults(num_fewshot=0, max_model_len=2048, max_gen_toks=256, request_timeout_s=30,
                                  max_retries=3, start_timeout_s=1800.0)
    assert list(m.runners.values()) == [
        Runner("h100", "nvidia", 8, "h100-cr", ("fp16", "fp8"), 32, 60.0),
        Runner("mi355x", "amd", 8, "mi355x-amd", ("fp16", "fp8", "fp4"), 16, None),
        Runner("cpu", "cpu", 0, "ubuntu-24.04", ("fp16",), 16, None)]
    assert m.runners["h100"].max_tp == 8 and m.runners["cpu"].max_tp == 1
    assert list(m.frameworks.values()) == [
        Framework("vllm", 8000, {"nvidia": "vllm/vllm-openai:v1", "amd": "vllm/vllm-openai-rocm:v1",
                                 "cpu": "local/vllm-cpu:1"}, {}),
        Framework("sglang", 30000, {"nvidia": "lmsysorg/sglang:v1", "amd": "lmsysorg/sglang:v1-rocm"},
                  {"amd": {"A": "1", "B": "2"}, "mi355x": {"B": "3"}})]
    # The runner's own entry wins over its vendor's.
    assert m.frameworks["sglang"].env_for(m.runners["mi355x"]) == {"A": "1", "B": "3"}
    assert m.frameworks["sglang"].env_for(m.runners["h100"]) == {}
    assert list(m.precisions.values()) == [
        Precision("fp16", "fp16", False, {"vllm": {"dtype": "bfloat16"}, "sglang": {"dtype": "bfloat16"}}),
        Precision("fp8", "fp8", False, {
            "vllm": {"dtype": "bfloat16", "online_quantization": "fp8", "kv_cache_dtype": "fp8"},
            "sglang": {"dtype": "bfloat16", "online_quantization": "fp8", "kv_cache_dtype": "fp8_e4m3"}}),
        Precision("fp4", "fp4", True, {"vllm": {"dtype": "bfloat16"},
                                       "sglang": {"dtype": "bfloat16", "checkpoint_quantization": {"amd": "quark"}}})]
    assert m.models == {"tiny": Model(
        name="tiny", checkpoint="org/tiny", protocol="chat", runners=("h100", "mi355x"),
        frameworks=("vllm", "sglang"), precisions=("fp16", "fp8", "fp4"), tp=(1, 2),
        checkpoints={"fp4": {"amd": "org/tiny-mxfp4"}}, server_args={"vllm": ("--enforce-eager",)},
        max_model_len=2048, max_gen_toks=512, limit=7)}
    combo = m.get("gsm8k-tiny-mi355x-sglang-fp4-tp2")
    assert combo.summary() == {
        "session": "gsm8k-tiny-mi355x-sglang-fp4-tp2", "model": "tiny", "checkpoint": "org/tiny-mxfp4",
        "runner": "mi355x", "runner_label": "mi355x-amd", "vendor": "amd", "framework": "sglang",
        "precision": "fp4", "tp": 2}
    assert combo.description == "GSM8k: org/tiny on mi355x (amd) with sglang, fp4, tp=2"
    assert combo.image == "lmsysorg/sglang:v1-rocm" and combo.quantization == "quark"
    with pytest.raises(ConfigError) as info:
        m.get("gsm8k-tiny-h100-vllm-fp16-tp3")
    assert str(info.value) == ("matrix.yaml: unknown session 'gsm8k-tiny-h100-vllm-fp16-tp3'; did you mean "
                               "'gsm8k-tiny-h100-vllm-fp16-tp2'? Allowed: " + ", ".join(sorted(m.by_name())))


def test_an_unreadable_matrix_file_names_it(tmp_path):
    from gsm8k_bench.matrix.loader import load_matrix

    with pytest.raises(ConfigError) as info:
        load_matrix(tmp_path / "absent.yaml")
    assert str(info.value) == f"{tmp_path / 'absent.yaml'}: cannot read the matrix: No such file or directory"


def test_adhoc_combinations(matrix):
    known = adhoc_combination(matrix, model="llama-3.1-8b", runner="mi355x", framework="vllm", precision="fp8",
                              tp=2, image="my/vllm:dev")
    assert known.checkpoint == "RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8" and known.image == "my/vllm:dev"
    assert known.name == "gsm8k-llama-3.1-8b-mi355x-vllm-fp8-tp2" and known.model.protocol == "completions"
    override = adhoc_combination(matrix, model="llama-3.1-8b", runner="h100", framework="vllm", precision="fp8",
                                 tp=1, checkpoint="org/custom", protocol="chat")
    assert (override.checkpoint, override.model.protocol, override.quantization) == ("org/custom", "chat", "fp8")
    new = adhoc_combination(matrix, model="new", runner="b200", framework="sglang", precision="fp4", tp=1,
                            checkpoint="org/new-fp4")
    assert (new.checkpoint, new.quantization, new.model.protocol) == ("org/new-fp4", "modelopt_fp4", "completions")
    assert (new.model.max_model_len, new.model.max_gen_toks) == (4096, 256)
    for kwargs, message in [
        ({"runner": "h1000"}, "--runner: unknown runner 'h1000'; did you mean 'h100'? Allowed: b200, b200-nv, cpu, "
                              "h100, h100-cr, h200, h200-cw, mi300x, mi300x-amd, mi325x, mi325x-amd, mi355x, "
                              "mi355x-amd, ubuntu-24.04"),
        ({"framework": "vlm"}, "--framework: unknown framework 'vlm'; did you mean 'vllm'? Allowed: sglang, vllm"),
        ({"precision": "fp6"}, "--precision: unknown precision 'fp6'; did you mean 'fp16'? Allowed: fp16, fp4, fp8"),
        ({"protocol": "chats"}, "--protocol: unknown protocol 'chats'; did you mean 'chat'? Allowed: chat, "
                                "completions"),
        ({"model": "New_Model"}, "--model: 'New_Model' must match ^[a-z0-9][a-z0-9.]*(-[a-z0-9.]+)*$; it names the "
                                 "session"),
        ({"model": "new"}, "--model 'new' is not in matrix.yaml; give --checkpoint too (known models: "
                           "smollm2-135m, qwen2.5-coder-1.5b, llama-3.1-8b, llama-3.3-70b, gpt-oss-120b, deepseek-r1)"),
        ({"tp": 9}, "command line: gsm8k-llama-3.1-8b-h100-vllm-fp16-tp9: tp 9 is larger than runner 'h100''s "
                    "8 GPUs"),
    ]:
        args = {"model": "llama-3.1-8b", "runner": "h100", "framework": "vllm", "precision": "fp16", "tp": 1,
                **kwargs}
        with pytest.raises(ConfigError) as info:
            adhoc_combination(matrix, **args)
        assert str(info.value) == message


@pytest.mark.parametrize(("rule", "removed"), [
    ("{tp: 2}", {n for n in names(parse(MINIMAL)) if n.endswith("-tp2")}),
    ("{runner: mi355x, precision: fp8}", {"gsm8k-tiny-mi355x-vllm-fp8-tp1", "gsm8k-tiny-mi355x-vllm-fp8-tp2",
                                          "gsm8k-tiny-mi355x-sglang-fp8-tp1", "gsm8k-tiny-mi355x-sglang-fp8-tp2"}),
    ("{model: tiny, runner: h100, framework: vllm, precision: fp16, tp: 1}", {"gsm8k-tiny-h100-vllm-fp16-tp1"}),
])
def test_every_exclude_key_narrows_what_is_removed(rule, removed):
    kept = names(parse(MINIMAL + f"exclude:\n  - {rule}\n"))
    assert set(names(parse(MINIMAL))) - set(kept) == removed


def test_select_by_names_keeps_their_order_and_tags_and_keywords_combine(matrix):
    picked = select(matrix.combinations, names=["gsm8k-llama-3.1-8b-b200-vllm-fp4-tp1",
                                                "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1"])
    assert [c.name for c in picked] == ["gsm8k-llama-3.1-8b-b200-vllm-fp4-tp1", "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1"]
    both = select(matrix.combinations, keywords="vllm", tags=["fp4", "cpu"])
    assert [c.name for c in both] == [
        "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1", "gsm8k-qwen2.5-coder-1.5b-cpu-vllm-fp16-tp1",
        "gsm8k-llama-3.1-8b-b200-vllm-fp4-tp1",
        "gsm8k-llama-3.3-70b-b200-vllm-fp4-tp4", "gsm8k-llama-3.3-70b-b200-vllm-fp4-tp8",
        "gsm8k-llama-3.3-70b-mi355x-vllm-fp4-tp4", "gsm8k-llama-3.3-70b-mi355x-vllm-fp4-tp8",
        "gsm8k-gpt-oss-120b-b200-vllm-fp4-tp1", "gsm8k-gpt-oss-120b-b200-vllm-fp4-tp8",
        "gsm8k-gpt-oss-120b-mi355x-vllm-fp4-tp1", "gsm8k-gpt-oss-120b-mi355x-vllm-fp4-tp8",
        "gsm8k-deepseek-r1-b200-vllm-fp4-tp8", "gsm8k-deepseek-r1-mi355x-vllm-fp4-tp8"]
    assert select(matrix.combinations) == list(matrix.combinations)
    with pytest.raises(ConfigError) as info:
        select(matrix.combinations, keywords="h100 and (")
    assert str(info.value).startswith("-k 'h100 and (' is not a valid expression: ")


def test_a_yaml_error_without_a_position_still_names_the_file():
    with pytest.raises(ConfigError) as info:
        parse('version: 1\nx: "\x07"\n')
    assert str(info.value) == ('matrix.yaml: YAML syntax error: unacceptable character #x0007: special characters '
                               'are not allowed\n  in "<unicode string>", position 15')


@pytest.mark.parametrize(("edit", "message"), [
    (("label: mi355x-amd", "label: h100-cr"), "runners.mi355x.label: label 'h100-cr' already names runner 'h100'"),
    (("label: ubuntu-24.04", "label: h100"), "runners.cpu.label: label 'h100' already names runner 'h100'"),
])
def test_a_runner_label_names_exactly_one_runner(edit, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(MINIMAL.replace(*edit))


def test_every_framework_matrix_yaml_may_name_has_a_command_builder():
    from gsm8k_bench.matrix.types import FRAMEWORK_NAMES
    from gsm8k_bench.serving.frameworks import FRAMEWORKS

    assert sorted(FRAMEWORKS) == sorted(FRAMEWORK_NAMES)


def test_the_selection_options_take_nox_s_k_t_s_and_a_usage_error_is_a_bench_error(matrix):
    from gsm8k_bench.core.errors import BenchError
    from gsm8k_bench.matrix.selection import selected, selection_parser

    cpu = "gsm8k-smollm2-135m-cpu-vllm-fp16-tp1"
    parser = selection_parser("nox -s pack --", "Run the selected sessions.")
    args = parser.parse_args(["-k", "cpu and vllm", "-t", "fp16", "tp1", "-s", cpu])
    assert (args.keywords, args.tags, args.names) == ("cpu and vllm", ["fp16", "tp1"], [cpu])
    assert [c.name for c in selected(matrix, args)] == [cpu]
    everything = parser.parse_args([])
    assert (everything.keywords, everything.tags, everything.names) == (None, [], [])
    assert selected(matrix, everything) == list(matrix.combinations)
    with pytest.raises(BenchError, match=r"^the selection matches no session \(see nox -l\)$"):
        selected(matrix, parser.parse_args(["-k", "nothing_like_this"]))
    shown = " ".join(parser.format_help().split())
    for text in ("usage: nox -s pack -- [-h] [-k KEYWORDS] [-t TAGS [TAGS ...]] [-s NAMES [NAMES ...]]",
                 "Run the selected sessions.", "-k KEYWORDS nox keyword expression, e.g. 'h100 and vllm'",
                 "-t TAGS [TAGS ...] tags, e.g. mi355x fp8", "-s NAMES [NAMES ...] session names"):
        assert text in shown, text
    with pytest.raises(BenchError) as info:
        parser.parse_args(["--bogus"])
    message, usage = str(info.value).split("\n", 1)
    assert message == "nox -s pack --: unrecognized arguments: --bogus"
    assert usage == parser.format_usage().rstrip()


# BLOCK with one edit -> the exact message, carrying the offending key's own line (never its mapping's).
RUNNER_H100 = "    precisions: [fp16, fp8]\n    vendor: nvidia\n    gpus: 8\n    label: h100-cr\n"
RUNNERS = ("runners:\n  h100:\n" + RUNNER_H100 +
           "  mi355x: {vendor: amd, gpus: 8, label: mi355x-amd, precisions: [fp16, fp8, fp4]}\n"
           "  cpu: {vendor: cpu, gpus: 0, label: ubuntu-24.04, precisions: [fp16]}\n")
FP8_SGLANG = "    sglang: {dtype: bfloat16, online_quantization: fp8, kv_cache_dtype: fp8_e4m3}\n"
REASONING = "    protocol: chat\n    reasoning:\n      parser: {vllm: p, sglang: q}\n"


@pytest.mark.parametrize(("edit", "message"), [
    (("version: 1\n", ""), "matrix.yaml:39: version: schema version 7 is not supported; allowed: 1"),
    ((RUNNERS, "runners: {}\n"), "matrix.yaml:2: runners: must not be empty"),
    ((RUNNERS, "runners:\n  - h100\n"), "matrix.yaml:3: runners: expected a mapping, got list"),
    ((RUNNER_H100, "    vendor: nvidia\n    gpus: 8\n    label: h100-cr\n    precisions: fp16\n"),
     "matrix.yaml:7: runners.h100.precisions: expected list, got 'fp16'"),
    (("    label: h100-cr\n", "    label: h100-cr\n    concurrency: []\n"),
     "matrix.yaml:8: runners.h100.concurrency: a list of distinct levels, got []"),
    (("    label: h100-cr\n", "    label: h100-cr\n    concurrency: [1, 1]\n"),
     "matrix.yaml:8: runners.h100.concurrency: a list of distinct levels, got [1, 1]"),
    (("    label: h100-cr\n", "    label: h100-cr\n    concurrency: [1, 0]\n"),
     "matrix.yaml:8: runners.h100.concurrency: must be >= 1, got 0"),
    (("    label: h100-cr\n", "    label: cpu\n"),
     "matrix.yaml:7: runners.h100.label: label 'cpu' already names runner 'cpu'; runner inputs take names and "
     "labels, so each must be unique"),
    (("      amd: lmsysorg/sglang:v1-rocm\n", "      7: lmsysorg/sglang:v1-rocm\n"),
     "matrix.yaml:18: frameworks.sglang.images.7: expected str, got 7"),
    (("    port: 30000\n", "    port: 30000\n    env:\n      amd: x\n"),
     "matrix.yaml: frameworks.sglang.env.amd: expected a mapping, got str"),
    (("      kv_cache_dtype: fp8\n", "      kv_cache_dtype:\n        nvidia: fp8\n        amdd: fp8\n"),
     "matrix.yaml:27: precisions.fp8.vllm.kv_cache_dtype.amdd: unknown vendor 'amdd'; did you mean 'amd'? "
     "Allowed: amd, cpu, nvidia"),
    (("      kv_cache_dtype: fp8\n", "      kv_cache_dtype:\n        nvidia: fp8\n        amd: 8\n"),
     "matrix.yaml:27: precisions.fp8.vllm.kv_cache_dtype.amd: expected str, got 8"),
    ((FP8_SGLANG, FP8_SGLANG + "    description: 5\n"),
     "matrix.yaml:27: precisions.fp8.description: expected str, got 5"),
    ((FP8_SGLANG, FP8_SGLANG + "    checkpoint_required: 'yes'\n"),
     "matrix.yaml:27: precisions.fp8.checkpoint_required: expected bool, got 'yes'"),
    (("    frameworks: [vllm, sglang]\n", "    frameworks: vllm\n"),
     "matrix.yaml:35: models.tiny.frameworks: expected list, got 'vllm'"),
    (("    frameworks: [vllm, sglang]\n", "    frameworks: [vllm, vllm]\n"),
     "matrix.yaml:35: models.tiny.frameworks: lists a value twice: ['vllm', 'vllm']"),
    (("    precisions: [fp16, fp8, fp4]\n", "    precisions: fp16\n"),
     "matrix.yaml:36: models.tiny.precisions: expected list, got 'fp16'"),
    (("    precisions: [fp16, fp8, fp4]\n", "    precisions: [fp16, fp16]\n"),
     "matrix.yaml:36: models.tiny.precisions: lists a value twice: ['fp16', 'fp16']"),
    (("      fp4: {amd: org/tiny-mxfp4}\n", "      fp8: org/tiny-fp8\n      fp4: 4\n"),
     "matrix.yaml:40: models.tiny.checkpoints.fp4: expected str, got 4"),
    (("    checkpoints:\n", "    server_args:\n      vllm: [--x]\n      sglang: --y\n    checkpoints:\n"),
     "matrix.yaml:40: models.tiny.server_args.sglang: expected list, got '--y'"),
    (("    checkpoints:\n", "    checkpoint_quantization: mxfp4\n    checkpoints:\n"),
     "matrix.yaml: models.tiny.checkpoint_quantization: expected a mapping, got str"),
    (("    frameworks: [vllm, sglang]\n",
      "    frameworks: [vllm]\n    checkpoint_quantization:\n      sglang: mxfp4\n"),
     "matrix.yaml:37: models.tiny.checkpoint_quantization.sglang: unknown key 'sglang' Allowed: vllm"),
    (("    checkpoints:\n", "    checkpoint_quantization:\n      vllm: mxfp4\n      sglang: 4\n    checkpoints:\n"),
     "matrix.yaml:40: models.tiny.checkpoint_quantization.sglang: expected str, got 4"),
    (("    tp: [1, 2]\n", "    tp: [1, 1]\n"),
     "matrix.yaml:1: models: duplicate session name 'gsm8k-tiny-h100-vllm-fp16-tp1' (listed twice, by the product "
     "of a model's lists and by include, or names that run together)"),
    (("    checkpoints:\n", "    max_model_len: 4096\n" + REASONING + "    checkpoints:\n"),
     "matrix.yaml:38: models.tiny.max_model_len: a reasoning model's output budget is min(max_model_len - 4096, "
     "16384); max_model_len 4096 leaves none: raise max_model_len or set max_gen_toks"),
    (("    checkpoints:\n", "    max_model_len: 8192\n" + REASONING + "      effort: 3\n    checkpoints:\n"),
     "matrix.yaml:42: models.tiny.reasoning.effort: unknown reasoning effort 3 Allowed: high, low, max, medium, "
     "minimal, none, xhigh"),
    (("  tiny:\n", "  tiny: &t\n"),
     "matrix.yaml:32: YAML anchors and aliases (&name, *name) are not allowed here; write the values out"),
])
def test_more_block_style_errors_carry_the_keys_own_line(edit, message):
    text = BLOCK.replace(*edit, 1) + ("version: 7\n" if edit[0] == "version: 1\n" else "")
    assert text != BLOCK
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value) == message


@pytest.mark.parametrize(("rule", "message"), [
    ("  - model: tiny\n    tp: 0\n", "matrix.yaml:42: exclude[0].tp: must be >= 1, got 0"),
    ("  - model: tiny\n    runner: h10\n", "matrix.yaml:42: exclude[0].runner: unknown runner 'h10'; did you mean "
                                           "'h100'? Allowed: cpu, h100, mi355x"),
    ("  - {model: tiny}\nx: *t\n", "matrix.yaml:42: YAML anchors and aliases (&name, *name) are not allowed here; "
                                  "write the values out"),
])
def test_a_bad_exclude_rule_names_its_keys_line(rule, message):
    with pytest.raises(ConfigError) as info:
        parse(BLOCK + "exclude:\n" + rule)
    assert str(info.value) == message


def test_concurrency_levels_and_labels_as_written():
    m = parse(BLOCK.replace("    label: h100-cr\n", "    label: GPU-Box_2.x\n    concurrency: [1, 64]\n").replace(
        "precisions: [fp16, fp8, fp4]}", "precisions: [fp16, fp8, fp4], concurrency: [8]}"))
    h100, mi355x = m.runners["h100"], m.runners["mi355x"]
    assert (h100.label, h100.concurrency, h100.concurrency_levels, h100.levels) == ("GPU-Box_2.x", 1, (1, 64),
                                                                                     (1, 64))
    assert (mi355x.concurrency, mi355x.concurrency_levels, mi355x.levels) == (8, (), (8,))
    assert m.runner("GPU-Box_2.x") is h100


def test_a_precision_flag_may_differ_per_vendor_and_a_framework_may_be_left_out():
    m = parse(MINIMAL.replace("    vllm: {dtype: bfloat16, online_quantization: fp8, kv_cache_dtype: fp8}\n",
                              "    vllm: {dtype: bfloat16, online_quantization: fp8,"
                              " kv_cache_dtype: {nvidia: fp8, amd: fp8_e4m3}}\n")
              .replace("  fp16: {vllm: {dtype: bfloat16}, sglang: {dtype: bfloat16}}\n",
                       "  fp16: {vllm: {dtype: bfloat16}}\n"))
    assert m.get("gsm8k-tiny-h100-vllm-fp8-tp1").flags.kv_cache_dtype == "fp8"
    assert m.get("gsm8k-tiny-mi355x-vllm-fp8-tp1").flags.kv_cache_dtype == "fp8_e4m3"
    assert m.precisions["fp16"].per_framework == {"vllm": {"dtype": "bfloat16"}, "sglang": {}}
    fp16 = m.get("gsm8k-tiny-h100-sglang-fp16-tp1")
    assert (fp16.flags.dtype, fp16.flags.kv_cache_dtype, fp16.quantization) == (None, None, None)


def test_a_runner_without_the_frameworks_image_skips_only_that_framework():
    m = parse(MINIMAL.replace("    runners: [h100, mi355x]\n", "    runners: [cpu, h100]\n")
              .replace("    precisions: [fp16, fp8, fp4]\n", "    precisions: [fp16]\n")
              .replace("    tp: [1, 2]\n", "    tp: [1]\n"))
    # cpu has no SGLang image: its sglang session is left out, and h100's sessions still follow.
    assert names(m) == ["gsm8k-tiny-cpu-vllm-fp16-tp1", "gsm8k-tiny-h100-vllm-fp16-tp1",
                        "gsm8k-tiny-h100-sglang-fp16-tp1"]


def test_a_reasoning_models_budget_and_where_it_came_from():
    reasoning = "    protocol: chat\n    max_model_len: 8192\n    reasoning:\n      parser: {vllm: p, sglang: q}\n"
    derived = parse(MINIMAL + reasoning).models["tiny"]
    assert (derived.max_gen_toks, derived.reasoning.budget_rule) == (4096, "min(max_model_len - 4096, 16384)")
    explicit = parse(MINIMAL + reasoning + "    max_gen_toks: 1000\n").models["tiny"]
    assert (explicit.max_gen_toks, explicit.reasoning.budget_rule) == (1000, "max_gen_toks")
    assert explicit.reasoning.parser == {"vllm": "p", "sglang": "q"}
    assert parse(MINIMAL).models["tiny"].max_gen_toks == 256 and parse(MINIMAL).models["tiny"].reasoning is None


def test_select_names_an_unknown_session():
    m = parse(MINIMAL)
    with pytest.raises(ConfigError) as info:
        select(m.combinations, names=["gsm8k-tiny-h100-vllm-fp16-tp3"])
    assert str(info.value) == ("unknown session 'gsm8k-tiny-h100-vllm-fp16-tp3'; did you mean "
                               "'gsm8k-tiny-h100-vllm-fp16-tp2'? Allowed: " + ", ".join(sorted(names(m))))


def test_a_loaded_matrix_knows_its_file(tmp_path):
    from gsm8k_bench.matrix.loader import load_matrix

    (tmp_path / "mine.yaml").write_text(MINIMAL)
    m = load_matrix(tmp_path / "mine.yaml")
    assert m.path == tmp_path / "mine.yaml"
    with pytest.raises(ConfigError, match=r"^mine\.yaml: unknown session 'x'"):
        m.get("x")


def test_local_and_hub_checkpoints_match_the_model_serving_them(monkeypatch):
    monkeypatch.setenv("HOME", "/home/u")
    local = parse(MINIMAL.replace("checkpoint: org/tiny\n", "checkpoint: /home/u/models/tiny\n"))
    for given in ("/home/u/models/../models/tiny/", "~/models/tiny", "/home/u/models//tiny"):
        combo = adhoc(local, given)
        assert (combo.name, combo.checkpoint) == ("gsm8k-tiny-mi355x-vllm-fp16-tp1", "/home/u/models/tiny"), given
    relative = parse(MINIMAL.replace("checkpoint: org/tiny\n", "checkpoint: models/tiny\n"))
    assert adhoc(relative, "./models/tiny").checkpoint == "models/tiny"
    hub = parse(MINIMAL.replace("checkpoint: org/tiny\n", "checkpoint: org/TinyX\n"))
    assert adhoc(hub, "org/TinyX/").checkpoint == "org/TinyX"
    # another checkpoint (one letter short) runs ad hoc, under a name of its own
    other = adhoc(hub, "org/Tiny")
    assert (other.name, other.checkpoint) == ("gsm8k-tiny-mi355x-vllm-fp16-tp1", "org/Tiny")
    assert other.model.name == "tiny" and other.model is not hub.models["tiny"]


def test_adhoc_models_new_names_and_reasoning_protocols(matrix):
    from gsm8k_bench.serving.frameworks import FRAMEWORKS, ServeTarget

    args = {"runner": "h100", "framework": "vllm", "precision": "fp16", "tp": 1}
    with pytest.raises(ConfigError) as info:
        adhoc_combination(matrix, model="org/__", **args)
    assert str(info.value) == ("cannot derive a session name from the checkpoint 'org/__'; give a short name as the "
                               "model and the checkpoint separately")
    assert adhoc_combination(matrix, model="org/ModelX/", **args).name == "gsm8k-modelx-h100-vllm-fp16-tp1"
    new = adhoc_combination(matrix, model="org/New-Model", **args)
    assert FRAMEWORKS["vllm"].server_command(new, ServeTarget("/w", "s", "127.0.0.1", 1)) == [
        "vllm", "serve", "/w", "--host", "127.0.0.1", "--port", "1", "--served-model-name", "s",
        "--tensor-parallel-size", "1", "--max-model-len", "4096", "--dtype", "bfloat16"]
    oss = {"model": "gpt-oss-120b", "runner": "b200", "framework": "vllm", "precision": "fp4", "tp": 1}
    with pytest.raises(ConfigError) as info:
        adhoc_combination(matrix, protocol="completions", **oss)
    assert str(info.value) == ("--protocol completions: 'gpt-oss-120b' is a reasoning model (matrix.yaml "
                               "models.gpt-oss-120b.reasoning); its answers are split from the thinking in chat only")
    assert adhoc_combination(matrix, protocol="chat", **oss).model.protocol == "chat"
    assert adhoc_combination(matrix, model="llama-3.1-8b", protocol="completions", **args).model.protocol == \
        "completions"


def test_a_key_left_to_its_default_is_blamed_at_its_mappings_line():
    # No max_model_len: the default 4096 leaves a reasoning model no output budget; the model's own line.
    with pytest.raises(ConfigError) as info:
        parse(BLOCK.replace("    checkpoints:\n", REASONING + "    checkpoints:\n"))
    assert str(info.value) == ("matrix.yaml:33: models.tiny.max_model_len: a reasoning model's output budget is "
                               "min(max_model_len - 4096, 16384); max_model_len 4096 leaves none: raise max_model_len "
                               "or set max_gen_toks")


def test_a_models_own_checkpoint_quantization_wins_over_the_precisions():
    m = parse(MINIMAL + "    checkpoint_quantization: {sglang: mxfp4}\n")
    assert m.models["tiny"].checkpoint_quantization == {"sglang": "mxfp4"}
    assert m.get("gsm8k-tiny-mi355x-sglang-fp4-tp1").quantization == "mxfp4"  # not the precision's quark
    assert parse(MINIMAL).get("gsm8k-tiny-mi355x-sglang-fp4-tp1").quantization == "quark"
