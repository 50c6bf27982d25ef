"""T-24: slowloris and idle-connection floods do not starve anyone.

Hundreds of connections that never send a request, or send its head a byte
at a time, must not keep the collector from serving others (ingest and
/healthz), and the collector must close them once the head deadline passes
(``TIERSCOPE_HEADER_TIMEOUT``) instead of holding them for ever.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx

from tests.reliability.conftest import QUIET, Figures, seconds
from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess

IDLE = 300
SLOW = 200


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False  # still open, nothing to read
    except OSError:
        return True  # reset


def test_idle_and_slow_header_connections_are_closed_and_others_served(
    collector_factory: Callable[..., CollectorProcess], figures: Callable[[str], Figures]
) -> None:
    collector = collector_factory(TIERSCOPE_HEADER_TIMEOUT="3s", **QUIET)
    key = collector.credentials()["ingest_key"]
    host, port = collector.url.removeprefix("http://").split(":")
    body = otlp.request([otlp.span() for _ in range(20)]).SerializeToString()
    flood_for = seconds(6, 60)

    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(IDLE)]
    slow = [socket.create_connection((host, int(port)), timeout=5) for _ in range(SLOW)]
    opened = time.monotonic()
    served: list[float] = []
    try:
        head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        position = 0
        while time.monotonic() - opened < flood_for:
            # One more byte of the head on every slow connection, every 0.5 s:
            # each keeps "making progress" for far longer than the deadline.
            for sock in slow:
                try:
                    sock.send(head[position : position + 1])
                except OSError:
                    pass
            position += 1
            asked = time.monotonic()
            assert httpx.get(f"{collector.url}/healthz", timeout=5).status_code == 200
            assert otlp.post(collector.url, key, body).status_code == 200
            served.append(time.monotonic() - asked)
            time.sleep(0.5)
        idle_closed = sum(closed_by_server(sock) for sock in idle)
        slow_closed = sum(closed_by_server(sock) for sock in slow)
    finally:
        for sock in idle + slow:
            sock.close()

    assert max(served) < 2.0, "health checks and ingest are served during the flood"
    assert idle_closed == IDLE, f"{IDLE - idle_closed} idle connections still open after the deadline"
    assert slow_closed == SLOW, f"{SLOW - slow_closed} slow-header connections still open"
    figures("T-24").record(
        fault=f"{IDLE} idle + {SLOW} slow-header connections for {flood_for:.0f} s",
        held="/healthz and ingest served throughout; every idle and slow-header socket closed "
        "by the 3 s head deadline",
        slowest_served_s=round(max(served), 2),
        closed=f"{idle_closed + slow_closed}/{IDLE + SLOW}",
    )
