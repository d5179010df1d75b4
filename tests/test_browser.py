"""End to end in a real browser: `vidsearch serve` in a subprocess, driven by Playwright in Debian's chromium."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIDSEARCH = Path(sys.executable).with_name("vidsearch")
# Chromium's background services try to reach the network, which this machine does not have.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server(tiny_store_dir):
    """A real `vidsearch serve` on a free loopback port; yields its base URL.

    The store is named by a relative path from its parent directory, as people type it."""
    proc = subprocess.Popen([str(VIDSEARCH), "serve", "--store", tiny_store_dir.name, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tiny_store_dir.parent)
    try:
        url = _wait_for_url(proc, timeout=120)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_for_url(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError("vidsearch serve exited early:\n" + "".join(seen))
            continue
        seen.append(line)
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if match:
            return match.group(1)
    raise RuntimeError("vidsearch serve printed no URL:\n" + "".join(seen))


def _api(url: str, path: str, **params) -> dict:
    with urllib.request.urlopen(url + path.lstrip("/") + "?" + urllib.parse.urlencode(params), timeout=60) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed; `make test` installs it with apt-get")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_search_open_and_play_from_clip_start(server, browser, tiny_store_dir, tmp_path):
    query = "a circle moves to the left"
    # Pick a hit that starts after 0 s, so that the player has to seek for the check to pass.
    hits = _api(server, "/api/search", q=query, k=50)["results"]
    assert hits, "the store answered no results"
    target = next((h for h in hits if h["start"] > 0), hits[0])

    page = browser.new_page()
    failed = []
    page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
    page.goto(server)
    page.fill("input[name=q]", query)
    page.keyboard.press("Enter")
    page.wait_for_selector("a.result")
    cards = page.locator("a.result")
    assert cards.count() >= 1
    assert_images_load(page)
    page.screenshot(path=str(tmp_path / "results.png"), full_page=True)

    card = page.locator(f"a.result[data-clip-id='{target['clip_id']}']")
    if card.count() == 0:  # not on the first page of the UI's own ranking: open it directly
        page.goto(server + f"watch/{target['clip_id']}")
    else:
        card.first.click()
    page.wait_for_selector("#player")
    wait_until(page, "document.getElementById('player').readyState >= 1")
    wait_until(page, f"document.getElementById('player').currentTime >= {target['start']}")
    current = page.evaluate("document.getElementById('player').currentTime")
    assert current >= target["start"]
    assert current < target["end"] + 1.0
    assert_images_load(page)
    page.screenshot(path=str(tmp_path / "watch.png"), full_page=True)
    assert (tmp_path / "watch.png").stat().st_size > 1000
    assert failed == [], failed
    page.close()


def wait_until(page, expression: str, timeout: float = 30.0) -> None:
    """Poll `expression` from here until it is true. Playwright's wait_for_function evaluates a string predicate
    with eval inside the page whenever its first check is false, which the app's Content-Security-Policy (no
    'unsafe-eval') refuses; page.evaluate is not subject to the page's policy."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:.0f} s: {expression}")
        page.wait_for_timeout(100)


def assert_images_load(page) -> None:
    """Every image of the page loads (lazy ones are asked for now): a broken thumbnail fails the test."""
    page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    wait_until(page, "Array.from(document.images).every(i => i.complete)")
    broken = page.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.src)")
    assert broken == [], broken
