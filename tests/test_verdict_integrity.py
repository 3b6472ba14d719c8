"""Verdicts that cannot be fooled (issue #25): what a paired verdict covered, promote keeping references
able to judge (and no ratchet), one level and sidedness printed at the precision compared, and the protocol
fingerprint.  Each test is one finding; pure, no servers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import MINIMAL, parse
from test_paired_gate import (
    NO_FINGERPRINTS,
    PROTOCOL,
    SESSION,
    SETTINGS,
    against,
    judge,
    promote_,
    reference_of,
    run_file,
    session_doc,
)

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.evaluation import fingerprint
from gsm8k_bench.reporting import console_summary
from gsm8k_bench.verdicts import gate, paired_stats, promote, references, run_comparison

FULL = 1319

# --------------------------------------------------------------------------- coverage


def test_a_full_run_against_a_smoke_reference_judges_the_questions_the_reference_lacks(tmp_path):
    # The finding: a 1,319-question run, the first 200 as the reference answered them and every later one
    # wrong (accuracy 0.12), was `pass` on the 200 compared.
    first = [i % 5 != 0 for i in range(200)]  # 0.80
    reference = reference_of(first, tmp_path)
    run = session_doc(first + [False] * (FULL - 200))
    assert round(run["metrics"]["strict_match"], 2) == 0.12
    verdict = judge(against(reference), run)
    assert verdict["verdict"] == "regression"
    assert all(not c["regression"] for c in verdict["checks"])  # the 200 paired questions are unchanged
    coverage = verdict["coverage"]
    assert {k: coverage[k] for k in ("run", "reference", "compared", "run_only", "reference_only", "changed")} == \
        {"run": FULL, "reference": 200, "compared": 200, "run_only": FULL - 200, "reference_only": 0, "changed": 0}
    strict = coverage["run_only_checks"][0]
    assert (strict["metric"], strict["n"], strict["observed"], strict["reference"]) == ("strict_match", 1119, 0, 0.8)
    assert strict["regression"] and strict["upper_bound"] < -0.7
    assert "1119 questions the reference lacks, against its accuracy (unpaired): strict_match 0.0000 vs 0.8000" \
        in verdict["reason"]
    assert "over the 1119 questions the reference lacks vs its 0.8000 (unpaired upper bound" in \
        gate.describe_failure(verdict)


def test_the_run_only_check_and_the_reason_exactly(tmp_path):
    # 30 questions, 24 right (0.8) in the reference; the run asks 8 more: 4 right strict (0.5), 8 flexible.
    reference = reference_of([i % 5 != 0 for i in range(30)], tmp_path)
    run = session_doc([i % 5 != 0 for i in range(30)] + [True] * 4 + [False] * 4)
    for s in run["samples"][30:]:
        s["flexible_correct"] = True
    verdict = judge(against(reference), run)
    z = paired_stats.z_one_sided(0.95)
    strict_bounds = paired_stats.independent_interval(0.5, 8, 0.8, 30, z)
    flexible_bounds = paired_stats.independent_interval(1.0, 8, 0.8, 30, z)
    assert -0.02 < strict_bounds[1] < 0  # a drop, not past the tolerance: a pass
    assert verdict["coverage"]["run_only_checks"] == [
        {"metric": "strict_match", "n": 8, "observed": 0.5, "reference": 0.8, "lower_bound": strict_bounds[0],
         "upper_bound": strict_bounds[1], "threshold": -0.02, "regression": False},
        {"metric": "flexible_extract", "n": 8, "observed": 1.0, "reference": 0.8, "lower_bound": flexible_bounds[0],
         "upper_bound": flexible_bounds[1], "threshold": -0.02, "regression": False}]
    assert verdict["verdict"] == "pass"
    assert verdict["reason"].endswith(
        f"; 8 questions the reference lacks, against its accuracy (unpaired): strict_match 0.5000 vs 0.8000, upper "
        f"bound {gate.inequality(strict_bounds[1], -0.02)}; flexible_extract 1.0000 vs 0.8000, upper bound "
        f"{gate.inequality(flexible_bounds[1], -0.02)}; {NO_FINGERPRINTS}")
    # An accuracy of more than 4 decimals is stored to 4, as the paired checks' are.
    third = session_doc([i % 5 != 0 for i in range(30)] + [True, False, False])
    assert judge(against(reference), third)["coverage"]["run_only_checks"][0]["observed"] == 0.3333


@pytest.mark.parametrize("past", [True, False])
def test_a_run_only_bound_just_past_the_tolerance_and_on_it(tmp_path, past):
    reference = reference_of([i % 5 != 0 for i in range(30)], tmp_path)
    run = session_doc([i % 5 != 0 for i in range(30)] + [True] * 5 + [False] * 5)
    upper = paired_stats.independent_interval(0.5, 10, 0.8, 30, paired_stats.z_one_sided(0.95))[1]
    tolerance = -upper - 1e-12 if past else -upper
    verdict = gate.judge(gate.Baselines(gate.GateSettings(0.95, tolerance), (), reference),
                         parse(MINIMAL).get(SESSION), PROTOCOL, run["metrics"], run["samples"])
    assert verdict["coverage"]["run_only_checks"][0]["regression"] is past
    assert verdict["verdict"] == ("regression" if past else "pass")


def test_the_reason_names_every_part_of_the_coverage(tmp_path):
    # Reference 40 questions; the run asks the first 38 (2 reference-only), one under another answer key.
    reference = reference_of([True] * 40, tmp_path)
    run = session_doc([True] * 38)
    run["samples"][4]["target"] = "five"
    verdict = judge(against(reference), run)
    assert verdict["verdict"] == "pass"
    assert verdict["reason"].endswith("reported, not gated); 1 doc_ids have another question text or answer key "
                                      "than the reference's and are not compared: 4; 2 reference questions not asked; "
                                      f"{NO_FINGERPRINTS}")


def test_an_older_verdict_without_coverage_is_still_described(tmp_path):
    reference = reference_of([True] * 20, tmp_path)
    verdict = judge(against(reference), session_doc([False] * 10 + [True] * 10))
    del verdict["coverage"]  # as a session JSON written before coverage existed
    assert gate.describe_failure(verdict).startswith(f"regression against {reference.path}: strict_match 0.5000")


def test_run_only_questions_as_good_as_the_reference_pass(tmp_path):
    reference = reference_of([i % 5 != 0 for i in range(200)], tmp_path)
    verdict = judge(against(reference), session_doc([i % 5 != 0 for i in range(FULL)]))
    assert verdict["verdict"] == "pass" and verdict["coverage"]["run_only"] == FULL - 200
    assert [c["regression"] for c in verdict["coverage"]["run_only_checks"]] == [False, False]


def test_a_changed_dataset_is_not_comparable_rather_than_a_pass_on_what_is_left(tmp_path):
    # The finding: 1,310 of 1,319 question texts changed; judged `pass` on the 9 left.
    outcomes = [i % 5 != 0 for i in range(FULL)]
    reference = reference_of(outcomes, tmp_path)
    run = session_doc(outcomes)
    for s in run["samples"][9:]:
        s["question"] += " (edited)"
    verdict = judge(against(reference), run)
    assert verdict["verdict"] == "not_comparable" and verdict["checks"] == []
    assert verdict["coverage"]["compared"] == 9 and verdict["coverage"]["changed"] == 1310
    assert "1310 of the run's 1319 questions (99.3%, more than 5%) have another question text or answer key" in \
        verdict["reason"]
    assert gate.describe_failure(verdict) == verdict["reason"]


@pytest.mark.parametrize(("changed", "verdict"), [(65, "pass"), (66, "not_comparable")])
def test_the_changed_share_threshold(tmp_path, changed, verdict):
    # 5% of 1,319 is 65.95: 65 changed questions are a dataset fix, 66 another dataset.
    outcomes = [i % 5 != 0 for i in range(FULL)]
    reference = reference_of(outcomes, tmp_path)
    run = session_doc(outcomes)
    for s in run["samples"][:changed]:
        s["target"] += "0"  # the answer key alone changed
    assert judge(against(reference), run)["verdict"] == verdict


@pytest.mark.parametrize(("run", "changed", "verdict"), [(40, 2, "pass"), (40, 3, "not_comparable")])
def test_exactly_5_percent_changed_is_still_comparable(tmp_path, run, changed, verdict):
    reference = reference_of([True] * run, tmp_path)
    doc = session_doc([True] * run)
    for s in doc["samples"][:changed]:
        s["question"] += " (v2)"
    assert judge(against(reference), doc)["verdict"] == verdict


@pytest.mark.parametrize(("reference_n", "verdict"), [(39, "not_comparable"), (40, "pass")])
def test_exactly_10_percent_compared_is_comparable(tmp_path, reference_n, verdict):
    reference = reference_of([True] * reference_n, tmp_path)
    assert judge(against(reference), session_doc([True] * 400))["verdict"] == verdict


@pytest.mark.parametrize(("reference_n", "verdict"), [(131, "not_comparable"), (132, "pass")])
def test_a_tiny_overlap_is_not_comparable(tmp_path, reference_n, verdict):
    # Under 10% of the run's questions in the reference: 131 of 1,319 is 9.93%, 132 is 10.01%.
    reference = reference_of([i % 5 != 0 for i in range(reference_n)], tmp_path)
    judged = judge(against(reference), session_doc([i % 5 != 0 for i in range(FULL)]))
    assert judged["verdict"] == verdict
    if verdict == "not_comparable":
        assert f"only {reference_n} of the run's 1319 questions (9.9%, less than 10%) are in the reference" in \
            judged["reason"]


def test_a_not_comparable_verdict_on_the_console(tmp_path):
    reference = reference_of([True] * 40, tmp_path)
    run = session_doc([True] * 40)
    for s in run["samples"]:
        s["question"] += " (v2)"
    run["gate"] = judge(against(reference), run)
    run["status"] = "failed"
    lines = console_summary.lines(run, tmp_path / "r.json")
    assert any(line.startswith("  NOT COMPARABLE (fails the session): not comparable with ") for line in lines)


def test_the_console_states_the_coverage(tmp_path):
    reference = reference_of([i % 5 != 0 for i in range(200)], tmp_path)
    run = session_doc([i % 5 != 0 for i in range(200)] + [False] * 100)
    run["gate"] = judge(against(reference), run)
    (line,) = [line for line in console_summary.lines(run, tmp_path / "r.json") if "covered:" in line]
    assert line == ("  covered: 200 of the run's 300 questions paired; 100 run-only (strict-match 0.0000 vs the "
                    "reference's 0.8000: regression) (flexible-extract 0.0000 vs the reference's 0.8000: "
                    "reported); 0 changed texts; 0 reference-only")


def test_a_reference_of_question_text_ids_still_pairs(tmp_path):
    # A schema 1 reference: ids of the question text alone, no lineage, no fingerprint.
    outcomes = [True, False, True, True] * 10
    document = references.from_session(session_doc(outcomes))
    document.pop("lineage"), document.pop("fingerprint")
    document["schema"] = 1
    document["questions"] = {paired_stats.question_id(s["doc_id"], s["question"], with_target=False):
                             "11" if ok else "00" for s, ok in zip(session_doc(outcomes)["samples"], outcomes,
                                                                    strict=True)}
    path = tmp_path / f"{SESSION}.json"
    path.write_text(json.dumps(document))
    old = references.load(path, SESSION)
    assert not old.ids_cover_target and old.lineage == () and old.fingerprint is None
    verdict = judge(against(old), session_doc(outcomes))
    assert verdict["verdict"] == "pass" and verdict["coverage"]["compared"] == 40
    assert verdict["reason"].endswith("; the reference's question ids predate the answer key (identity by question "
                                      f"text only); {NO_FINGERPRINTS}")


# --------------------------------------------------------------------------- one level, full precision


def test_inequalities_print_enough_digits_to_be_true():
    assert gate.inequality(-0.0200000001, -0.02) == "-0.0200000001 < -0.0200000000"
    assert gate.inequality(-0.02, -0.02) == "-0.0200 >= -0.0200"
    assert gate.inequality(-0.01999, -0.02) == "-0.0200 >= -0.0200"  # rounds equal: >= is still true
    assert gate.inequality(-0.02001, -0.02) == "-0.02001 < -0.02000"
    assert gate.inequality(0.78, 0.7800000001, "") == "0.7800000000 < 0.7800000001"
    # Floats a bit apart need all their digits; the printed comparison still holds.
    below = math.nextafter(-0.02, -1)
    assert gate.inequality(below, -0.02) == "-0.020000000000000004 < -0.020000000000000000"
    assert gate.precise(0.5, 0.5, "") == ("0.5000", "0.5000")


def test_comparison_flags_and_p_values_share_one_level_and_sidedness():
    base = [i % 5 != 0 for i in range(400)]
    run = list(base)
    for i in [i for i, ok in enumerate(base) if ok][:14]:
        run[i] = False  # 14 lost, none gained
    result = paired_stats.compare(base, run, 0.95)
    numbers = run_comparison.metric_numbers(result, 0.02)
    assert numbers["mcnemar_p"] == paired_stats.mcnemar_drop_p(14, 0) == 1 / 2**14  # one-sided, not doubled
    assert numbers["significant"] is True and result.upper < 0
    # At the margin: 5 lost of 5 discordant is one-sided p 1/32 < 0.05, significant; 4 of 4 is p 1/16, not,
    # though the score bound excludes 0 there: the flag is the p-value's, never a two-sided 10% test.
    for lost, significant in [(5, True), (4, False)]:
        outcome = paired_stats.compare([True] * 100, [False] * lost + [True] * (100 - lost), 0.95)
        numbers = run_comparison.metric_numbers(outcome, 0.02)
        assert numbers["significant"] is significant is (numbers["mcnemar_p"] < 0.05)
        assert outcome.upper < 0  # the bound alone would have flagged both
    gain = run_comparison.metric_numbers(paired_stats.compare([False] * 100, [True] * 5 + [False] * 95, 0.95), 0.02)
    assert gain["mcnemar_p"] == 1 / 32 and gain["significant"]  # a gain: the one-sided p of its side


# --------------------------------------------------------------------------- promote


def regressed_run(outcomes: list[bool], reference: references.Reference) -> dict:
    """A session JSON as a session writes one the gate called a regression (status failed)."""
    doc = session_doc(outcomes)
    doc["gate"] = judge(against(reference), doc)
    assert doc["gate"]["verdict"] == "regression"
    doc["status"] = "failed"
    doc["error"] = {"message": f"gate: {gate.describe_failure(doc['gate'])}", "log_tail": ""}
    return doc


def test_force_promotes_a_run_whose_only_failure_was_the_gates_regression(tmp_path):
    promote_(tmp_path, run_file(tmp_path, "good", session_doc([True] * 30)))
    current = references.find(tmp_path / "references", SESSION)
    regressed = run_file(tmp_path, "worse", regressed_run([False] * 30, current))
    with pytest.raises(BenchError, match=r"the run failed only the gate \(gate: regression against .*--force"):
        promote_(tmp_path, regressed)
    log: list[str] = []
    promote_(tmp_path, regressed, "--force", log=log)
    assert "forced: the run failed only the gate (gate: regression against" in log[0]
    assert references.find(tmp_path / "references", SESSION).accuracy["strict_match"] == 0.0
    # Any other failure is still refused, --force or not.
    crashed = session_doc([True] * 30, status="failed")
    crashed["error"] = {"message": "server start: the server exited", "log_tail": ""}
    with pytest.raises(BenchError, match="status failed: server start: the server exited"):
        promote_(tmp_path, run_file(tmp_path, "crashed", crashed), "--force")


def test_promote_needs_force_for_a_protocol_change(tmp_path):
    promote_(tmp_path, run_file(tmp_path, "a", session_doc([True] * 40)))
    eight_shot = run_file(tmp_path, "b", session_doc([True] * 40, protocol={**PROTOCOL, "num_fewshot": 8}))
    with pytest.raises(BenchError, match=r"the protocol changes \(reference, run\): \{'num_fewshot': \(5, 8\)\}"):
        promote_(tmp_path, eight_shot)
    assert references.find(tmp_path / "references", SESSION).protocol["num_fewshot"] == 5
    log: list[str] = []
    promote_(tmp_path, eight_shot, "--force", log=log)
    forced = references.find(tmp_path / "references", SESSION)
    assert forced.protocol["num_fewshot"] == 8
    # The 5-shot references' accuracies say nothing about 8-shot runs: the lineage starts again.
    assert forced.lineage == () and "the lineage starts again (another protocol)" in log[0]


def test_promote_needs_force_for_a_run_with_no_question_in_common(tmp_path):
    promote_(tmp_path, run_file(tmp_path, "a", session_doc([True] * 40)))
    other = session_doc([True] * 40)
    for s in other["samples"]:
        s["question"] += " (v2)"
    with pytest.raises(BenchError, match=r"40 of the run's 40 questions .* have another question text"):
        promote_(tmp_path, run_file(tmp_path, "b", other))
    disjoint = session_doc([True] * 80)
    disjoint["samples"] = disjoint["samples"][40:]
    with pytest.raises(BenchError, match=r"only 0 of the run's 40 questions \(0\.0%, less than 10%\) are in the "
                                         "reference"):
        promote_(tmp_path, run_file(tmp_path, "c", disjoint))


def chain_step(previous: list[bool], lose: int, gain: int) -> list[bool]:
    """The previous run with its first `lose` right answers wrong and its first `gain` wrong answers right."""
    out = list(previous)
    for i in [i for i, ok in enumerate(previous) if ok][:lose]:
        out[i] = False
    for i in [i for i, ok in enumerate(previous) if not ok][:gain]:
        out[i] = True
    return out


def test_no_ratchet_a_chain_of_small_losses_is_refused_against_the_best_of_its_lineage(tmp_path):
    # Each step loses 24 questions and gains 14 (net 0.76 points): too small for the paired gate against the
    # reference it replaces (one-sided McNemar p 0.07 > 0.05), so every step alone would pass; the chain may
    # not drift down by that much again and again.
    first = [i % 5 != 0 for i in range(FULL)]  # 0.80
    chain, log = [first], []
    promote_(tmp_path, run_file(tmp_path, "0", session_doc(first)))
    for step in range(1, 20):
        candidate = chain_step(chain[-1], 24, 14)
        current = references.find(tmp_path / "references", SESSION)
        assert gate.judge_outcomes(current, PROTOCOL,
                                   {m: paired_stats.outcomes(session_doc(candidate)["samples"], m)
                                    for m in ("strict_match", "flexible_extract")}, SETTINGS)["verdict"] == "pass"
        log.clear()
        try:
            promote_(tmp_path, run_file(tmp_path, str(step), session_doc(candidate)), log=log)
        except BenchError as exc:
            refused = exc
            break
        chain.append(candidate)
    else:
        raise AssertionError("a chain of 19 small losses was never refused")
    best = round(sum(first) / FULL, 4)
    accuracy = round(sum(candidate) / FULL, 4)
    assert step >= 3 and len(current.lineage) == step - 1  # it took several promotions, each of them accepted
    assert f"strict_match {accuracy:.4f} is significantly below the best of its lineage, {best:.4f} (n 1319" in \
        str(refused)
    assert f"strict_match drift since the first reference {accuracy - best:+.4f} (n 1319)" in log[0]
    promote_(tmp_path, run_file(tmp_path, str(step), session_doc(candidate)), "--force")
    assert len(references.find(tmp_path / "references", SESSION).lineage) == step


def test_lineage_of_a_reference_is_written_and_read_back(tmp_path):
    promote_(tmp_path, run_file(tmp_path, "a", session_doc([True] * 40)))
    promote_(tmp_path, run_file(tmp_path, "b", session_doc([True] * 40)))
    document = json.loads((tmp_path / "references" / f"{SESSION}.json").read_text())
    assert document["lineage"] == [{"n": 40, "accuracy": {"strict_match": 1.0, "flexible_extract": 1.0},
                                    "git_commit": "0123abc", "date": "2026-11-27T02:00:00+00:00",
                                    "source": f"{SESSION}.json"}]


# --------------------------------------------------------------------------- the protocol fingerprint


def lm_eval_rows(n: int = 3, fewshot: str = "Question: 1+1?\nAnswer: 2\n\n", until: tuple[str, ...] = ("Question:",),
                 temperature: float = 0.0, question: str = "What is {i} + {i}?", chat: bool = False) -> list[dict]:
    """Rows as lm-eval 0.4.13 writes its samples file (loggers/evaluation_tracker.py): each question once per
    filter, `arguments` {"gen_args_0": {"arg_0": the request, "arg_1": its generation arguments}}; a chat
    request is a one-item list holding the messages as JSON."""
    rows = []
    for i in range(n):
        text = question.format(i=i)
        prompt = f"{fewshot}Question: {text}\nAnswer:"
        request = [json.dumps([{"role": "user", "content": prompt}])] if chat else prompt
        for flt in ("strict-match", "flexible-extract"):
            rows.append({"doc_id": i, "doc": {"question": text, "answer": f"#### {2 * i}"}, "target": f"#### {2 * i}",
                         "arguments": {"gen_args_0": {"arg_0": request, "arg_1": {
                             "until": list(until), "do_sample": False, "temperature": temperature}}},
                         "resps": [["..."]], "filtered_resps": ["..."], "filter": flt, "exact_match": 1.0})
    return rows


def of(rows, chat_template=None):
    return fingerprint.of_rows(rows, chat_template, Path("samples_gsm8k.jsonl"))


def test_the_fingerprint_names_the_part_that_changed():
    base = of(lm_eval_rows())
    assert base["n"] == 3 and set(base["parts"]) == set(fingerprint.PARTS) and base["parts"]["chat_template"] is None
    assert of(lm_eval_rows()) == base  # deterministic
    changes = {
        "prompt_template": of(lm_eval_rows(fewshot="Question: 2+2?\nAnswer: 4\n\n")),  # another few-shot source
        "generation_args": of(lm_eval_rows(temperature=0.7)),
        "stop_sequences": of(lm_eval_rows(until=("Question:", "\n\n"))),
        "chat_template": of(lm_eval_rows(), chat_template="{{ messages }}"),
    }
    for part, changed in changes.items():
        differ = [p for p in fingerprint.PARTS if changed["parts"][p] != base["parts"][p]]
        assert part in differ and changed["sha256"] != base["sha256"], part
    # Another dataset file changes the requests, not the template: the question ids see it too.
    other_questions = of(lm_eval_rows(question="How many apples, {i}?"))
    assert [p for p in fingerprint.PARTS if other_questions["parts"][p] != base["parts"][p]] == ["requests"]
    # A smoke run's first questions have the same template as a full run's.
    assert of(lm_eval_rows(n=2))["parts"]["prompt_template"] == base["parts"]["prompt_template"]
    # Chat messages (the question inside a JSON string, quotes and newlines escaped): the same blanking.
    chat = of(lm_eval_rows(chat=True, question='Is "{i}"\na number?'))
    chat_other = of(lm_eval_rows(chat=True, question='How "many" {i}?'))
    template = chat["parts"]["prompt_template"]
    assert template == chat_other["parts"]["prompt_template"] != base["parts"]["prompt_template"]
    assert chat["parts"]["requests"] != chat_other["parts"]["requests"]


def test_a_samples_file_without_rendered_requests_is_refused():
    rows = lm_eval_rows()
    del rows[0]["arguments"]
    with pytest.raises(BenchError, match=r"samples_gsm8k\.jsonl: doc_id 0: no rendered request in `arguments`"):
        of(rows)


def fingerprinted(outcomes: list[bool], **rows) -> dict:
    doc = session_doc(outcomes)
    doc["config"]["fingerprint"] = of(lm_eval_rows(n=len(outcomes), **rows))
    return doc


def test_the_gate_compare_and_promote_refuse_to_pair_other_fingerprints(tmp_path):
    promote_(tmp_path, run_file(tmp_path, "a", fingerprinted([True] * 40)))
    reference = references.find(tmp_path / "references", SESSION)
    assert reference.fingerprint == of(lm_eval_rows(n=40))
    other = fingerprinted([True] * 40, fewshot="Question: 2+2?\nAnswer: 4\n\n")
    verdict = gate.judge(against(reference), parse(MINIMAL).get(SESSION), PROTOCOL,
                         other["metrics"], other["samples"], None, other["config"]["fingerprint"])
    assert verdict["verdict"] == "not_comparable" and verdict["checks"] == []
    assert verdict["reason"].startswith(f"not comparable with {reference.path}: protocol fingerprints differ in "
                                        "prompt_template, requests (reference, run): prompt_template ")
    same = judge(against(reference), fingerprinted([True] * 40))
    assert same["verdict"] == "pass"
    assert run_comparison.compare_documents(fingerprinted([True] * 40), fingerprinted([True] * 40),
                                            SETTINGS)["reason"] == ""
    older = run_comparison.compare_documents(session_doc([True] * 40), fingerprinted([True] * 40), SETTINGS)
    assert older["verdict"] == "within_tolerance" and older["reason"] == (
        "the reference recorded no protocol fingerprint (written before fingerprints): paired on the protocol record "
        "alone")
    compared = run_comparison.compare_documents(fingerprinted([True] * 40), other, SETTINGS)
    assert compared["verdict"] == "not_compared"
    assert compared["reason"].startswith("protocol fingerprints differ in prompt_template")
    with pytest.raises(BenchError, match="the protocol fingerprints differ in prompt_template"):
        promote_(tmp_path, run_file(tmp_path, "b", other))
    log: list[str] = []
    promote_(tmp_path, run_file(tmp_path, "c", session_doc([True] * 40)), log=log)  # an older JSON: said so
    assert "the run recorded no protocol fingerprint (written before fingerprints)" in log[0]


def test_runs_without_a_fingerprint_fall_back_to_the_protocol_record_and_say_so(tmp_path):
    reference = reference_of([True] * 40, tmp_path)
    assert reference.fingerprint is None
    run = fingerprinted([True] * 40)
    verdict = gate.judge(against(reference), parse(MINIMAL).get(SESSION), PROTOCOL, run["metrics"], run["samples"],
                         None, run["config"]["fingerprint"])
    assert verdict["verdict"] == "pass" and verdict["coverage"]["fingerprint_note"] == (
        "the reference recorded no protocol fingerprint (written before fingerprints): paired on the protocol record "
        "alone")
    promote_(tmp_path, run_file(tmp_path, "a", fingerprinted([True] * 40)))
    fingerprinted_reference = references.find(tmp_path / "references", SESSION)
    older = session_doc([True] * 40)
    older_run = gate.judge(against(fingerprinted_reference), parse(MINIMAL).get(SESSION), PROTOCOL,
                           older["metrics"], older["samples"])
    assert older_run["verdict"] == "pass" and older_run["reason"].endswith(
        "; the run recorded no protocol fingerprint (written before fingerprints): paired on the protocol record "
        "alone")
    assert promote.protocol.fingerprint_difference(None, of(lm_eval_rows())) == ""
    # Requests are compared only between runs of the same questions (a smoke run against a full reference).
    smoke, full = of(lm_eval_rows(n=2)), of(lm_eval_rows(n=3))
    assert promote.protocol.fingerprint_difference(full, smoke) == ""
