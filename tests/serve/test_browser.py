"""End to end in headless Chromium: the page loads, a chosen file is analysed, and the live view shows
results streamed from Chromium's fake microphone (playing a generated speech-like WAV)."""

import os
import shutil

import pytest
from .conftest import LABELS, voice, wav_bytes

CHROMIUM = os.environ.get("PERSEMO_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PERSEMO_CHROMEDRIVER", "/usr/bin/chromedriver")

pytestmark = pytest.mark.slow


def _find(path: str, name: str) -> str | None:
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else shutil.which(name)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    pytest.importorskip("selenium", reason="selenium is not installed (dev extra)")
    chromium, driver_path = _find(CHROMIUM, "chromium"), _find(CHROMEDRIVER, "chromedriver")
    if not chromium or not driver_path:
        pytest.skip(f"headless browser tests need chromium and chromedriver (looked for {CHROMIUM}, "
                    f"{CHROMEDRIVER} and on PATH)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium-manager look for downloads
    root = tmp_path_factory.mktemp("browser")
    mic = root / "speech.wav"
    mic.write_bytes(wav_bytes(voice(8.0, 48000, seed=3), 48000))
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={root / 'profile'}", "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={mic}",
                "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, cond, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(cond)


def by_id(driver, id_: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, id_)


def severe_console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_page_analyses_a_chosen_file(browser, live_server, tmp_path):
    browser.get(live_server.url + "/")
    assert browser.find_element("css selector", "html").get_attribute("dir") == "rtl"
    wait_for(browser, lambda d: "model" in by_id(d, "model-info").text)
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(voice(3.0)))
    by_id(browser, "file-input").send_keys(str(clip))
    wait_for(browser, lambda d: by_id(d, "result").get_attribute("data-state") == "done")
    top = by_id(browser, "top-emotion")
    assert top.get_attribute("data-label") in LABELS
    assert top.text.strip()
    bars = browser.find_elements("css selector", "#result-bars .track")
    assert [b.get_attribute("data-label") for b in bars] == LABELS
    assert "clip.wav" in by_id(browser, "result-meta").text
    assert not severe_console_errors(browser)


def test_live_view_shows_streamed_results(browser, live_server):
    browser.get(live_server.url + "/")
    wait_for(browser, lambda d: "model" in by_id(d, "model-info").text)
    by_id(browser, "record-button").click()
    # results arrive once a second; the fake microphone plays speech, so an emotion must show
    wait_for(browser, lambda d: int(by_id(d, "live-result").get_attribute("data-count")) >= 3, 45)
    wait_for(browser, lambda d: by_id(d, "live-emotion").get_attribute("data-label") in LABELS, 20)
    assert by_id(browser, "live-status").get_attribute("data-state") in ("speech", "silence")
    widths = [b.find_element("css selector", ".fill").value_of_css_property("width")
              for b in browser.find_elements("css selector", "#live-bars .track")]
    assert len(widths) == len(LABELS) and any(w not in ("0px", "0") for w in widths)
    by_id(browser, "record-button").click()
    wait_for(browser, lambda d: by_id(d, "live-status").get_attribute("data-state") == "idle", 10)
    assert not severe_console_errors(browser)
