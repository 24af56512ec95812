"""The web console (frontend/) in a real browser, through a real nginx, against the stack.

Headless Chromium (Selenium, the system chromedriver) opens the console that
nginx serves with the frontend image's security headers and that reaches the
API through nginx's ``/api/``, as in production. It logs in, is told what is
wrong with a bad request, sees the cost estimate before it submits, follows a
job to "completed" without reloading the page, fetches the MP4 through the
player's link (checked with ffprobe), cancels a longer job, and is sent back
to the login form by a 401. A screenshot of the job list is kept in
``$TEST_ARTIFACTS_DIR`` (default: pytest's temporary directory).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from ytvideo_console import ConsoleServer, missing_browser, start_browser
from ytvideo_services import ADMIN_PASSWORD, ADMIN_USERNAME, Stack, ffprobe

RENDER_TIMEOUT = 240  # a 1 s 360p video renders in seconds; the CI host may be busy


@pytest.fixture(scope="module")
def console(stack: Stack) -> Iterator[ConsoleServer]:
    server = ConsoleServer(stack.port)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, downloads: Path) -> Iterator[Any]:
    why = missing_browser()
    if why:
        pytest.fail(why)  # not a skip: scripts/bootstrap.sh installs the browser
    driver = start_browser(tmp_path_factory.mktemp("chromium"), downloads)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: Any, console: ConsoleServer, stack: Stack) -> Iterator[Any]:
    """The console, freshly loaded and logged out; on failure, the browser's console log."""
    browser.get(f"{console.url}/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{console.url}/")
    yield browser
    for entry in browser.get_log("browser"):
        print("browser:", entry.get("level"), entry.get("message"))


def until(driver: Any, what: str, check: Callable[[Any], Any], timeout: float = 20) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(
            driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
        ).until(check)
    except TimeoutException:
        texts = {
            i: driver.find_element("id", i).text
            for i in ("login-error", "form-error", "estimate", "jobs-error", "jobs-state")
        }
        raise AssertionError(f"{what} not seen within {timeout} s; page says {texts}") from None


def text_of(driver: Any, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def log_in(driver: Any, password: str = ADMIN_PASSWORD) -> None:
    driver.find_element("id", "username").clear()
    driver.find_element("id", "username").send_keys(ADMIN_USERNAME)
    driver.find_element("id", "password").send_keys(password)
    driver.find_element("id", "login-submit").click()


def fill(driver: Any, element_id: str, value: str) -> None:
    field = driver.find_element("id", element_id)
    field.clear()
    field.send_keys(value)


def job_status(driver: Any, job_id: str) -> str:
    return driver.find_element("css selector", f'tr[data-id="{job_id}"] td.status').text


def submitted_job(driver: Any) -> str:
    result = until(
        driver,
        "the submitted job",
        lambda d: re.search(r"Job (\S+) is queued", text_of(d, "form-result")),
    )
    return result.group(1)


def artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TEST_ARTIFACTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def downloaded(folder: Path, name: str) -> Path | None:
    """The finished download (Chromium writes ``name.crdownload`` until it is)."""
    path = folder / name
    partial = folder / f"{name}.crdownload"
    return path if path.is_file() and not partial.exists() and path.stat().st_size else None


def test_console_renders_plays_and_cancels_a_video(
    page: Any, console: ConsoleServer, stack: Stack, downloads: Path, tmp_path: Path
) -> None:
    driver = page
    started = time.monotonic()
    assert driver.find_element("id", "console").is_displayed() is False
    log_in(driver, "not-the-password")
    until(
        driver,
        "the wrong-password message",
        lambda d: "wrong username or password" in text_of(d, "login-error"),
    )
    fill(driver, "password", "")
    log_in(driver)
    until(
        driver,
        "the console after logging in",
        lambda d: d.find_element("id", "console").is_displayed(),
    )
    assert driver.find_element("id", "login").is_displayed() is False
    assert text_of(driver, "session-user") == ADMIN_USERNAME

    # A bad request: the API's 422, field by field, from the dry run; nothing submitted.
    from selenium.webdriver.support.ui import Select

    jobs_before = len(stack.client.get("/api/videos").json()["videos"])
    fill(driver, "title", "Console test")
    fill(driver, "script", "Hello from the web console.")
    Select(driver.find_element("id", "resolution")).select_by_value("360p")
    fill(driver, "duration", "0")
    until(
        driver, "the duration's validation error", lambda d: "duration:" in text_of(d, "form-error")
    )
    assert driver.find_element("id", "estimate").get_attribute("data-state") == "invalid"
    assert driver.find_element("id", "duration").get_attribute("aria-invalid") == "true"
    assert len(stack.client.get("/api/videos").json()["videos"]) == jobs_before  # a dry run

    # A good one, with an image from a file input: the estimate comes first.
    image = tmp_path / "card.png"
    Image.new("RGB", (320, 180), (200, 60, 30)).save(image)
    driver.find_element("id", "images").send_keys(str(image))
    fill(driver, "duration", "1")
    until(
        driver,
        "the cost estimate",
        lambda d: d.find_element("id", "estimate").get_attribute("data-state") == "ok",
    )
    estimate = text_of(driver, "estimate")
    assert re.match(r"^\$\d+\.\d{4} \(narration \$0\.0000 by espeak", estimate), estimate
    assert text_of(driver, "form-error") == ""
    assert driver.find_element("id", "duration").get_attribute("aria-invalid") is None
    driver.find_element("id", "submit").click()
    job_id = submitted_job(driver)
    job = stack.client.get(f"/api/videos/{job_id}").json()
    assert (job["title"], job["resolution"], job["images"]) == ("Console test", "640x360", 1)

    # Live status in the list, without reloading the page.
    until(
        driver,
        "the job in the list",
        lambda d: d.find_elements("css selector", f'tr[data-id="{job_id}"]'),
    )
    until(driver, "job completed", lambda d: job_status(d, job_id) == "completed", RENDER_TIMEOUT)
    row = f'tr[data-id="{job_id}"]'
    cost = driver.find_element("css selector", f"{row} td.cost").text
    assert re.fullmatch(r"\$\d+\.\d{4}", cost), cost  # the actual cost, no longer the estimate
    assert not driver.find_elements("css selector", f"{row} button.cancel")

    # Play and download: the file is fetched with the token into a blob: URL.
    driver.find_element("css selector", f"{row} button.open").click()
    until(
        driver,
        "the player's download link",
        lambda d: d.find_element("id", "player-download").get_attribute("href").startswith("blob:"),
    )
    link = driver.find_element("id", "player-download")
    assert link.get_attribute("download") == f"{job_id}.mp4"
    link.click()  # a real download, into the browser's download folder
    mp4 = until(driver, "the downloaded MP4", lambda _: downloaded(downloads, f"{job_id}.mp4"))
    assert mp4.read_bytes()[4:8] == b"ftyp"
    probe = ffprobe(mp4)
    video = [s for s in probe["streams"] if s["codec_type"] == "video"]
    assert len(video) == 1, probe["streams"]
    assert video[0]["codec_name"] == "h264", video
    assert (video[0]["width"], video[0]["height"]) == (640, 360)
    assert 0.5 < float(probe["format"]["duration"]) < 3, probe["format"]
    # The <video> element loads it under the console's CSP (media-src must allow blob:).
    until(
        driver,
        "the player's metadata (the frontend image's CSP must allow blob: media: "
        "media-src 'self' blob: in molecule/images/stack/frontend/nginx.conf)",
        lambda d: (
            d.execute_script("return document.getElementById('player-video').readyState") >= 1
        ),
    )
    assert driver.execute_script("return document.getElementById('player-video').duration") > 0.5

    # A longer job, cancelled from its row while queued or running.
    fill(driver, "title", "Console cancel")
    fill(driver, "duration", "120")
    until(
        driver,
        "the second estimate",
        lambda d: d.find_element("id", "estimate").get_attribute("data-state") == "ok",
    )
    driver.find_element("id", "submit").click()
    second = submitted_job(driver)
    cancel = until(
        driver,
        "the cancel button",
        lambda d: d.find_element("css selector", f'tr[data-id="{second}"] button.cancel'),
    )
    cancel.click()
    until(driver, "job cancelled", lambda d: job_status(d, second) == "cancelled")
    assert not driver.find_elements("css selector", f'tr[data-id="{second}"] button')
    assert stack.client.get(f"/api/videos/{second}").json()["status"] == "cancelled"
    assert stack.client.post(f"/api/videos/{second}/cancel").status_code == 409
    until(driver, "polling to stop", lambda d: text_of(d, "jobs-state").startswith("Updated"))

    shot = artifacts_dir(tmp_path) / "console-jobs.png"
    driver.find_element("id", "jobs").screenshot(str(shot))
    print(f"console screenshot: {shot} ({time.monotonic() - started:.1f} s)")
    assert shot.stat().st_size > 1000
    assert "Authorization" not in console.access_log.read_text()  # nginx logs no token


def test_a_401_returns_to_the_login_form(page: Any) -> None:
    driver = page
    log_in(driver)
    until(driver, "the console", lambda d: d.find_element("id", "console").is_displayed())
    driver.execute_script("sessionStorage.setItem('ytempire.token', 'forged.token.value')")
    driver.find_element("id", "refresh").click()
    until(driver, "the login form", lambda d: d.find_element("id", "login").is_displayed())
    assert "session has ended" in text_of(driver, "login-error")
    assert driver.find_element("id", "console").is_displayed() is False
    assert driver.execute_script("return sessionStorage.getItem('ytempire.token')") is None

    log_in(driver)
    until(driver, "the console again", lambda d: d.find_element("id", "console").is_displayed())
    driver.find_element("id", "logout").click()
    until(
        driver,
        "the login form after logging out",
        lambda d: d.find_element("id", "login").is_displayed(),
    )
    assert "logged out" in text_of(driver, "login-error")
    assert driver.execute_script("return sessionStorage.getItem('ytempire.token')") is None
