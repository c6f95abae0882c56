"""The web page in a real browser: Debian's chromium driven by Playwright.

Nothing is downloaded: Playwright launches /usr/bin/chromium (``scripts/setup.sh``
installs it with apt-get). The test skips only where chromium is not installed and
cannot be (not under CI, where it must be there). It saves a screenshot; with
``COVERHUNTER_SCREENSHOT=docs/serve.png`` it writes the one docs/service.md shows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from coverhunter.serve import ServeConfig, create_app
from coverhunter.serve.engine import Engine

from .serve_fixtures import ROOT, SR, encode, live_server, shared_catalogue, tune

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        msg = "Debian's chromium is not installed (scripts/setup.sh installs it with apt-get)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def test_page_identifies_an_uploaded_recording(tmp_path_factory, tmp_path):
    exe = chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    _, index_dir = shared_catalogue(tmp_path_factory)
    query = tmp_path / "live take of work 3.m4a"
    encode(query, tune(3, 40.0, take=2), SR, "aac")
    engine = Engine(ServeConfig(index=index_dir, device="cpu"))
    shot = Path(os.environ.get("COVERHUNTER_SCREENSHOT") or tmp_path / "serve.png")
    if not shot.is_absolute():
        shot = ROOT / shot
    try:
        with live_server(create_app(engine.cfg, engine)) as url, sync_api.sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=exe,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1100, "height": 900},
            )
            try:
                page = browser.new_page()
                page.goto(url + "/")
                page.wait_for_function(
                    "document.getElementById('catalogue').textContent.includes('5 recordings')"
                )
                page.set_input_files("#file", str(query))
                page.wait_for_selector("#results tbody tr", timeout=60_000)
                rows = page.locator("#results tbody tr")
                assert rows.count() == 5
                first = rows.nth(0).locator("td").all_inner_texts()
                assert first[1] == "work3" and first[2] == "work3.wav"
                assert 0 < float(first[3]) <= 1.0  # score
                assert 0 < float(first[4]) <= 1.0  # its chroma alignment (re-ranked)
                assert "query" in first[9] and "catalogue" in first[9]  # both players offered
                assert "Done: 5 works ranked" in page.inner_text("#status")
                assert page.inner_text("#qname") == query.name
                assert page.inner_text("#verdict") == "match"  # calibrated catalogue
                assert page.inner_text("#search") == "best 5 re-ranked by chroma alignment"
                # the alignment picture was drawn (not a blank canvas)
                lit = page.evaluate("""() => { const c = document.getElementById('alignment');
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i+1] + d[i+2] < 600) n++;
                    return n; }""")
                assert lit > 1000
                # the catalogue player loads the recording from its offset
                rows.nth(0).locator("button", has_text="catalogue").click()
                page.wait_for_function("document.getElementById('player').readyState >= 1")
                assert "work3.wav from" in page.inner_text("#playing")
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot), full_page=True)
                # a bad file shows the server's message
                bad = tmp_path / "notes.mp3"
                bad.write_bytes(b"not audio" * 100)
                page.set_input_files("#file", str(bad))
                page.wait_for_selector("#status.error")
                assert "notes.mp3: cannot decode" in page.inner_text("#status")
            finally:
                browser.close()
    finally:
        engine.close()
    assert shot.stat().st_size > 10_000
