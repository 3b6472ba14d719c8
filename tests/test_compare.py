"""Paired comparisons of session JSONs: `nox -s compare`, sibling deltas, the report's new outputs, and
the concurrency-level options.  Documents are built from per-question outcomes; the statistics are
checked against gsm8k_bench.verdicts.paired_stats (itself tested against statsmodels' McNemar)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import MINIMAL, parse

from gsm8k_bench.core import results
from gsm8k_bench.core.errors import ConfigError
from gsm8k_bench.reporting import compare, html_page, report
from gsm8k_bench.session import plan as session_plan
from gsm8k_bench.session.options import parse_session_args
from gsm8k_bench.verdicts import gate, levels, paired_stats, run_comparison, siblings

PROTOCOL = {"endpoint": "/v1/completions", "lm_eval_model": "local-completions", "apply_chat_template": False,
            "fewshot_as_multiturn": False, "num_fewshot": 5, "max_gen_toks": 256,
            "until": ["Question:", "</s>", "<|im_end|>"]}
SETTINGS = gate.GateSettings(confidence=0.95, tolerance=0.02)


def sample(doc_id, strict, flexible=None, response=None, question=None):
    flexible = strict if flexible is None else flexible
    return {"doc_id": doc_id, "question": question or f"Question {doc_id}: how many apples?",
            "target": f"#### {doc_id}", "response": response or f"The answer is {doc_id if strict else -1}.",
            "strict_answer": str(doc_id) if strict else "[invalid]",
            "flexible_answer": str(doc_id) if flexible else "-1",
            "strict_correct": strict, "flexible_correct": flexible}


def session_doc(outcomes, model="m", runner="h100", framework="vllm", precision="fp16", tp=1, protocol=None,
                **sample_kwargs):
    samples = [sample(i, ok, **sample_kwargs) for i, ok in enumerate(outcomes)]
    accuracy = sum(outcomes) / len(outcomes)
    return {"schema": 1, "session": f"gsm8k-{model}-{runner}-{framework}-{precision}-tp{tp}", "status": "passed",
            "error": None,
            "config": {"model": model, "runner": runner, "framework": framework, "precision": precision, "tp": tp,
                       "protocol": dict(protocol or PROTOCOL)},
            "metrics": {"strict_match": accuracy, "strict_match_stderr": 0.01, "flexible_extract": accuracy,
                        "flexible_extract_stderr": 0.01, "n": len(outcomes)},
            "gate": {"verdict": "pass"}, "samples": samples}


def with_flips(base, lost, gained):
    """The outcomes of `base` with the first `lost` right answers made wrong and the first `gained`
    wrong answers made right."""
    out, lose, gain = list(base), lost, gained
    for i, ok in enumerate(base):
        if ok and lose:
            out[i], lose = False, lose - 1
        elif not ok and gain:
            out[i], gain = True, gain - 1
    return out


BASE = [i % 5 != 0 for i in range(400)]  # 80% right


def test_paired_numbers_flips_and_answers_side_by_side():
    run_outcomes = with_flips(BASE, lost=30, gained=4)
    result = run_comparison.compare_documents(session_doc(BASE), session_doc(run_outcomes), SETTINGS)
    expected = paired_stats.compare(BASE, run_outcomes, SETTINGS.confidence)
    strict = result["metrics"]["strict_match"]
    assert (strict["lost"], strict["gained"], strict["n"]) == (30, 4, 400)
    assert strict["upper"] == pytest.approx(expected.upper, abs=1e-6)
    assert strict["mcnemar_p"] == expected.drop_p == paired_stats.mcnemar_drop_p(30, 4) < 0.001
    assert result["verdict"] == run_comparison.REGRESSION and strict["regressed"] and strict["significant"]
    assert len(result["flips"]) == 34 and result["changed"] == []
    lost = next(f for f in result["flips"] if f["moves"]["strict_match"] == "lost")
    assert lost["reference"]["response"] != lost["run"]["response"]
    assert lost["reference"]["strict_correct"] and not lost["run"]["strict_correct"]


def test_same_outcomes_with_different_answers_are_listed_as_changed():
    a = session_doc([False] * 5)
    b = session_doc([False] * 5, response="It is 7.")
    b["samples"][2]["flexible_answer"] = "7"
    result = run_comparison.compare_documents(a, b, SETTINGS)
    assert result["verdict"] == run_comparison.WITHIN and result["flips"] == []
    assert [c["doc_id"] for c in result["changed"]] == [2]
    assert result["changed"][0]["run"]["response"] == "It is 7."


def test_edge_cases_say_why_not():
    a = session_doc(BASE[:20])
    other_questions = session_doc(BASE[:20], question="A different dataset's question")
    assert run_comparison.compare_documents(a, other_questions, SETTINGS)["reason"] == "no question answered by both"
    chat = session_doc(BASE[:20], protocol={**PROTOCOL, "endpoint": "/v1/chat/completions"})
    reason = run_comparison.compare_documents(a, chat, SETTINGS)["reason"]
    assert reason.startswith("protocols differ") and "'/v1/chat/completions'" in reason
    old = session_doc(BASE[:20])
    for s in old["samples"]:
        del s["question"]
    assert "lack question (an older session JSON)" in run_comparison.compare_documents(a, old, SETTINGS)["reason"]
    no_protocol = session_doc(BASE[:20])
    del no_protocol["config"]["protocol"]["until"]
    assert "no protocol record" in run_comparison.compare_documents(no_protocol, a, SETTINGS)["reason"]
    failed = {**session_doc(BASE[:20]), "status": "failed", "metrics": None,
              "error": {"message": "server exited with code 1"}}
    assert "no scored run (failed: server exited" in run_comparison.compare_documents(a, failed, SETTINGS)["reason"]


def write_set(folder, *documents):
    for document in documents:
        results.write_atomic(results.result_path(folder, document["session"]), document)
    return folder


def compare_page_rows(page: str) -> dict[str, list[list[str]]]:
    """compare.html's data: session -> its changed answers as the page holds them ([question id, kind, moves,
    A's answers, A's response, B's answers, B's response])."""
    blocks = {m[1]: json.loads(m[2]) for m in re.finditer(
        r"<script type='application/json' id='(data-c-\d+)'>(.*?)</script>", page)}
    return {m[2]: blocks[m[1]] for m in re.finditer(
        r"<details class='session' data-block='(data-c-\d+)'><summary><code>(.*?)</code>", page)}


def test_compare_cli_exit_code_follows_the_verdicts(tmp_path, capsys):
    before = write_set(tmp_path / "before", session_doc(BASE), session_doc(BASE, runner="b200"),
                       session_doc(BASE, runner="mi355x"))
    after = write_set(tmp_path / "after", session_doc(with_flips(BASE, lost=2, gained=3)),
                      session_doc(with_flips(BASE, lost=40, gained=2), runner="b200"),
                      session_doc(BASE, runner="h200"))
    assert compare.main([str(before), str(after)]) == 1
    out = capsys.readouterr().out
    assert "| `gsm8k-m-b200-vllm-fp16-tp1` | 400 | 0.8000 → 0.7050 |" in out and "**regression**" in out
    assert "| `gsm8k-m-h100-vllm-fp16-tp1` | 400 |" in out and "within_tolerance |" in out
    assert "- `gsm8k-m-h200-vllm-fp16-tp1`: missing from the reference (A)" in out
    assert "- `gsm8k-m-mi355x-vllm-fp16-tp1`: missing from the run (B)" in out
    assert "regressed: gsm8k-m-b200-vllm-fp16-tp1" in out
    page = (after / "compare.html").read_text()
    kinds = [row[1] for rows in compare_page_rows(page).values() for row in rows]
    assert kinds.count("flipped") == 5 + 42 and "http" not in page
    assert (after / "compare.md").read_text().startswith("## GSM8k: B")
    # Only the sessions that did not regress: exit 0.
    one = before / "gsm8k-m-h100-vllm-fp16-tp1.json"
    assert compare.main([str(one), str(after / "gsm8k-m-h100-vllm-fp16-tp1.json"), "--out", str(tmp_path)]) == 0


def with_levels(document, level_outcomes, gate_level):
    """The document as a multi-level session: `level_outcomes` maps each level to its outcomes."""
    runs = []
    for level, outcomes in level_outcomes.items():
        leveled = session_doc(outcomes)
        gating = level == gate_level
        if gating:
            document = {**document, "samples": leveled["samples"], "metrics": leveled["metrics"]}
        runs.append({"concurrency": level, "gating": gating, "metrics": leveled["metrics"],
                     "samples": None if gating else leveled["samples"]})
    config = {**document["config"], "concurrency": gate_level, "concurrency_levels": list(level_outcomes)}
    return {**document, "config": config,
            "concurrency": {"levels": list(level_outcomes), "gate_level": gate_level, "runs": runs}}


def test_compare_pairs_the_levels_both_ran():
    before = with_levels(session_doc(BASE), {1: BASE, 8: with_flips(BASE, 40, 0)}, gate_level=1)
    after = {**session_doc(BASE), "config": {**session_doc(BASE)["config"], "concurrency": 8}}
    (row,) = compare.compare_sets({"s": before}, {"s": after}, SETTINGS)
    assert row.session == "s @ concurrency 8" and row.result["metrics"]["strict_match"]["gained"] == 40
    elsewhere = {**after, "config": {**after["config"], "concurrency": 64}}
    (row,) = compare.compare_sets({"s": before}, {"s": elsewhere}, SETTINGS)
    assert row.session == "s (concurrency 1, 8 vs 64)" and row.result["metrics"]["strict_match"]["gained"] == 0
    both = compare.compare_sets({"s": before}, {"s": before}, SETTINGS)
    assert [c.session for c in both] == ["s @ concurrency 1", "s @ concurrency 8"]


def test_compare_cli_bad_input(tmp_path, capsys):
    (tmp_path / "old.json").write_text(json.dumps({"session": "x", "metrics": {}}))
    assert compare.main([str(tmp_path / "old.json"), str(tmp_path / "old.json")]) == 2
    assert "old.json: not a gsm8k-bench session JSON" in capsys.readouterr().err
    assert compare.main([str(tmp_path / "absent"), str(tmp_path)]) == 2
    assert "absent: no such file or results folder" in capsys.readouterr().err
    assert compare.main(["only-one"]) == 2
    # In a folder, an older file is skipped with a warning; its session is then missing from that side.
    before = write_set(tmp_path / "before", session_doc(BASE))
    after = write_set(tmp_path / "after", session_doc(BASE, runner="b200"))
    (after / "gsm8k-m-h100-vllm-fp16-tp1.json").write_text(json.dumps({"schema": 0, "session": "x"}))
    assert compare.main([str(before), str(after)]) == 0
    captured = capsys.readouterr()
    assert "skipping " + str(after / "gsm8k-m-h100-vllm-fp16-tp1.json") in captured.err
    assert "- `gsm8k-m-h100-vllm-fp16-tp1`: missing from the run (B)" in captured.out


def test_siblings_differ_in_exactly_one_axis():
    docs = [session_doc(BASE), session_doc(with_flips(BASE, 40, 0), precision="fp8"),
            session_doc(BASE, precision="fp8", framework="sglang"),  # two axes from the fp16 vllm cell
            session_doc(with_flips(BASE, 1, 1), framework="sglang"), session_doc(BASE, tp=2),
            session_doc(BASE, runner="b200"), session_doc(BASE, model="other"),
            session_doc(BASE[:30], runner="mi355x", protocol={**PROTOCOL, "num_fewshot": 8})]
    found = siblings.deltas(docs, SETTINGS)
    labels = {d["label"]: d for d in found}
    fp8 = labels["precision fp8 vs fp16 (runner=h100 framework=vllm tp=1)"]
    assert fp8["reference"] == "gsm8k-m-h100-vllm-fp16-tp1" and fp8["verdict"] == run_comparison.REGRESSION
    assert labels["framework sglang vs vllm (runner=h100 precision=fp16 tp=1)"]["verdict"] == run_comparison.WITHIN
    assert "framework sglang vs vllm (runner=h100 precision=fp8 tp=1)" in labels
    assert "tp 2 vs 1 (runner=h100 framework=vllm precision=fp16)" in labels
    assert "runner h100 vs b200 (framework=vllm precision=fp16 tp=1)" in labels
    assert labels["runner mi355x vs h100 (framework=vllm precision=fp16 tp=1)"]["reason"].startswith(
        "protocols differ")
    assert all(d["model"] == "m" for d in found)  # different models are never siblings
    text = siblings.markdown(found)
    assert "| m | precision fp8 vs fp16 (runner=h100 framework=vllm tp=1) | 400 | -0.1000" in text
    assert "⚠ regression" in text and "Not compared:" in text
    summary = siblings.markdown(found, significant_only=True)
    assert "⚠ regression" in summary and "sglang vs vllm (runner=h100 precision=fp16" not in summary


def test_report_writes_sibling_deltas_forest_plot_and_html_beside_the_results(tmp_path, capsys):
    write_set(tmp_path, session_doc(BASE), session_doc(with_flips(BASE, 40, 0), precision="fp8"),
              session_doc(BASE, framework="sglang"))
    assert report.main([str(tmp_path)]) == 0
    assert (tmp_path / "forest-m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "⚠ regression" in (tmp_path / "report.md").read_text()
    assert "⚠ regression" in (tmp_path / "summary.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<script src" not in page
    assert "html: " + str(tmp_path / "report.html") in capsys.readouterr().out


def test_report_page_stores_each_question_once_and_escapes_script_ends():
    nasty = session_doc([True, False], response="</script><script>alert(1)</script>")
    _, questions, blocks = html_page.page_data([nasty, session_doc([True, True], precision="fp8")],
                                                        siblings.deltas([nasty], SETTINGS))
    assert len(questions) == 2 and len(blocks) == 2 and blocks["0"][0][1].startswith("</script>")
    page = html_page.render([nasty], [], [])
    assert "alert(1)" in page and "<script>alert(1)" not in page
    assert page.count("</script>") == page.count("<script")  # no data ends its block early


def test_concurrency_levels_from_the_command_line_and_matrix(matrix):
    assert parse_session_args("s", ["--concurrency", "1,64,256"]).concurrency == (1, 64, 256)
    assert parse_session_args("s", ["--concurrency", "8"]).concurrency == (8,)
    for bad, message in (("1,1", "each level once"), ("0,4", "must be >= 1"), ("1,x", "expected a int")):
        with pytest.raises(Exception, match=message):
            parse_session_args("s", ["--concurrency", bad])
    with_levels = MINIMAL.replace("precisions: [fp16]}", "precisions: [fp16], concurrency: [1, 8]}")
    runner = parse(with_levels).runners["cpu"]
    assert runner.levels == (1, 8) and runner.concurrency == 1
    with pytest.raises(ConfigError, match=r"matrix\.yaml:5: runners\.cpu\.concurrency: a list of distinct levels"):
        parse(with_levels.replace("[1, 8]", "[8, 8]"))
    assert levels.gate_level((1, 8), None) == 1 and levels.gate_level((1, 8), 8) == 8
    with pytest.raises(ConfigError, match="--gate-concurrency 4: not one of the concurrency levels 1, 8"):
        levels.gate_level((1, 8), 4)




def test_levels_plan_one_lm_eval_per_level_with_its_own_folder(matrix, tmp_path):
    combo = matrix.get("gsm8k-smollm2-135m-cpu-vllm-fp16-tp1")
    options = parse_session_args(combo.name, ["--concurrency", "1,8", "--gate-concurrency", "8",
                                              "--results-dir", str(tmp_path)])
    plan = session_plan.plan_session(combo, options, matrix.defaults, session_plan.host_facts(combo, options, {}))
    assert plan.settings.concurrency == 8 and plan.concurrency_levels == (1, 8)
    first, second = levels.level_plans(plan)
    assert first.work_dir == tmp_path / combo.name / "concurrency-1"
    assert "num_concurrent=1," in first.lm_eval_argv[first.lm_eval_argv.index("--model_args") + 1]
    assert str(first.lm_eval_dir) in first.lm_eval_argv
    assert plan.lm_eval_argv == second.lm_eval_argv  # the gating level's command is the one recorded
    text = session_plan.dry_run_text(plan)
    assert "lm-eval command (concurrency 1):" in text and "lm-eval command (concurrency 8):" in text
    options = parse_session_args(combo.name, [])
    single = session_plan.plan_session(combo, options, matrix.defaults, session_plan.host_facts(combo, options, {}))
    assert levels.level_plans(single) == [single] and single.concurrency_levels == (combo.runner.concurrency,)
