"""report.html in a real browser: Debian's chromium, headless, driven by Selenium through Debian's
chromedriver (given by path, so Selenium Manager never looks for a driver to download)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import require
from test_compare import BASE, PROTOCOL, SETTINGS, session_doc, with_flips, write_set

from gsm8k_bench.matrix.loader import parse_matrix
from gsm8k_bench.reporting import html_page, report
from gsm8k_bench.verdicts import gate, paired_stats, references, run_comparison

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1400,1000")


@contextmanager
def chromium(profile: Path):
    """Headless Chromium with a fresh profile, its console log kept."""
    require(CHROMIUM.is_file() and CHROMEDRIVER.is_file(), "Debian's chromium and chromium-driver (apt)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def visible_rows(driver, selector):
    return [row for row in driver.find_elements("css selector", selector) if row.is_displayed()]


def test_report_page_filters_sorts_and_drills_down(browser, tmp_path):
    from selenium.webdriver.support.ui import Select

    results_dir = write_set(tmp_path / "results", session_doc(BASE),
                            session_doc(with_flips(BASE, lost=40, gained=3), precision="fp8"),
                            session_doc(BASE, framework="sglang"))
    report.write_report(results_dir, results_dir)
    browser.get((results_dir / "report.html").as_uri())
    assert console_errors(browser) == []
    assert browser.find_element("id", "count").text == "3 of 3 sessions"
    assert len(visible_rows(browser, "tr.session-row")) == 3

    Select(browser.find_element("id", "f-precision")).select_by_visible_text("fp8")
    rows = visible_rows(browser, "tr.session-row")
    assert [r.find_element("css selector", "td").text for r in rows] == ["gsm8k-m-h100-vllm-fp8-tp1"]
    assert browser.find_element("id", "count").text == "1 of 3 sessions"

    rows[0].click()
    assert browser.find_element("id", "detail").is_displayed()
    assert len(browser.find_elements("css selector", "#questions tr.q")) == 100  # the first page only
    assert browser.find_element("id", "q-count").text == "100 of 400 questions shown"
    first = browser.find_element("css selector", "#questions tr.q td.resp").text
    assert first == "The answer is 0."  # doc 0: wrong in the base outcomes, gained in this run

    compare_with = Select(browser.find_element("id", "compare-with"))
    compare_with.select_by_visible_text(
        "precision fp8 vs fp16 (runner=h100 framework=vllm tp=1): gsm8k-m-h100-vllm-fp16-tp1")
    Select(browser.find_element("id", "show")).select_by_value("flips")
    flips = browser.find_elements("css selector", "#questions tr.q.flip")
    assert len(flips) == 43 and browser.find_element("id", "q-count").text.endswith("; 43 flipped")
    response = flips[0].find_element("css selector", "td.resp").text
    assert response.startswith("The answer is 0.")  # this run's, then the compared run's
    assert response.endswith("gsm8k-m-h100-vllm-fp16-tp1] The answer is -1.")
    browser.save_screenshot(str(tmp_path / "report-drill-down.png"))
    assert (tmp_path / "report-drill-down.png").stat().st_size > 10_000

    Select(browser.find_element("id", "f-precision")).select_by_visible_text("all")
    browser.find_element("css selector", "#results th[data-key='strict']").click()
    ordered = [r.find_element("css selector", "td").text for r in visible_rows(browser, "tr.session-row")]
    assert ordered[0] == "gsm8k-m-h100-vllm-fp8-tp1"  # the lowest strict-match first
    assert console_errors(browser) == []


def test_compare_page_draws_a_session_in_pages_and_runs_nothing_from_the_data(browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    from gsm8k_bench.reporting import compare

    planted = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
    before = write_set(tmp_path / "before", session_doc(BASE))
    after = write_set(tmp_path / "after", session_doc(with_flips(BASE, lost=150, gained=0), response=planted))
    assert compare.main([str(before), str(after)]) == 1
    browser.get((after / "compare.html").as_uri())
    assert console_errors(browser) == []
    section = browser.find_element("css selector", "details.session")
    assert browser.find_elements("css selector", ".flip") == []  # nothing drawn before it is opened
    section.find_element("css selector", "summary").click()
    # <details> fires its toggle event as a task after the click: wait for the drawing, not a time.
    WebDriverWait(browser, 60).until(lambda d: d.find_elements("css selector", "details.session .flip"))
    flips = browser.find_elements("css selector", "details.session .flip")
    assert len(flips) == 100  # the first page (html_page.QUESTION_PAGE)
    assert flips[0].find_elements("css selector", "pre")[1].text == planted  # B's response, as text
    section.find_element("css selector", "button.more").click()
    assert len(browser.find_elements("css selector", "details.session .flip")) == 150
    assert not section.find_element("css selector", "button.more").is_displayed()
    assert browser.title == "GSM8k comparison" and console_errors(browser) == []


OVERVIEW_MATRIX = """\
version: 1
runners:
  h100: {vendor: nvidia, gpus: 8, label: h100-cr, precisions: [fp16, fp8]}
  mi355x: {vendor: amd, gpus: 8, label: mi355x-amd, precisions: [fp16, fp8]}
frameworks:
  vllm: {port: 8000, images: {nvidia: vllm/vllm-openai:v1, amd: vllm/vllm-openai-rocm:v1}}
  sglang: {port: 30000, images: {nvidia: lmsysorg/sglang:v1, amd: lmsysorg/sglang:v1-rocm}}
precisions:
  fp16: {vllm: {dtype: bfloat16}, sglang: {dtype: bfloat16}}
  fp8:
    vllm: {dtype: bfloat16, online_quantization: fp8, kv_cache_dtype: fp8}
    sglang: {dtype: bfloat16, online_quantization: fp8, kv_cache_dtype: fp8_e4m3}
models:
  m: {checkpoint: org/m, runners: [h100, mi355x], frameworks: [vllm, sglang], precisions: [fp16, fp8], tp: [1]}
"""
REGRESSED, ERRORED = "gsm8k-m-h100-vllm-fp8-tp1", "gsm8k-m-mi355x-vllm-fp16-tp1"
NOT_GATED, NOT_RUN = "gsm8k-m-h100-sglang-fp8-tp1", "gsm8k-m-mi355x-vllm-fp8-tp1"


def gated(document, reference_outcomes):
    """The document judged by the real gate against a reference run of `reference_outcomes`."""
    reference_doc = session_doc(reference_outcomes)
    protocol = gate.protocol_of(PROTOCOL, {"until": PROTOCOL["until"]})
    reference = references.Reference(
        session=document["session"], path=Path(f"references/{document['session']}.json"), n=len(reference_outcomes),
        protocol=protocol, accuracy={}, provenance={},
        outcomes={m: paired_stats.outcomes(reference_doc["samples"], m) for m in run_comparison.METRICS})
    document["gate"] = gate.judge_paired(reference, protocol, document["samples"], SETTINGS)
    if document["gate"]["verdict"] == "regression":
        document["status"] = "failed"
        document["error"] = {"message": "gate: " + gate.describe_regression(document["gate"]), "log_tail": ""}
    return document


def overview_results(folder):
    """Seven of matrix.yaml's eight cells: passed ones (against a reference or their fp16 sibling), one
    regression, one error, one not gated; mi355x vllm fp8 not run."""
    errored = {**session_doc(BASE, runner="mi355x"), "status": "failed", "metrics": None, "samples": [],
               "gate": None, "error": {"message": "server start: server exited with code 1", "log_tail": ""}}
    not_gated = session_doc(BASE, framework="sglang", precision="fp8")
    not_gated["gate"] = {"verdict": "not_gated", "reason": "no reference; no baseline for it in baselines.yaml"}
    return write_set(folder, gated(session_doc(BASE), BASE),
                     gated(session_doc(with_flips(BASE, lost=40, gained=3), precision="fp8"), BASE),
                     session_doc(BASE, framework="sglang"), not_gated, errored,
                     session_doc(BASE, runner="mi355x", framework="sglang"),
                     session_doc(with_flips(BASE, lost=6, gained=2), runner="mi355x", framework="sglang",
                                 precision="fp8"))


def test_overview_counts_grid_hover_filters_and_click_through(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    matrix = parse_matrix(OVERVIEW_MATRIX, tmp_path / "matrix.yaml")
    results_dir = overview_results(tmp_path / "results")
    report.write_report(results_dir, results_dir, matrix=matrix)
    browser.get((results_dir / "report.html").as_uri())
    assert console_errors(browser) == []

    counts = {b.get_attribute("data-outcome"): b.text for b in browser.find_elements("css selector", "#counts button")}
    assert counts == {"passed": "4 passed", "regressed": "1 regressed", "errored": "1 errored",
                      "not_gated": "1 not gated", "not_run": "1 not run"}
    attention = [li.text for li in browser.find_elements("css selector", "#attention li")]
    assert len(attention) == 2
    assert attention[0].startswith(f"regressed {REGRESSED}: regression against references/{REGRESSED}.json: "
                                   "strict_match 0.7075 vs 0.8000 over 400 questions")
    assert attention[1] == f"errored {ERRORED}: failed: server start: server exited with code 1"

    grid = browser.find_element("css selector", "#overview table.grid")
    assert [th.text for th in grid.find_elements("css selector", "thead th")] == [
        "precision tp", "h100\nvllm", "h100\nsglang", "mi355x\nvllm", "mi355x\nsglang"]
    cells = {}
    for tr in grid.find_elements("css selector", "tbody tr"):
        row = tr.find_element("css selector", "th").text
        for column, td in zip(("h100 vllm", "h100 sglang", "mi355x vllm", "mi355x sglang"),
                              tr.find_elements("css selector", "td"), strict=True):
            cells[f"{row} {column}"] = td
    assert {name: td.get_attribute("class") for name, td in cells.items()} == {
        "fp16 tp1 h100 vllm": "cell v-passed", "fp16 tp1 h100 sglang": "cell v-passed",
        "fp16 tp1 mi355x vllm": "cell v-errored", "fp16 tp1 mi355x sglang": "cell v-passed",
        "fp8 tp1 h100 vllm": "cell v-regressed", "fp8 tp1 h100 sglang": "cell v-not-gated",
        "fp8 tp1 mi355x vllm": "cell v-not-run", "fp8 tp1 mi355x sglang": "cell v-passed"}
    colours = {td.value_of_css_property("background-color") for td in cells.values()}
    assert len(colours) == 5  # passed, regressed, errored, not gated, not run: each its own colour
    regressed = cells["fp8 tp1 h100 vllm"]
    assert regressed.text == "0.708\n-9.2"
    hover = regressed.get_attribute("title").splitlines()
    paired = paired_stats.compare(BASE, with_flips(BASE, lost=40, gained=3), SETTINGS.confidence)
    assert hover[:3] == [REGRESSED, "regressed · strict-match 0.7075 (n=400)", f"Δ -0.0925 [{paired.lower:+.4f}, "
                         f"{paired.upper:+.4f}] vs reference references/{REGRESSED}.json"]
    assert hover[3].startswith("regression against references/")
    sibling = cells["fp8 tp1 mi355x sglang"].get_attribute("title").splitlines()
    assert sibling[2].startswith("Δ -0.0100 [")
    assert sibling[2].endswith("vs fp16 sibling gsm8k-m-mi355x-sglang-fp16-tp1")
    assert cells["fp8 tp1 h100 sglang"].get_attribute("title").endswith(
        "passed: no reference; no baseline for it in baselines.yaml")  # why it is not gated
    assert cells["fp8 tp1 mi355x vllm"].text == ""
    assert cells["fp8 tp1 mi355x vllm"].get_attribute("title") == f"{NOT_RUN}\nnot run\nin matrix.yaml, no result"
    assert cells["fp16 tp1 mi355x vllm"].text == "errored"

    browser.find_element("css selector", "#counts button[data-outcome='regressed']").click()
    assert browser.find_element("id", "count").text == "1 of 7 sessions"
    assert [r.find_element("css selector", "td").text for r in visible_rows(browser, "tr.session-row")] == [REGRESSED]
    dimmed = [td for td in cells.values() if td.value_of_css_property("opacity") != "1"]
    assert len(dimmed) == 7 and regressed not in dimmed
    browser.find_element("css selector", "#counts button[data-outcome='regressed']").click()  # off again
    assert browser.find_element("id", "count").text == "7 of 7 sessions"

    ActionChains(browser).move_to_element(regressed).perform()
    browser.save_screenshot(str(tmp_path / "report-overview.png"))
    assert (tmp_path / "report-overview.png").stat().st_size > 10_000

    regressed.click()
    assert browser.find_element("id", "detail").is_displayed()
    assert browser.find_element("id", "detail-title").text == REGRESSED
    assert browser.find_element("id", "detail-reason").text.startswith("regressed: regression against references/")
    assert browser.find_element("id", "q-count").text == "100 of 400 questions shown"
    selected = browser.find_elements("css selector", "tr.session-row.selected")
    assert [r.find_element("css selector", "td").text for r in selected] == [REGRESSED]
    browser.find_element("css selector", "#attention li:nth-child(2) a").click()
    assert browser.find_element("id", "detail-title").text == ERRORED
    reason = browser.find_element("id", "detail-reason")
    assert reason.text == "errored: failed: server start: server exited with code 1"
    assert browser.find_element("id", "q-count").text == "0 of 0 questions shown"
    assert console_errors(browser) == []


def test_a_session_whose_answers_are_left_out_says_how_to_see_them(browser, tmp_path, monkeypatch):
    results_dir = overview_results(tmp_path / "results")
    monkeypatch.setattr(html_page, "QUESTION_BUDGET_BYTES", 2)  # only the errored run's "[]" fits
    report.write_report(results_dir, tmp_path / "out")
    browser.get((tmp_path / "out" / "report.html").as_uri())
    browser.find_element("css selector", "td.cell[title^='gsm8k-m-mi355x-sglang-fp8-tp1']").click()
    note = browser.find_element("id", "not-embedded")
    assert note.is_displayed()
    assert note.text == ("This session's answers are not in this page (the note under the grid says why): "
                         "nox -s report -- RESULTS_DIR OUT_DIR --questions gsm8k-m-mi355x-sglang-fp8-tp1")
    options = [o.text for o in browser.find_elements("css selector", "#compare-with option")]
    assert options[1].endswith("gsm8k-m-mi355x-sglang-fp16-tp1 (answers not in this page)")
    assert browser.find_element("id", "size-note").text.startswith("Per-question answers of 1 of 7 sessions")
    assert console_errors(browser) == []
