"""The HTML report of the tiny end-to-end run, opened in a real browser (headless Chromium).

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``; .ci/run installs them) and selenium (requirements-test.txt). Without a
browser the test is skipped, saying so; under CI (``CI=true``) or with
MOTIONREFINE_REQUIRE_BROWSER=1 it fails instead, so CI always runs it.
"""
from __future__ import annotations

import os
import shutil
import sys

import pandas as pd
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The network is closed here: without these Chromium waits on connections (updates, sync, QUIC).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")
# The figures page.py always writes (each an <img>, or a note when there is nothing to show).
FIGURES = {"per-scene EPE change", "label coverage", "label quality", "flow colour key", "sample flows",
           "loss curves"}

# Every image with its decoded width, the SEVERE console entries come from the driver's log.
IMAGES_JS = "return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}));"
# The tables of section "Per-scene EPE change" (one per protocol, each under its <h3>) as text cells.
BEFORE_AFTER_JS = """
const out = [];
let inside = false, protocol = null;
for (const el of document.body.children) {
  if (el.tagName === 'H2') inside = el.textContent.includes('Per-scene EPE change');
  else if (inside && el.tagName === 'H3') protocol = el.textContent.trim();
  else if (inside && el.tagName === 'TABLE') {
    const head = Array.from(el.querySelectorAll('thead th')).map(th => th.textContent.trim());
    const rows = Array.from(el.querySelectorAll('tbody tr')).map(
        tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent.trim()));
    out.push({protocol, head, rows});
  }
}
return out;
"""


def _require_browser() -> None:
    required = os.environ.get("CI") == "true" or bool(os.environ.get("MOTIONREFINE_REQUIRE_BROWSER"))
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -r requirements-test.txt)")
    if not missing:
        return
    reason = (f"no browser to open the report: {', '.join(missing)} missing; install Debian's chromium "
              "and chromium-driver (apt-get install -y chromium chromium-driver)")
    if required:
        pytest.fail(f"{reason} (CI=true / MOTIONREFINE_REQUIRE_BROWSER: the browser test must run)")
    pytest.skip(reason)


@pytest.mark.parametrize("env, outcome", [({}, pytest.skip.Exception), ({"CI": "true"}, pytest.fail.Exception),
                                          ({"MOTIONREFINE_REQUIRE_BROWSER": "1"}, pytest.fail.Exception)])
def test_missing_browser_skips_with_the_reason_but_fails_under_ci(monkeypatch, env, outcome):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("MOTIONREFINE_REQUIRE_BROWSER", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(outcome, match=r"/nonexistent/chromium missing; install Debian's chromium"):
        _require_browser()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through the system chromedriver (nothing is downloaded), console log on."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, path) -> tuple[list[dict], list[str]]:
    """Load ``path`` (file:// URL; get() returns after the load event, images included): its
    images, and the console messages of severity SEVERE logged while it loaded."""
    driver.get_log("browser")  # drop what an earlier page logged
    driver.get(path.resolve().as_uri())
    images = driver.execute_script(IMAGES_JS)
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return images, severe


def test_checks_catch_a_broken_image_and_a_script_error(browser, tmp_path):
    """The checks below can fail: a page with an undecodable image and a throwing script."""
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><html><body><img alt='ok' src='data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAf"
                    "FcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='><img alt='bad' src='data:image/png;base64,AAAA'>"
                    "<script>throw new Error('report script failed')</script></body></html>")
    images, severe = open_page(browser, page)
    assert {i["alt"]: i["width"] for i in images} == {"ok": 1, "bad": 0}
    assert len(severe) == 1 and "report script failed" in severe[0]


@pytest.mark.slow
def test_report_page_in_a_browser(browser, tiny_run):
    report = tiny_run / "results/report/index.html"
    images, severe = open_page(browser, report)
    assert not severe, severe
    broken = [i["alt"] for i in images if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"images that did not decode: {broken}"
    assert FIGURES <= {i["alt"] for i in images}, [i["alt"] for i in images]

    # The before/after table: one row per refinement run x benchmark scene, the rows the report
    # wrote to before_after.csv; the tiny config has one run (heldout) and one scene (tinytex/s0).
    tables = browser.execute_script(BEFORE_AFTER_JS)
    # First the mean change per protocol and role (test scenes apart from dev), then one table per protocol.
    means = [t for t in tables if t["head"][:2] == ["protocol", "role"]]
    assert len(means) == 1 and [r[:2] for r in means[0]["rows"]] == [["heldout", "test"]], means
    tables = [t for t in tables if t not in means]
    assert tables and all(t["head"][:3] == ["run", "benchmark", "scene"] for t in tables), tables
    shown = [(t["protocol"], *row[:3]) for t in tables for row in t["rows"]]
    written = pd.read_csv(tiny_run / "results/report/before_after.csv")
    assert sorted(shown) == sorted(zip(written["protocol"], written["run"], written["benchmark"],
                                       written["scene"].astype(str)))
    assert [row[1:] for row in shown] == [("heldout", "tinytex", "s0")]
    epe = {h: tables[0]["rows"][0][i] for i, h in enumerate(tables[0]["head"])}
    assert epe["EPE before"] == f"{written['epe_pretrained'][0]:.3f}"
    assert epe["EPE after"] == f"{written['epe_refined'][0]:.3f}"
