"""report.html in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium):
the tables and images render, a header click sorts the per-case table, nothing is fetched from the
network, and a full-page screenshot is saved to ``test-artifacts/report.png`` (never committed).

Skipped when Chromium, chromedriver or Selenium are absent (install them with ``make browser``);
fails instead under ``CI=true``, where they must be present.
"""

from __future__ import annotations

import base64
import csv
import os
from pathlib import Path

import pytest
import torch

from medseg.evaluation.report import write_report
from medseg.evaluation.report.sections import METRICS_TABLE_ID, PER_CASE_TABLE_ID
from tests.test_report import build_run_2d

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1300,1000")


def _unavailable(reason: str) -> None:
    reason += "; install with `make browser` (apt-get install chromium chromium-driver) and `pip install -e .[test]`"
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(reason + "; CI=true requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        _unavailable(f"headless browser not found: {', '.join(missing)}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # with the driver path below, Selenium Manager downloads nothing
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, int]:
    """A 2D run with four test images, evaluated, and its report; returns (report, number of test cases)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = build_run_2d(tmp_path_factory.mktemp("browser"), n=10)
    finally:
        torch.set_num_threads(before)
    from medseg.evaluation.evaluate_run import evaluate_run
    from medseg.evaluation.quality_fit import fit_quality

    fit_quality(run, reference_cases=5)  # quality control, then the evaluation again with it
    evaluate_run(run)
    with (run / "evaluation" / "per_image.csv").open() as f:
        n_cases = sum(1 for _ in csv.DictReader(f))
    return write_report(run), n_cases


def _column(driver, header: str) -> list[float | None]:
    """The per-case table's values of one column, in displayed order (``None`` for empty cells)."""
    return driver.execute_script(
        """const t = document.getElementById(arguments[0]);
           const i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent.trim() === arguments[1]);
           return Array.from(t.tBodies[0].rows).map(r => {
               const v = parseFloat(r.cells[i].getAttribute('data-v')); return isNaN(v) ? null : v; });""",
        PER_CASE_TABLE_ID, header)


def _header(driver, text: str):
    from selenium.webdriver.common.by import By

    return next(th for th in driver.find_elements(By.CSS_SELECTOR, f"#{PER_CASE_TABLE_ID} thead th") if th.text.strip() == text)


def test_first_screen_shows_headline_quality_control_and_gallery(browser, report):
    """In a 1400x900 window, the headline table, the quality-control section and the gallery's first pictures are
    visible without scrolling; a click on a picture enlarges it and a second click closes it."""
    from selenium.webdriver.common.by import By

    path, n_cases = report
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    browser.get(path.resolve().as_uri())
    height = browser.execute_script("return window.innerHeight")
    assert height == 900

    def top(selector: str) -> float:
        return browser.execute_script("const e = document.querySelector(arguments[0]); return e ? e.getBoundingClientRect().top : null",
                                      selector)

    for selector in ("#headline", "#glance h3", "#gallery .tile img"):
        t = top(selector)
        assert t is not None and 0 <= t < height, (selector, t, height)
    headline = browser.find_element(By.ID, "headline").text
    assert "Dice" in headline and "HD95" in headline and "NSD" in headline
    assert "cases to check" in browser.find_element(By.ID, "glance").text
    tiles = browser.find_elements(By.CSS_SELECTOR, "#gallery .tile")
    assert len(tiles) == n_cases
    dice = [float(t.text.split("Dice ")[1].split()[0]) for t in tiles]
    assert dice == sorted(dice)  # worst first
    links = browser.find_elements(By.CSS_SELECTOR, "#gallery .tile a")
    assert len(links) == n_cases and all(Path(a.get_attribute("href").removeprefix("file://")).is_file() for a in links)
    # click to enlarge, click to close
    tiles[0].find_element(By.TAG_NAME, "img").click()
    assert browser.execute_script("return !document.getElementById('zoom').hidden")
    browser.find_element(By.ID, "zoom").click()
    assert browser.execute_script("return document.getElementById('zoom').hidden")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report_first_screen.png").write_bytes(browser.get_screenshot_as_png())
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_report_renders_sorts_and_is_saved_as_a_screenshot(browser, report):
    path, n_cases = report
    browser.get(path.resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"

    # tables render with their rows
    rows = browser.execute_script("return document.querySelectorAll(arguments[0]).length", f"#{PER_CASE_TABLE_ID} tbody tr")
    assert rows == n_cases >= 3
    assert browser.execute_script("return document.querySelectorAll(arguments[0]).length", f"#{METRICS_TABLE_ID} tbody tr") >= 2
    assert browser.execute_script(f"return document.getElementById('{PER_CASE_TABLE_ID}').offsetHeight") > 0

    # every image is decoded and drawn
    sizes = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) >= 1 + 2 + min(n_cases, 6) + n_cases  # curves, box plots, worst/best overlays, the gallery
    assert all(done and w > 0 and h > 0 for done, w, h in sizes), sizes

    # clicking a header sorts the table by it; a second click reverses
    original = _column(browser, "accuracy")
    _header(browser, "accuracy").click()
    ascending = _column(browser, "accuracy")
    assert ascending == sorted(original) and _header(browser, "accuracy").get_attribute("aria-sort") == "ascending"
    _header(browser, "accuracy").click()
    descending = _column(browser, "accuracy")
    assert descending == sorted(original, reverse=True)
    if len(set(original)) > 1:
        assert ascending != descending
    case_order = browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(td => td.textContent)", f"#{PER_CASE_TABLE_ID} tbody td:first-child")
    _header(browser, "case").click()
    by_name = browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(td => td.textContent)", f"#{PER_CASE_TABLE_ID} tbody td:first-child")
    assert sorted(by_name) == sorted(case_order) and by_name == sorted(by_name)

    # nothing but the file itself and its data: URIs was loaded; the page ran without errors
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(not r.startswith(("http:", "https:")) for r in resources), resources
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []

    # full-page screenshot, kept as a test artefact
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1300, "height": height, "deviceScaleFactor": 1, "mobile": False})
    png = base64.b64decode(browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"])
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.write_bytes(png)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size[0] == 1300 and im.size[1] >= min(height, 16000) > 1000
