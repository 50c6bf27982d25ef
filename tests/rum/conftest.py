"""Fixtures of the RUM tests: a collector that processes quickly, the RUM CLI,
Debian's Chromium driven by Playwright (installed when missing), Google's
web-vitals library from npm (installed once into a cache directory), and the
instrumented test app."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tierscope.testing.collector import CollectorProcess, tierscope_command

FAST = {
    "TIERSCOPE_SETTLE_DELAY": "1s",
    "TIERSCOPE_PROCESSING_INTERVAL": "200ms",
    "TIERSCOPE_RUM_JOIN_WAIT": "30s",
    "TIERSCOPE_RUM_ROLLUP_WAIT": "1s",
}
WEB_VITALS = "web-vitals@5"
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


def tierscope(collector: CollectorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the tierscope command against the collector's store."""
    env = {**os.environ, "TIERSCOPE_DATABASE_URL": collector.database_url or ""}
    result = subprocess.run(
        [*tierscope_command(), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def api(collector: CollectorProcess, path: str, token: str | None = None, **params: Any) -> httpx.Response:
    token = token or collector.credentials()["api_token"]
    return httpx.get(f"{collector.url}{path}", params=params, headers={"Authorization": f"Bearer {token}"})


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
        ["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, text=True, timeout=1200
    )
    found = shutil.which("chromium")
    if install.returncode != 0 or not found:
        pytest.fail(f"apt-get install chromium failed:\n{install.stdout[-2000:]}{install.stderr[-2000:]}")
    return found


@pytest.fixture(scope="session")
def web_vitals_script() -> Path:
    """Google's web-vitals (its IIFE build), installed from npm once into a cache directory."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tierscope-tests" / "web-vitals"
    script = cache / "node_modules" / "web-vitals" / "dist" / "web-vitals.iife.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("the Web Vitals comparison needs npm (Debian package npm) to install web-vitals")
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", WEB_VITALS],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return script


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


@pytest.fixture(scope="module")
def rum_collector(collector_factory: Callable[..., CollectorProcess]) -> Iterator[CollectorProcess]:
    started = collector_factory(**FAST)
    yield started
    started.stop()  # now, not at the end of the session: its store connections are needed by others


def credentials(collector: CollectorProcess) -> dict[str, str]:
    return dict(json.loads((collector.data_dir / "credentials.json").read_text()))
