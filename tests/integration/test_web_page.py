"""The web page of ``xcombus serve`` in a real browser: Debian's headless Chromium, driven
by selenium through Debian's chromedriver, against a real server on real data."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import live_server, make_settings
from tests.integration.http_data import RUN, TOKEN, VERSIONS_DAG, VERSIONS_RUN, populate, populate_versions
from xcombus import Settings, XComBus

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOSTILE_KEY = "<img src=x onerror=window.pwned=1>"
HOSTILE_VALUE = "<script>window.pwned=2</script>"

selenium = pytest.importorskip("selenium", reason="pip install selenium (the test extra)")


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        message = f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def server(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(kafka, tmp_path_factory.mktemp("page"))
    populate(settings)
    populate_versions(settings)

    async def hostile(s: Settings) -> None:
        async with XComBus(s, materialize=True) as bus:
            await bus.task_instance("xss", "r", "t").xcom_push(HOSTILE_KEY, HOSTILE_VALUE)
            await bus.wait_visible(range(s.partitions))

    asyncio.run(hostile(settings))
    with live_server(settings, token=TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


# -- helpers -----------------------------------------------------------------------------------
def by_testid(driver: Any, testid: str, **data: str) -> list[Any]:
    selector = f'[data-testid="{testid}"]' + "".join(f'[data-{k.replace("_", "-")}="{v}"]' for k, v in data.items())
    return list(driver.find_elements("css selector", selector))


def wait_for(driver: Any, predicate: Any, what: str, timeout: float = 15) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(lambda d: predicate(d) or None)
    except TimeoutException:
        error = by_testid(driver, "error")
        shown = error[0].text if error and error[0].is_displayed() else ""
        pytest.fail(f"timed out waiting for {what}; page error: {shown!r}; status: "
                    f"{driver.find_element('id', 'status').text!r}")


def rows(driver: Any, testid: str, count: int) -> list[Any]:
    return wait_for(driver, lambda d: (found := by_testid(d, testid)) and len(found) == count and found,
                    f"{count} {testid}s")


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


def check_png(path: Path) -> tuple[int, int]:
    """A real, non-blank PNG: the signature, a sane size, and pixel data of many values
    (a one-color image decompresses to a handful of distinct bytes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert len(data) > 10_000, f"suspiciously small screenshot ({len(data)} bytes)"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    assert len(set(pixels)) > 32, "the screenshot is (nearly) one color"
    return width, height


def severe_console_messages(driver: Any) -> list[str]:
    """Browser errors except the expected ones (the 401 before the token is typed)."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "401" not in e["message"]]


# -- the tests ---------------------------------------------------------------------------------
def test_click_through_dags_runs_task_instances_xcoms_and_history(server: str, browser: Any,
                                                                  tmp_path: Path) -> None:
    """The whole path a user takes, with a screenshot of the XComs and of the history."""
    browser.get(server + "/")
    assert browser.title == "xcombus · XComs"
    # The server wants a token: the page says so, then works once it is typed.
    wait_for(browser, lambda d: "401" in text_of(d, "error"), "the 401 problem")
    assert "Authorization: Bearer" in text_of(browser, "error")
    browser.find_element("id", "token-input").send_keys(TOKEN)
    browser.find_element("id", "token-save").click()
    dags = rows(browser, "dag-row", 4)
    assert [d.get_attribute("data-dag-id") for d in dags] == ["etl", "other", VERSIONS_DAG, "xss"]
    assert browser.execute_script("return sessionStorage.getItem('xcombus.apiToken')") == TOKEN
    assert not by_testid(browser, "error")[0].is_displayed()
    assert "etl" in dags[0].text and "9" in dags[0].text

    by_testid(browser, "dag-row", dag_id="etl")[0].click()
    runs = rows(browser, "run-row", 2)
    assert runs[0].get_attribute("data-run-id") == RUN and "2026-11-24 00:00:00" in runs[0].text
    assert text_of(browser, "view-title") == "Runs of etl"

    by_testid(browser, "run-row", run_id=RUN)[0].click()
    tis = rows(browser, "ti-row", 6)
    assert [(t.get_attribute("data-task-id"), t.get_attribute("data-map-index")) for t in tis] == [
        ("extract", "-1"), ("load", "-1"), *(("transform", str(i)) for i in range(4))]

    by_testid(browser, "ti-row", task_id="extract")[0].click()
    xcoms = rows(browser, "xcom-row", 2)
    assert [x.get_attribute("data-key") for x in xcoms] == ["meta", "return_value"]
    assert '{"rows":42}' in xcoms[1].text  # the light value, compact
    assert text_of(browser, "status") == "2 XComs"

    # A click loads the full value (deserialize=true, stringify=false).
    by_testid(browser, "xcom-row", key="meta")[0].click()
    full = wait_for(browser, lambda d: (t := text_of(d, "full-value")) and t != "Loading…" and t,
                    "the full value")
    assert '"__type__": "datetime"' in full and '"__value__": "2026-11-24T06:30:00+00:00"' in full
    assert text_of(browser, "detail-title") == "meta — full value"
    assert "selected" in by_testid(browser, "xcom-row", key="meta")[0].get_attribute("class")
    shot = tmp_path / "xcoms.png"
    assert browser.save_screenshot(str(shot))
    width, height = check_png(shot)
    assert width >= 1000 and height >= 600

    # Back up through the breadcrumbs to the run, then to load's "summary" history.
    crumbs = by_testid(browser, "crumb")
    assert [c.text for c in crumbs] == ["DAGs", "etl", RUN, "extract"]
    crumbs[2].click()
    rows(browser, "ti-row", 6)
    by_testid(browser, "ti-row", task_id="load")[0].click()
    rows(browser, "xcom-row", 2)
    summary = by_testid(browser, "xcom-row", key="summary")[0]
    assert "v3" in summary.text
    summary.find_element("css selector", '[data-testid="xcom-history"]').click()
    history = rows(browser, "history-row", 4)
    assert [h.get_attribute("data-kind") for h in history] == ["push", "push", "clear", "push"]
    assert "v1" in history[0].text and "v2" in history[1].text and "v3" in history[3].text
    assert "cleared" in history[2].text
    assert "3 versions, 1 clear" in text_of(browser, "status")
    assert text_of(browser, "view-title") == "History of summary"
    shot = tmp_path / "history.png"
    assert browser.save_screenshot(str(shot))
    check_png(shot)

    # The browser's back button walks the same way back (hash routing).
    browser.back()
    rows(browser, "xcom-row", 2)
    assert severe_console_messages(browser) == []


def test_history_shows_tries_fenced_events_and_overrides_with_actor_and_reason(server: str, browser: Any,
                                                                              tmp_path: Path) -> None:
    """The history of an XCom a zombie try pushed to after its retry, then set, deleted and
    reverted by hand: every row says its kind, try, who and why, and fenced rows say they
    were never applied; with a screenshot."""
    browser.get(server + "/")
    browser.execute_script("sessionStorage.setItem('xcombus.apiToken', arguments[0])", TOKEN)
    browser.get(server + f"/#/dags/{VERSIONS_DAG}")
    browser.refresh()
    rows(browser, "run-row", 1)
    by_testid(browser, "run-row", run_id=VERSIONS_RUN)[0].click()
    rows(browser, "ti-row", 1)[0].click()
    xcoms = rows(browser, "xcom-row", 2)
    assert [x.get_attribute("data-key") for x in xcoms] == ["fixed", "rows"]
    assert "12" in xcoms[1].text  # the reverted value is what pulls see
    xcoms[1].find_element("css selector", '[data-testid="xcom-history"]').click()

    history = rows(browser, "history-row", 9)
    assert [(h.get_attribute("data-kind"), h.get_attribute("data-operation"), h.get_attribute("data-try"))
            for h in history] == [
        ("push", "push", "1"), ("push", "push", "1"), ("clear", "clear", "2"), ("push", "push", "2"),
        ("fenced", "push", "1"), ("fenced", "clear", "1"),
        ("override", "set", "2"), ("override", "delete", "2"), ("override", "set", "2")]
    cells = [[td.text for td in h.find_elements("css selector", "td")] for h in history]
    # columns: position, event, try, time, by, reason, replaced, value
    assert [c[1] for c in cells] == ["push", "push", "clear", "push", "fenced push · never applied",
                                     "fenced clear · never applied", "override set", "override delete",
                                     "override set"]
    assert cells[4][7] == "99" and "fenced" in (history[4].get_attribute("class") or "")
    assert "nothing cleared" in cells[5][7]
    alice, bob, carol = history[6:]
    assert by_testid(alice, "history-actor")[0].text == "alice"
    assert by_testid(alice, "history-reason")[0].text == "JIRA-7 recount"
    assert by_testid(alice, "history-replaces")[0].text == cells[3][0]  # try 2's push
    assert cells[6][7] == "13" and cells[7][7] == "(deleted)" and cells[8][7] == "12"
    assert (cells[7][4], cells[7][5], cells[7][6]) == ("bob", "bad batch", cells[6][0])
    assert (cells[8][4], cells[8][5], cells[8][6]) == ("carol", "undo the delete", "")
    assert by_testid(carol, "history-replaces") == [] and by_testid(bob, "history-actor")[0].text == "bob"
    assert by_testid(history[0], "history-actor") == [] and cells[0][5] == ""  # a push has no actor or reason
    assert text_of(browser, "status") == "6 versions (3 overrides), 1 clear, 2 fenced (never applied), in log order"
    assert "never applied" in text_of(browser, "legend")
    shot = tmp_path / "history-versions.png"
    assert browser.save_screenshot(str(shot))
    width, height = check_png(shot)
    assert width >= 1000 and height >= 600

    # An XCom only an override ever wrote has a history too.
    browser.back()
    rows(browser, "xcom-row", 2)
    by_testid(browser, "xcom-row", key="fixed")[0].find_element(
        "css selector", '[data-testid="xcom-history"]').click()
    fixed = wait_for(browser, lambda d: (found := by_testid(d, "history-row"))
                     and found[-1].get_attribute("data-kind") == "override" and found, "the history of fixed")
    assert [h.get_attribute("data-kind") for h in fixed] == ["clear", "fenced", "override"]
    assert "dave" in fixed[-1].text and "never pushed" in fixed[-1].text
    assert text_of(browser, "status") == "1 version (1 override), 1 clear, 1 fenced (never applied), in log order"
    assert severe_console_messages(browser) == []


def test_page_shows_hostile_data_as_text(server: str, browser: Any) -> None:
    browser.get(server + "/#/dags/xss/runs/r/tasks/t/-1")
    browser.execute_script("sessionStorage.setItem('xcombus.apiToken', arguments[0])", TOKEN)
    browser.refresh()
    row = rows(browser, "xcom-row", 1)[0]
    assert HOSTILE_KEY in row.text and HOSTILE_VALUE in row.text
    row.click()
    wait_for(browser, lambda d: HOSTILE_VALUE in text_of(d, "full-value"), "the full hostile value")
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.find_elements("css selector", "main img, main script") == []
    assert severe_console_messages(browser) == []


def test_page_reports_a_wrong_token_and_missing_data_clearly(server: str, browser: Any) -> None:
    browser.get(server + "/")
    browser.execute_script("sessionStorage.setItem('xcombus.apiToken', 'wrong')")
    browser.get(server + "/#/dags/nope/runs/r/tasks/t/-1")
    browser.refresh()
    wait_for(browser, lambda d: "the bearer token is not valid" in text_of(d, "error"), "the 401")
    browser.execute_script("sessionStorage.setItem('xcombus.apiToken', arguments[0])", TOKEN)
    browser.get(server + "/#/dags/etl/runs/r/tasks/t/-1/xcoms/never")
    browser.refresh()
    wait_for(browser, lambda d: "404" in text_of(d, "error") and "'never'" in text_of(d, "error"), "the 404")
