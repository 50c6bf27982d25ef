"""Headless Chromium for tests: Debian's ``chromium`` (installed with apt-get
when missing, as CI runs as root) driven by Playwright's sync API, with every
request that is not to 127.0.0.1 aborted.

Import the fixtures into a conftest (``from tierscope.testing.browser import
browser, chromium, page``). ``browser`` is module-scoped on purpose: Playwright's
sync API keeps an event loop running while it is open, which the asyncio tests
of other modules cannot run beside — and a module using it must set up anything
that calls ``asyncio.run`` before it asks for ``browser`` or ``page``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The flags a root, offline, headless Chromium needs: no sandbox (root), and none
# of its background calls to the internet (this machine has none).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (CI runs as root)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("the browser tests need Debian's chromium: run `apt-get install -y chromium` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True, timeout=600)
    install = subprocess.run(
        ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", "chromium"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    found = shutil.which("chromium")
    if install.returncode != 0 or not found:
        pytest.fail(f"apt-get install chromium failed:\n{install.stdout[-2000:]}{install.stderr[-2000:]}")
    return found


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """Module-scoped: Playwright's sync API keeps an event loop running while it
    is open, which the asyncio tests of other modules cannot run beside."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


# Every request not to 127.0.0.1 is aborted. A pattern, not a Python function: the
# browser side matches it, so loopback requests never wait for this process (a
# function would be called here for each request, adding its latency to every
# timing the tests measure, and stalling requests while the test sleeps).
NOT_LOOPBACK = re.compile(r"^(?!(https?|wss?)://127\.0\.0\.1[:/]).*")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context whose requests may go to 127.0.0.1 only."""
    context = browser.new_context()
    context.route(NOT_LOOPBACK, lambda route: route.abort())
    errors: list[str] = []
    opened = context.new_page()
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.page_errors = errors
    yield opened
    context.close()


def screenshot(opened: Any, path: Path) -> Path:
    """Save the whole page as a PNG test artifact, failing when it is (nearly)
    blank: a page that renders nothing must not pass as a picture of one."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    opened.screenshot(path=str(path), full_page=True)
    with Image.open(path) as image:
        grey = image.convert("L")
        dark = sum(grey.histogram()[:200])
        assert dark > 0.005 * grey.width * grey.height, f"{path.name}: the page renders (nearly) blank"
    return path
