"""End to end in a real browser: `mmrface serve` (subprocess, 127.0.0.1, tiny random-weight model)
driven by headless Chromium (Debian's /usr/bin/chromium through Playwright; no browser download).

Run with `pytest -m browser tests/test_browser.py` after `.ci/browser-deps.sh`; it skips with a
reason when Chromium or Playwright is missing. The screenshot is saved in the test's tmp folder.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("MMRFACE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]


def _requirements() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (install it with .ci/browser-deps.sh)")
    missing = [m for m in ("playwright", "gradio", "uvicorn") if importlib.util.find_spec(m) is None]
    if "playwright" in missing:
        pytest.skip("the Playwright Python package is missing (install it with .ci/browser-deps.sh)")
    if missing:
        pytest.skip(f"the web extra is missing ({', '.join(missing)}); pip install -r requirements-lock.txt")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mmrface serve` in a subprocess; yields its base URL."""
    _requirements()
    from mmrface.config import load_config
    from mmrface.models import build_model
    from mmrface.weights import save_weights

    tmp = tmp_path_factory.mktemp("serve")
    server_tmp = tmp_path_factory.mktemp("server_tmpdir")  # the server's TMPDIR: empty again after SIGTERM
    cfg = load_config("tiny")
    weights = tmp / "tiny.safetensors"
    save_weights(weights, build_model(cfg.model).state_dict(), cfg.to_dict())
    port = _free_port()
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mmrface", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--weights", str(weights), "--device", "cpu", "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                            env={**os.environ, "TMPDIR": str(server_tmp), "GRADIO_TEMP_DIR": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/v1/health", timeout=5) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("mmrface serve did not come up:\n" + (tmp / "serve.log").read_text()[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    # SIGTERM is a clean stop that removes the server's temporary folder (results, users' uploads)
    assert proc.returncode == 0, (tmp / "serve.log").read_text()[-3000:]
    assert sorted(p.name for p in server_tmp.iterdir()) == []


@pytest.fixture
def photos(tmp_path) -> dict[str, Path]:
    """The degraded astronaut photo (512 -> 128 -> 256 px, JPEG q40) and a file that is not an image."""
    bgr = cv2.imread(str(ROOT / "assets/photos/astronaut.png"))
    lq = cv2.resize(cv2.resize(bgr, (128, 128), interpolation=cv2.INTER_AREA), (256, 256),
                    interpolation=cv2.INTER_CUBIC)
    good = tmp_path / "astronaut_degraded.jpg"
    assert cv2.imwrite(str(good), lq, [cv2.IMWRITE_JPEG_QUALITY, 40])
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo\n")
    return {"good": good, "bad": bad}


def _natural_size(page, selector: str) -> tuple[int, int]:
    return tuple(page.evaluate(f"() => {{ const i = document.querySelector('{selector}');"
                               f" return [i.naturalWidth, i.naturalHeight]; }}"))


def test_upload_restore_and_download_in_chromium(server, photos, tmp_path):
    from playwright.sync_api import sync_playwright

    external = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1000})
        try:
            page = context.new_page()
            page.on("request", lambda r: external.append(r.url) if not r.url.startswith(
                (server, "data:", "blob:")) else None)
            page.set_default_timeout(60_000)
            page.goto(server + "/", wait_until="load")
            page.locator("#restore").wait_for()

            # a file that is not an image: a clear message, no result
            page.locator("#photos input[type=file]").set_input_files(str(photos["bad"]))
            page.locator('#photos [aria-label="notes.jpg"]').wait_for()
            page.locator("#restore").click()
            page.locator("#status").get_by_text("not an image").wait_for()
            page.locator("#photos").get_by_role("button", name="Clear").first.click()
            page.locator('#photos [aria-label="notes.jpg"]').wait_for(state="detached")

            # the degraded astronaut photo: before/after, the face, the download
            page.locator("#photos input[type=file]").set_input_files(str(photos["good"]))
            page.locator('#photos [aria-label="astronaut_degraded.jpg"]').wait_for()
            page.locator("#restore").click()
            page.locator("#status").get_by_text("1 face(s) restored").wait_for()
            assert "error" not in page.locator("#status").inner_text()  # the bad file is gone
            page.wait_for_function("() => { const i = document.querySelector('#after img');"
                                   " return i && i.complete && i.naturalWidth > 0; }")
            assert _natural_size(page, "#after img") == (512, 512)  # 256 px x upscale 2
            assert _natural_size(page, "#before img") == (256, 256)
            assert page.locator("#faces img").count() == 2  # the face's input and restored crops
            link = page.locator("#download a[download]").first
            assert link.get_attribute("download") == "astronaut_degraded_restored.png"
            response = context.request.get(link.get_attribute("href"))
            assert response.ok
            downloaded = np.asarray(Image.open(io.BytesIO(response.body())))
            assert downloaded.shape == (512, 512, 3)
            page.wait_for_timeout(500)  # let the images finish painting
            shot = tmp_path / "browser_screenshot.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    assert not external, f"the page fetched from other hosts: {external[:5]}"
