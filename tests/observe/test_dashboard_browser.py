"""The dashboard in real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, via Selenium).

A 3-peer mesh with the dashboard on: jobs submitted move the page's job counter, peer list and task
stream without a reload; a killed peer shows as lost within the failure detector's timeout. A
screenshot is saved as a test artifact (``$WARPMESH_ARTIFACTS`` or ``test-artifacts/``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.observe.mesh import Mesh
from warpmesh.liveness.core import HeartbeatConfig

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _artifacts() -> Path:
    path = Path(os.environ.get("WARPMESH_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser() -> Any:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them when it runs as root)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _peers(driver: Any) -> dict[str, str]:
    # Read in one script: the page re-renders its tables twice a second (elements go stale).
    return dict(driver.execute_script(
        "return [...document.querySelectorAll('#peers tbody tr')].map(r => [r.dataset.peer, r.dataset.state])"))


def _stream(driver: Any) -> list[dict[str, str]]:
    return list(driver.execute_script(
        "return [...document.querySelectorAll('#stream tbody tr')].map(r => ({job: r.dataset.job, "
        "peer: r.cells[3].textContent}))"))


def _text(driver: Any, element: str) -> str:
    return str(driver.execute_script(f"return document.getElementById('{element}').textContent"))


def test_the_page_follows_the_mesh_live_and_marks_a_killed_peer_lost(browser: Any, tmp_path: Path) -> None:
    with Mesh(3) as mesh:
        browser.get(mesh.http)
        _until("the page to go live", lambda: _text(browser, "conn") == "live", 15)
        _until("three live peers", lambda: [_peers(browser).get(f"p{i}") for i in range(3)] == ["live"] * 3, 15)
        loaded = browser.execute_script("return performance.timeOrigin")
        assert _text(browser, "jobs-finished") == "0"

        out = mesh.submit([{"op": "demo.collatz", "args": [i]} for i in range(1, 151)], tmp_path)
        assert out.returncode == 0, out.stderr
        _until("the job counter at 150", lambda: _text(browser, "jobs-finished") == "150", 15)
        stream = _until("the task stream", lambda: _stream(browser), 10)
        assert stream[0]["job"].startswith("demo.collatz-")
        ran = {r["peer"] for r in stream}
        assert ran <= {"p0", "p1", "p2"} and ran

        out = mesh.submit([{"op": "demo.collatz", "args": [i]} for i in range(151, 201)], tmp_path)
        assert out.returncode == 0, out.stderr
        _until("the job counter at 200", lambda: _text(browser, "jobs-finished") == "200", 15)
        total = _until("200 runs in the stream", lambda: _text(browser, "stream-total").startswith("(200 runs")
                       and _text(browser, "stream-total"), 10)
        assert "200 kept" in total, total

        mesh.kill(2)
        killed = time.monotonic()
        timeout = HeartbeatConfig().timeout
        _until("p2 marked lost", lambda: _peers(browser).get("p2") == "lost", timeout + 1.5)
        took = time.monotonic() - killed
        assert _peers(browser)["p0"] == "live" and _peers(browser)["p1"] == "live"
        # Everything above happened in one page load: no reload.
        assert browser.execute_script("return performance.timeOrigin") == loaded
        shot = _artifacts() / "dashboard.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print(f"p2 marked lost {took:.2f} s after the kill (failure detector timeout {timeout} s)")
