"""References built from two runs: the exchangeable exact test against independent computations, the
schema, the gate's verdict and `nox -s promote` combining two session JSONs.

Pure: no servers (tests/test_paired_integration.py runs the real stack with a one-run reference)."""

from __future__ import annotations

import itertools
import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from test_paired_gate import PROTOCOL, SESSION, against, judge, promote_, reference_of, run_file, session_doc

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.reporting import console_summary
from gsm8k_bench.verdicts import gate, paired_stats, promote, references
from gsm8k_bench.verdicts.protocol import FINGERPRINT_PARTS

FINGERPRINT = {"sha256": "a" * 64, "n": 60, "parts": dict.fromkeys(FINGERPRINT_PARTS, "b" * 64)}

# --------------------------------------------------------------------------- the exact test


def brute_force_drop_p(reference_runs: int, split: dict[int, int], right: int) -> Fraction:
    """Every outcome of every split question, each right with probability s / (R + 1), as exact
    fractions: the total probability of at most `right` right."""
    chances = [Fraction(s, reference_runs + 1) for s, count in split.items() for _ in range(count)]
    total = Fraction(0)
    for answers in itertools.product((0, 1), repeat=len(chances)):
        if sum(answers) <= right:
            weight = Fraction(1)
            for answer, chance in zip(answers, chances, strict=True):
                weight *= chance if answer else 1 - chance
            total += weight
    return total


@pytest.mark.parametrize(("c1", "c2"), [(0, 0), (1, 0), (0, 1), (3, 2), (5, 5), (2, 9), (8, 4)])
def test_the_two_run_p_equals_brute_force_enumeration(c1, c2):
    for right in range(c1 + c2 + 1):
        exact = brute_force_drop_p(2, {1: c1, 2: c2}, right)
        assert paired_stats.exchangeable_drop_p(2, {1: c1, 2: c2}, right) == pytest.approx(float(exact), rel=1e-12)


def scipy_drop_p(c1: int, c2: int, right: int) -> float:
    """scipy's binomial pmfs, convolved: P(Bin(c1, 1/3) + Bin(c2, 2/3) <= right)."""
    from scipy.stats import binom

    pmf = np.convolve(binom.pmf(np.arange(c1 + 1), c1, 1 / 3), binom.pmf(np.arange(c2 + 1), c2, 2 / 3))
    return float(pmf[: right + 1].sum())


def test_the_two_run_p_equals_scipys_binomials_convolved():
    for c1, c2 in itertools.product((0, 7, 40, 150), (0, 11, 60, 200)):
        for right in sorted({0, (c1 + c2) // 3, (c1 + c2) // 2, c1 + c2}):
            expected = scipy_drop_p(c1, c2, right)
            assert paired_stats.exchangeable_drop_p(2, {1: c1, 2: c2}, right) == pytest.approx(
                expected, rel=1e-9, abs=1e-300), (c1, c2, right)


def test_one_reference_run_is_mcnemar():
    # Where the tests coincide: a question right in 1 of the 2 runs is a discordant pair, right in the run
    # with probability 1/2, and the run's right ones among them are the gained ones.
    for lost, gained in itertools.product(range(0, 30, 4), range(0, 30, 5)):
        assert paired_stats.exchangeable_drop_p(1, {1: lost + gained}, gained) == pytest.approx(
            paired_stats.mcnemar_drop_p(lost, gained), rel=1e-12)


@pytest.mark.parametrize(("split", "right", "message"), [
    ({3: 1}, 0, "counts for 0 < s <= 2"), ({1: -1}, 0, "counts for 0 < s <= 2"), ({1: 2}, 3, "right in 0..2")])
def test_the_two_run_p_refuses_a_split_it_cannot_have(split, right, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        paired_stats.exchangeable_drop_p(2, split, right)


# --------------------------------------------------------------------------- the reference and the gate


def run_doc(right: list[bool], started: str, truncated: tuple[int, ...] = ()) -> dict:
    doc = session_doc(right)
    doc["environment"].update(started_at=started, run_id=f"run-{started[:10]}", host="h1")
    doc["config"]["fingerprint"] = FINGERPRINT
    for sample in doc["samples"]:
        sample["outcome"] = ("truncated" if sample["doc_id"] in truncated
                             else "correct" if sample["strict_correct"] else "wrong")
    return doc


# 60 questions: 0-29 right in both runs, 30-39 right in A only, 40-49 in B only, 50-59 in neither.
RUN_A = [True] * 40 + [False] * 20
RUN_B = [True] * 30 + [False] * 10 + [True] * 10 + [False] * 10


def two_run_reference(tmp_path: Path, truncated: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())):
    document = references.from_sessions(
        [run_doc(RUN_A, "2026-12-01T01:00:00+00:00", truncated[0]),
         run_doc(RUN_B, "2026-12-02T01:00:00+00:00", truncated[1])], ["a.json", "b.json"])
    return references.load(references.write(tmp_path / f"{SESSION}.json", document), SESSION)


def losing(lost: int, truncated: tuple[int, ...] = ()) -> dict:
    """A run right on the 30 questions both reference runs got right but `lost` of them, on 10 of the 20
    they split on, on none of the others."""
    right = [i >= lost for i in range(30)] + [True] * 10 + [False] * 20
    return run_doc(right, "2026-12-03T01:00:00+00:00", truncated)


def test_a_two_run_reference_holds_counts_and_where_its_runs_came_from(tmp_path):
    reference = two_run_reference(tmp_path, truncated=((55,), (55, 56)))
    document = json.loads(reference.path.read_text())
    assert (document["schema"], document["runs"], reference.runs, reference.n) == (3, 2, 2, 60)
    assert sorted(document["questions"].values()) == ["00"] * 10 + ["11"] * 20 + ["22"] * 30
    assert reference.accuracy == {"strict_match": 0.6667, "flexible_extract": 0.6667}  # (2 * 30 + 20) / 120
    assert sorted(document["truncated"].values()) == [1, 2]
    assert [start["started_at"] for start in reference.provenance["server_starts"]] == [
        "2026-12-01T01:00:00+00:00", "2026-12-02T01:00:00+00:00"]
    assert reference.provenance["source"] == "a.json + b.json"


def test_the_gate_judges_a_two_run_reference_with_the_two_run_test_just_past_and_just_short(tmp_path):
    reference = two_run_reference(tmp_path)
    # lost 7: right in 1 of 3 runs: the 10 split ones the run missed; in 2 of 3: the 10 it got and the 7
    # lost; the run right in 10 of those 27.
    p = {lost: scipy_drop_p(10, 10 + lost, 10) for lost in (7, 8, 9)}
    p7 = p[7]
    assert p[9] < 0.025 < p[8]
    # Truncation is recorded on both sides: two tests, each at half the session's level.
    for confidence, lost, called in [(1 - 2 * p7 * (1 + 1e-9), 7, "regression"), (1 - 2 * p7 * (1 - 1e-9), 7, "pass"),
                                     (0.95, 9, "regression"), (0.95, 8, "pass")]:
        settings = gate.GateSettings(confidence=confidence)
        verdict = gate.judge(gate.Baselines(settings, (), reference), combo(), PROTOCOL, {}, losing(lost)["samples"],
                             fingerprint=FINGERPRINT)
        strict = verdict["checks"][0]
        assert verdict["verdict"] == called, (confidence, lost, strict["p"])
        assert (strict["test"], strict["reference_runs"], strict["mcnemar_p"]) == ("two-run exact", 2, None)
        assert strict["split"] == {"right_in_1_of_3": 10, "right_in_2_of_3": 10 + lost, "run_right": 10}
        assert strict["p"] == pytest.approx(p[lost], rel=1e-9)
        assert (strict["lost"], strict["lost_doc_ids"], strict["gained"]) == (lost, list(range(lost)), 0)
        assert (strict["observed"], strict["reference"]) == (round((40 - lost) / 60, 4), 0.6667)
        assert (verdict["tests"], verdict["level"]) == (2, pytest.approx((1 - confidence) / 2))
    assert "one-sided two-run exact p 0.02643 (right in 1 of 3 runs: 10, in 2 of 3: 18, the run right in 10 of " \
           "them) > 0.025" in verdict["reason"] and "(two runs)" in verdict["reason"]
    regressed = gate.judge(against(reference), combo(), PROTOCOL, {}, losing(12)["samples"], fingerprint=FINGERPRINT)
    assert "one-sided two-run exact p" in gate.describe_regression(regressed)
    printed = "\n".join(console_summary.lines({**losing(12), "gate": regressed}, tmp_path / "r.json"))
    assert re.search(r"^  strict-match .* <= 0\.025 \(two-run exact\) .* regression$", printed, re.M), printed


def test_truncation_against_a_two_run_reference_uses_the_same_test(tmp_path):
    reference = two_run_reference(tmp_path, truncated=((55,), (56,)))
    more = tuple(range(40, 52))  # 12 answers hit the token limit that no reference run's did
    verdict = gate.judge(against(reference), combo(), PROTOCOL, {}, losing(0, (55, *more))["samples"],
                         fingerprint=FINGERPRINT)
    check = verdict["truncation"]
    assert (check["test"], check["more"], check["more_doc_ids"]) == ("two-run exact", 12, list(more))
    # not truncated in s of 3: 55 and 56 were cut in one reference run each (55 now too): s = 1 and 2
    assert check["split"] == {"right_in_1_of_3": 1, "right_in_2_of_3": 1 + 12, "run_right": 1}
    assert check["p"] == pytest.approx(float(brute_force_drop_p(2, {1: 1, 2: 13}, 1)), rel=1e-12)
    assert check["regression"] and verdict["verdict"] == "regression"


def test_a_schema_2_reference_still_loads_and_judges_as_a_one_run_one(tmp_path):
    run = [True, False, True, True] * 10
    current = references.from_session(session_doc(run))
    older = {k: v for k, v in current.items() if k not in ("runs", "truncated")} | {"schema": 2}
    older["truncated"] = []  # schema 2: a list
    (tmp_path / "old").mkdir()
    path = tmp_path / "old" / f"{SESSION}.json"
    path.write_text(json.dumps(older))
    old, new = references.load(path, SESSION), reference_of(run, tmp_path)
    assert (old.runs, old.truncated) == (1, {})
    rerun = list(run)
    rerun[0] = rerun[2] = rerun[3] = False
    judged = [judge(against(reference), session_doc(rerun)) for reference in (old, new)]
    assert judged[0]["checks"] == judged[1]["checks"] and judged[0]["checks"][0]["test"] == "McNemar exact"
    assert judged[0]["checks"][0]["p"] == paired_stats.mcnemar_drop_p(3, 0)


def combo():
    from conftest import MINIMAL, parse

    return parse(MINIMAL).get(SESSION)


# --------------------------------------------------------------------------- nox -s promote of two runs


def test_promote_combines_two_runs_of_separate_server_starts(tmp_path):
    log: list[str] = []
    first = run_file(tmp_path, "a", run_doc(RUN_A, "2026-12-01T01:00:00+00:00"))
    second = run_file(tmp_path, "b", run_doc(RUN_B, "2026-12-02T01:00:00+00:00"))
    (written,) = promote_(tmp_path, first, second, log=log)
    reference = references.load(written, SESSION)
    assert reference.runs == 2 and reference.counts is not None
    assert reference.accuracy["strict_match"] == 0.6667
    assert not any("a reference of one run" in line for line in log)
    # Over it: one run, judged by the two-run test, and the lineage continues.
    log.clear()
    (again,) = promote_(tmp_path, run_file(tmp_path, "c", run_doc(RUN_A, "2026-12-05T01:00:00+00:00")), log=log)
    replaced = references.load(again, SESSION)
    assert replaced.runs == 1 and [entry["n"] for entry in replaced.lineage] == [60]
    assert "a reference of one run: the gate judges against it with McNemar's test, which misses the power " \
           "goals; a reference of two runs from separate server starts meets them: nox -s promote -- " in log[0]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda b: b["environment"].update(started_at="2026-12-01T01:00:00+00:00"),
     re.escape("both are the same server start (the same environment.started_at '2026-12-01T01:00:00+00:00')")),
    (lambda b: b["environment"].update(run_id="run-2026-12-01"),
     re.escape("both are the same server start (the same environment.run_id 'run-2026-12-01')")),
    (lambda b: b["environment"].pop("started_at"), "records no environment.started_at"),
    (lambda b: b["config"].update(fingerprint={**FINGERPRINT, "sha256": "c" * 64}),
     "protocol fingerprints differ: aaaaaaaaaaaa vs cccccccccccc"),
    (lambda b: b["config"].update(fingerprint={**FINGERPRINT, "sha256": "c" * 64, "parts": {
        **FINGERPRINT["parts"], "stop_sequences": "d" * 64}}), "protocol fingerprints differ in stop_sequences"),
    (lambda b: b["config"].pop("fingerprint"), "a run records no protocol fingerprint"),
    (lambda b: b["config"]["protocol"].update(num_fewshot=8), "the protocol differs"),
    (lambda b: b["samples"].pop(), r"the runs asked other questions \(only in .*: 1 \(doc_ids 59\); only in .*: 0\)"),
])
def test_promote_refuses_two_runs_that_are_not_two_starts_of_one_protocol(tmp_path, edit, message):
    first = run_doc(RUN_A, "2026-12-01T01:00:00+00:00")
    second = run_doc(RUN_B, "2026-12-02T01:00:00+00:00")
    edit(second)
    paths = [run_file(tmp_path, "a", first), run_file(tmp_path, "b", second)]
    for args in (paths, [*paths, "--force"]):  # never forced: it would judge wrongly
        with pytest.raises(BenchError, match=rf"not one reference of two runs: .*{message}"):
            promote_(tmp_path, *args)
    assert not (tmp_path / "references" / f"{SESSION}.json").exists()


def test_promote_refuses_three_runs_and_judges_each_run_against_the_current_reference(tmp_path):
    starts = [f"2026-12-0{day}T01:00:00+00:00" for day in (1, 2, 3)]
    paths = [run_file(tmp_path, name, run_doc(RUN_A, start)) for name, start in zip("abc", starts, strict=True)]
    with pytest.raises(BenchError, match=r"3 runs of it \(.*\): a reference combines one or 2"):
        promote_(tmp_path, *paths)
    promote_(tmp_path, paths[0])  # the current reference: run A
    worse = run_file(tmp_path, "d", run_doc([False] * 60, "2026-12-04T01:00:00+00:00"))
    with pytest.raises(BenchError, match=r"the current reference calls run 2: a regression against .*--force"):
        promote_(tmp_path, paths[1], worse)
    (written,) = promote_(tmp_path, paths[1], worse, "--force")
    assert references.load(written, SESSION).runs == 2
    # A two-run reference file as a candidate: its runs are gone, so only --force promotes it over another.
    candidate = tmp_path / "candidate" / f"{SESSION}.json"
    candidate.parent.mkdir()
    candidate.write_text(written.read_text())
    promote_(tmp_path, paths[2], "--force")
    with pytest.raises(BenchError, match="it is a reference of 2 runs: the current reference can judge only"):
        promote_(tmp_path, candidate)
    assert promote.ONE_RUN_NOTE.startswith("a reference of one run")
