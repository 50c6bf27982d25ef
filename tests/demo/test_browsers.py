"""The demo's browser users degrade gracefully: without chromium the estate says why
and runs without them, and a Chromium that fails to start ends only that user, with the reason.
The pages' RUM tag carries the key and a trusted site only."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tierscope.demo import browsers
from tierscope.demo.apps import common
from tierscope.demo.traffic import Clock


def test_without_chromium_the_reason_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no chromium on it
    reason = browsers.unavailable()
    assert reason is not None
    assert "chromium" in reason
    assert "apt-get install chromium" in reason


def test_a_chromium_that_cannot_start_ends_its_user_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(browsers, "chromium_path", lambda: "/nonexistent/chromium")
    stop = threading.Event()
    urls = {"hq": {"crm": "http://127.0.0.1:9", "erp": "http://127.0.0.1:9"}}
    users = browsers.BrowserUsers(urls, 1, seed=1, pace=(0.1, Clock(compress=0)), stop=stop).start()
    users.join(60)
    stop.set()
    [user] = users.users
    assert not user.is_alive()
    assert user.error, "the user's failure is reported"
    assert users.stats() == [{"site": "hq", "pages": 0, "failures": 0, "error": user.error}]


def test_the_pages_rum_tag_carries_the_key_and_only_a_known_site(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERSCOPE_DEMO_RUM_URL", "http://127.0.0.1:4318/")
    monkeypatch.setenv("TIERSCOPE_DEMO_RUM_KEY", "tsr_abc")
    tag = common.rum_tag(common.site_of({}, {common.SITE_COOKIE: "branch-east"}))
    assert tag.startswith('<script async src="http://127.0.0.1:4318/rum.js" data-key="tsr_abc"')
    assert 'data-site="branch-east"' in tag
    # A site the estate does not have is not written into the page.
    assert common.site_of({common.SITE_HEADER: '"><script>'}, {}) is None
    assert "data-site" not in common.rum_tag(None)
    monkeypatch.delenv("TIERSCOPE_DEMO_RUM_KEY")
    assert common.rum_tag("hq") == ""  # no key from the estate: no snippet
