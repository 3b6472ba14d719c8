"""report.html in a real browser: Debian's chromium, headless, driven by Selenium through Debian's
chromedriver (given by path, so Selenium Manager never looks for a driver to download)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import require
from test_compare import BASE, session_doc, with_flips, write_set

from gsm8k_bench.reporting import report

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
