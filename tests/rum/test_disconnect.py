"""A browser that goes away mid-beacon (a page closed while ``sendBeacon`` was
still sending) is no collector error: no traceback, and the next beacon is stored."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tierscope.testing.collector import CollectorProcess

from .conftest import FAST, credentials, tierscope

ORIGIN = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
def collector(collector_factory: Callable[..., CollectorProcess]) -> Iterator[CollectorProcess]:
    started = collector_factory(**FAST)
    tierscope(started, "rum", "origins", ORIGIN)
    yield started
    started.stop()


def test_a_beacon_cut_off_by_its_client_leaves_no_error(collector: CollectorProcess) -> None:
    key = credentials(collector)["rum_key"]
    head = (
        f"POST /v1/rum?key={key} HTTP/1.1\r\nHost: 127.0.0.1:{collector.port}\r\n"
        f"Origin: {ORIGIN}\r\nContent-Type: text/plain\r\nContent-Length: 4000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", collector.port), timeout=10) as conn:
        conn.sendall(head.encode() + b'{"v": 1, "items": [')  # a tenth of the body, then gone
        time.sleep(0.5)
    item = {
        "type": "page_load",
        "id": "ab" * 16,
        "start": time.time() * 1000 - 2000,
        "name": "/leads",
        "url": f"{ORIGIN}/leads",
        "status": 200,
        "timing": {"requestStart": 5, "responseStart": 50, "responseEnd": 60, "end": 200},
    }
    sent = httpx.post(
        f"{collector.url}/v1/rum",
        params={"key": key},
        content=json.dumps({"v": 1, "items": [item]}),
        headers={"content-type": "text/plain", "origin": ORIGIN},
        timeout=10,
    )
    assert sent.status_code == 200, sent.text
    time.sleep(0.5)
    log = collector.log_path.read_text(errors="replace")
    assert "Exception in ASGI application" not in log, log[-3000:]
    assert "ClientDisconnect" not in log, log[-3000:]
