"""A saturated collector refuses with 503 and Retry-After, and recovers by itself."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess


@pytest.fixture(scope="module")
def small(collector_factory: Callable[..., CollectorProcess]) -> CollectorProcess:
    return collector_factory(
        TIERSCOPE_MAX_INFLIGHT_BYTES="1MiB", TIERSCOPE_MAX_BODY_SIZE="1MiB", TIERSCOPE_RETRY_AFTER="3s"
    )


def big_body(spans: int = 3000) -> bytes:
    return otlp.request([otlp.span(attributes={"pad": "x" * 200}) for _ in range(spans)]).SerializeToString()


def test_past_the_memory_budget_requests_get_503_then_succeed(small: CollectorProcess) -> None:
    key = small.credentials()["ingest_key"]
    holding = big_body()
    assert 700_000 < len(holding) < 1_000_000
    host, port = small.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(holding)}\r\n\r\n"
    ).encode()
    sock.sendall(head + holding[:-1000])  # most of it, held open
    try:
        time.sleep(0.5)
        refused = otlp.post(small.url, key, big_body(1500))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "3"
        sock.sendall(holding[-1000:])
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        sock.close()
    assert otlp.post(small.url, key, big_body(1500)).status_code == 200
