"""`inertia ui` in a real headless Chromium: one full side-by-side run on the test-bed default.

Chromium is Debian's package (`scripts/setup.sh --test` installs it as root); Playwright drives it
(its own browser downloads are never used). The app runs in this process on a free localhost port.
With INERTIA_UI_SCREENSHOT=PATH the page after the run is saved there (docs/ui.png).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="inertia[ui] is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (inertia[test])")

#: Chromium without anything that reaches the network or waits on it, in a fresh profile.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
#: Generous: the page waits for two test-bed runs on a busy CPU; no assertion is on time.
WAIT_MS = 600_000
VIDEOS = "['#video-baseline video', '#video-intervention video'].map(s => document.querySelector(s))"


def chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    pytest.skip("no Chromium: apt-get install -y chromium (scripts/setup.sh --test installs it when run as root)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_url(tmp_path):
    from inertia.ui.app import launch

    app = launch("127.0.0.1", free_port(), tmp_path / "outputs", block=False)
    yield app.local_url, tmp_path / "outputs"
    app.close()


def test_side_by_side_run_plays_both_videos_and_shows_metrics_and_schedule(app_url, tmp_path):
    url, out = app_url
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), headless=True,
                                             args=CHROMIUM_ARGS)  # a fresh temporary profile
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.locator("#steps textarea").fill("2")
        choice = page.locator("#interventions input")
        choice.click()
        choice.fill("relax")
        page.keyboard.press("Enter")
        page.locator("#params-relax").first.wait_for(state="visible")
        sync_api.expect(page.locator("#check")).to_contain_text(
            f"ok: inertia run --backbone testbed --seed 0 --steps 2 --out {out} --intervention relax --metric physics",
            timeout=60_000)
        page.locator("#run").click()
        page.wait_for_function(f"{VIDEOS}.every(v => v && v.readyState >= 2)", timeout=WAIT_MS)
        page.evaluate(f"Promise.all({VIDEOS}.map(v => v.play()))")
        page.wait_for_function(f"{VIDEOS}.every(v => v.currentTime > 0)", timeout=WAIT_MS)
        videos = page.evaluate(f"{VIDEOS}.map(v => [v.duration, v.videoWidth, v.error])")
        metrics = page.locator("#metrics").inner_text()
        plot = page.evaluate("(() => { const i = document.querySelector('#schedule img'); "
                             "return i && i.complete ? i.naturalWidth : 0; })()")
        status = page.locator("#status").inner_text()
        if os.environ.get("INERTIA_UI_SCREENSHOT"):
            page.screenshot(path=os.environ["INERTIA_UI_SCREENSHOT"], full_page=True)
        browser.close()
    assert all(duration > 0 and width == 256 and error is None for duration, width, error in videos), videos
    assert "physics.static_death" in metrics and "physics.velocity_error" in metrics
    assert plot > 0
    runs = sorted(path.parent.name for path in Path(out).glob("*/record.json"))
    assert len(runs) == 2 and all(name in status for name in runs)
