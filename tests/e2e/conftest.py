"""A real server (werkzeug, threaded, 127.0.0.1, free port) and a real headless Chromium for end-to-end tests.

Playwright drives the system's Debian Chromium (/usr/bin/chromium); it never downloads a browser.
Screenshots go to $ACAI_SCREENSHOT_DIR when set (e.g. docs/screenshots), else to a temp folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ACAI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")


@pytest.fixture(scope="session")
def e2e_weights(tmp_path_factory, weights_dir):
    """The tiny model's weights with what a shipped model's evaluation leaves beside them, for the page
    to say how far to trust it."""
    import shutil

    folder = tmp_path_factory.mktemp("e2e-weights")
    for path in weights_dir.iterdir():
        shutil.copy(path, folder / path.name)
    (folder / "accuracy.json").write_text(json.dumps({"systems": 198, "tedn": 58.2, "pitch_exact": 17.6,
                                                      "key_right": 59.1}))
    return folder


@pytest.fixture(scope="session")
def rendered_page(tmp_path_factory):
    """(path of an engraved page PNG, its true system boxes) from the data engineer's page renderer."""
    from acai_omr.data.pages import render_page
    from acai_omr.paths import shared_dir

    if not (shared_dir() / "corpora").is_dir():
        pytest.skip(f"{shared_dir() / 'corpora'} not found: the shared data folder is missing (set ACAI_SHARED)")
    image, boxes = render_page(seed=3, page=0, staff_space_px=10)
    path = tmp_path_factory.mktemp("e2e-page") / "page.png"
    image.save(path)
    return path, boxes


@contextlib.contextmanager
def serving(work_dir: Path, weights_dir: Path, **web):
    """The app on a real threaded HTTP server on 127.0.0.1 (a free port), in a background thread; `web`
    overrides WebConfig fields."""
    from werkzeug.serving import make_server

    from acai_omr import create_app

    app = create_app({"WEB": dict(dict(work_dir=str(work_dir), weights_dir=str(weights_dir), decode={"max_tokens": 40},
                                       torch_threads=1, render=True), **web)})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        app.extensions["acai_omr"].runner.shutdown()


@pytest.fixture(scope="session")
def server_url(tmp_path_factory, e2e_weights):
    with serving(tmp_path_factory.mktemp("e2e-work"), e2e_weights) as url:
        yield url


@pytest.fixture()
def server_without_weights_url(tmp_path):
    with serving(tmp_path / "work", tmp_path / "no-weights") as url:
        yield url


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    yield tab
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    folder = os.environ.get("ACAI_SCREENSHOT_DIR")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture()
def shoot(screenshot_dir):
    """shoot(page_or_locator, name, full_page=False): a small palette PNG of what the browser shows."""
    from PIL import Image

    def take(target, name: str, full_page: bool = False) -> Path:
        """target: a Page (the viewport, or the whole page) or a Locator (just that element)."""
        raw = target.screenshot(full_page=full_page) if hasattr(target, "goto") else target.screenshot()
        image = Image.open(io.BytesIO(raw)).convert("RGB")
        if image.width > 1000:
            image = image.resize((1000, round(image.height * 1000 / image.width)), Image.LANCZOS)
        path = screenshot_dir / f"{name}.png"
        image.quantize(colors=64).save(path, optimize=True)
        return path

    return take

