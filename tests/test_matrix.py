from __future__ import annotations

import re

import pytest
from conftest import MINIMAL, SEED_SESSIONS, parse

from gsm8k_bench.errors import ConfigError
from gsm8k_bench.matrix import select


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
    assert [c.name for c in combos] == SEED_SESSIONS and len(combos) == 83
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


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # YAML syntax: file and line.
        (lambda t: t.replace("  h100: {vendor", "  h100: {vendor: [", 1),
         r"^matrix\.yaml:\d+: YAML syntax error"),
        # Unknown key, with a suggestion and the allowed keys.
        (lambda t: t.replace("    tp: [1, 2]", "    tp: [1, 2]\n    tensor_parallel: 2"),
         r"matrix\.yaml:\d+: models\.tiny\.tensor_parallel: unknown key 'tensor_parallel'.*Allowed: "),
        # Wrong type.
        (lambda t: t.replace("gpus: 8, label: h100-cr", "gpus: eight, label: h100-cr"),
         r"runners\.h100\.gpus: expected int, got 'eight'"),
        # Unknown runner reference: did you mean, and the list.
        (lambda t: t.replace("runners: [h100, mi355x]", "runners: [h10, mi355x]"),
         r"models\.tiny\.runners\[0\]: unknown runner 'h10'; did you mean 'h100'\? Allowed: cpu, h100, mi355x"),
        (lambda t: t.replace("frameworks: [vllm, sglang]", "frameworks: [vllm, sglan]"),
         r"unknown framework 'sglan'; did you mean 'sglang'\?"),
        (lambda t: t.replace("precisions: [fp16, fp8, fp4]\n    tp", "precisions: [fp16, fp9]\n    tp"),
         r"models\.tiny\.precisions\[1\]: unknown precision 'fp9'; did you mean 'fp8'\? Allowed: fp16, fp4, fp8"),
        (lambda t: t.replace("vendor: amd", "vendor: amdd"),
         r"runners\.mi355x\.vendor: unknown vendor 'amdd'; did you mean 'amd'\? Allowed: amd, cpu, nvidia"),
        # tp larger than the runner's GPUs.
        (lambda t: t.replace("tp: [1, 2]", "tp: [1, 16]"),
         r"tp 16 is larger than runner 'h100''s 8 GPUs"),
        # A precision the hardware cannot do, asked for explicitly.
        (lambda t: t + "include:\n  - {model: tiny, runner: h100, framework: vllm, precision: fp4, tp: 1}\n",
         r"include\[0\].*runner 'h100' cannot run precision 'fp4'; its hardware does: fp16, fp8"),
        # Duplicate session names.
        (lambda t: t + "include:\n  - {model: tiny, runner: h100, framework: vllm, precision: fp8, tp: 1}\n",
         r"duplicate session name 'gsm8k-tiny-h100-vllm-fp8-tp1'"),
        # Characters outside the naming alphabet.
        (lambda t: t.replace("  tiny:\n", "  Tiny_Model:\n"),
         r"models\.Tiny_Model: name 'Tiny_Model' must match"),
        (lambda t: t.replace("  cpu: {vendor", "  cpu-box: {vendor"),
         r"runners\.cpu-box: name 'cpu-box' must match"),
        # A pre-quantized-only precision without a checkpoint for that vendor.
        (lambda t: t.replace("fp4: {amd: org/tiny-mxfp4}", "fp4: {nvidia: org/tiny-nvfp4}"),
         r"needs a pre-quantized checkpoint; add models\.tiny\.checkpoints\.fp4\.amd"),
        (lambda t: t.replace("version: 1", "version: 7"), r"version: schema version 7 is not supported"),
        (lambda t: t.replace("version: 1\n", "version: 1\nversion: 1\n"), r"matrix\.yaml:\d+: duplicate key 'version'"),
        (lambda t: t.replace("tp: [1, 2]", "tp: [0]"), r"models\.tiny\.tp\[0\]: must be >= 1"),
    ],
)
def test_validation_errors_name_file_key_and_allowed_values(edit, expected):
    with pytest.raises(ConfigError) as info:
        parse(edit(MINIMAL))
    message = str(info.value)
    assert re.search(expected, message, re.S), message
    assert "\n" not in message.strip() or "YAML" in message  # one clear line


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
