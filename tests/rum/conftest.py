"""Fixtures of the RUM tests: a collector that processes quickly, the RUM CLI,
Debian's Chromium driven by Playwright (installed when missing), Google's
web-vitals library from npm (installed once into a cache directory), and the
instrumented test app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tierscope.testing.browser import browser, chromium, page  # noqa: F401 - fixtures
from tierscope.testing.collector import CollectorProcess, tierscope_command

FAST = {
    "TIERSCOPE_SETTLE_DELAY": "1s",
    "TIERSCOPE_PROCESSING_INTERVAL": "200ms",
    "TIERSCOPE_RUM_JOIN_WAIT": "30s",
    "TIERSCOPE_RUM_ROLLUP_WAIT": "1s",
}
WEB_VITALS = "web-vitals@5"
# Beacons per second the browser tests' collector takes from one address (bursts of
# twice as many): far above what their pages send, low enough for a flood to pass it.
BROWSER_RATE_PER_IP = 10


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
def rum_collector(collector_factory: Callable[..., CollectorProcess]) -> Iterator[CollectorProcess]:
    started = collector_factory(**FAST, TIERSCOPE_RUM_RATE_PER_IP=str(BROWSER_RATE_PER_IP))
    yield started
    started.stop()  # now, not at the end of the session: its store connections are needed by others


def credentials(collector: CollectorProcess) -> dict[str, str]:
    return dict(json.loads((collector.data_dir / "credentials.json").read_text()))
