"""The mutation session's own bookkeeping: how survivors are named and matched to the explained list."""

from __future__ import annotations

import mutation_score
import pytest

DIFF = """--- gsm8k_bench/verdicts/gate.py
+++ gsm8k_bench/verdicts/gate.py
@@ -1,4 +1,4 @@
 def matches(self, combo: Combination) -> bool:
-    values = {"model": combo.model.name}  # why
+    values = {"XXmodelXX": combo.model.name}  # why
     return all(values[k] == v for k, v in self.filters.items())"""


def test_function_names_drop_mutmut_decorations():
    assert mutation_score.function_of("gsm8k_bench.verdicts.gate.xǁBaselineǁmatches__mutmut_6") == \
        "gsm8k_bench.verdicts.gate.Baseline.matches"
    assert mutation_score.function_of("gsm8k_bench.serving.frameworks.vllm.x_server_command__mutmut_12") == \
        "gsm8k_bench.serving.frameworks.vllm.server_command"


def test_the_mutated_line_is_the_added_one_without_its_comment():
    assert mutation_score.mutated_line(DIFF) == 'values = {"XXmodelXX": combo.model.name}'
    removed = "--- a\n+++ a\n@@ -1 +1 @@\n-    call(x)\n"
    assert mutation_score.mutated_line(removed) == "(removed) call(x)"


def test_the_explained_list_parses_and_rejects_malformed_lines(tmp_path):
    good = tmp_path / "good.md"
    good.write_text("# title\n\ntext\n- `m.f`: `x = 1` — no caller sees x\n")
    assert mutation_score.load_explained(good) == {("m.f", "x = 1"): "no caller sees x"}
    bad = tmp_path / "bad.md"
    bad.write_text("- `m.f`: x = 1 - no reason\n")
    with pytest.raises(SystemExit, match=r"bad\.md:1: expected"):
        mutation_score.load_explained(bad)


def test_the_kept_list_is_well_formed():
    mutation_score.load_explained(mutation_score.EXPLAINED)
