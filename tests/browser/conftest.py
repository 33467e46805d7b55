"""A real server per mode (bench/stack.py) and Debian's Chromium driven by Playwright."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import start_stack

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "test-artifacts" / "browser"


@pytest.fixture(scope="module", params=["embedded", "services"])
def stack_server(request, tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is needed (apt-get install chromium; .ci/run does it)")
    stack = start_stack(request.param, tmp_path_factory.mktemp(f"browser-{request.param}"),
                        name="papertrade_browser")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture
def shots(stack_server):
    """Saves numbered screenshots of each step under test-artifacts/browser/<mode>/."""
    folder = SHOTS / stack_server.mode
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)

    def shot(page, name: str) -> None:
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    return shot
