"""T-24: slowloris, slow-body and idle-connection floods do not starve anyone.

Hundreds of connections that never send a request, or send its head a byte
at a time, must not keep the collector from serving others (ingest and
/healthz), and the collector must close them once the head deadline passes
(``TIERSCOPE_HEADER_TIMEOUT``) instead of holding them for ever.

The same for bodies (issue 10, point 3): more connections than a worker has
ingest slots, each with a valid key and its head complete, trickle their
bodies a byte at a time. Other tenants and /healthz must be served all along,
and each slow request must get a 408 saying why, once
``TIERSCOPE_BODY_TIMEOUT`` has passed, and its connection closed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import pytest
from google.rpc.status_pb2 import Status

from tests.e2e.test_tenants import make_tenant
from tests.reliability.conftest import QUIET, Figures, seconds
from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess

IDLE = 300
SLOW = 200
SLOW_BODIES = 100  # more than a worker's 64 ingest slots (TIERSCOPE_MAX_INFLIGHT_REQUESTS)
DEADLINE = 3  # seconds, for the head and for the body


@pytest.fixture(scope="module")
def guarded(collector_factory: Callable[..., CollectorProcess]) -> CollectorProcess:
    return collector_factory(
        TIERSCOPE_HEADER_TIMEOUT=f"{DEADLINE}s", TIERSCOPE_BODY_TIMEOUT=f"{DEADLINE}s", **QUIET
    )


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False  # still open, nothing to read
    except OSError:
        return True  # reset


def test_idle_and_slow_header_connections_are_closed_and_others_served(
    guarded: CollectorProcess, figures: Callable[[str], Figures]
) -> None:
    collector = guarded
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


def read_answer(sock: socket.socket, got: bytearray) -> bool:
    """Read what has arrived on ``sock`` into ``got``; True once the server
    closed the connection."""
    sock.setblocking(False)
    try:
        while chunk := sock.recv(65536):
            got += chunk
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_slow_bodies_with_a_valid_key_are_cut_off_with_408_and_others_served(
    guarded: CollectorProcess, figures: Callable[[str], Figures]
) -> None:
    collector = guarded
    slow_key = collector.credentials()["ingest_key"]
    other_key = make_tenant(collector, "t24-other-tenant").ingest_key
    host, port = collector.url.removeprefix("http://").split(":")
    body = otlp.request([otlp.span() for _ in range(20)]).SerializeToString()
    head = (
        f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        f"Authorization: Bearer {slow_key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    flood_for = seconds(DEADLINE + 4, 60)

    slow = [socket.create_connection((host, int(port)), timeout=5) for _ in range(SLOW_BODIES)]
    answers = {sock: bytearray() for sock in slow}
    closed: set[socket.socket] = set()
    opened = time.monotonic()
    served: list[float] = []
    try:
        for sock in slow:
            sock.sendall(head)
        position = 0
        while time.monotonic() - opened < flood_for:
            # One byte of every body every 0.5 s: the bodies never finish
            # within the deadline, but every connection keeps "making progress".
            for sock in slow:
                if sock in closed:
                    continue
                try:
                    sock.setblocking(True)
                    sock.send(body[position : position + 1])
                except OSError:
                    pass
                if read_answer(sock, answers[sock]):
                    closed.add(sock)
            position += 1
            asked = time.monotonic()
            assert httpx.get(f"{collector.url}/healthz", timeout=5).status_code == 200
            response = otlp.post(collector.url, other_key, body)
            assert response.status_code == 200, (
                f"another tenant refused during the slow-body flood: {response.status_code} {response.text}"
            )
            served.append(time.monotonic() - asked)
            time.sleep(0.5)
        for sock in slow:
            if sock not in closed and read_answer(sock, answers[sock]):
                closed.add(sock)
    finally:
        for sock in slow:
            sock.close()

    statuses = {bytes(got[:12]) for got in answers.values()}
    assert statuses == {b"HTTP/1.1 408"}, f"every slow body gets a 408: {statuses}"
    messages = {Status.FromString(bytes(got).split(b"\r\n\r\n", 1)[1]).message for got in answers.values()}
    assert len(messages) == 1
    message = messages.pop()
    assert f"did not arrive in full within {DEADLINE} s" in message, message
    assert len(closed) == SLOW_BODIES, f"{SLOW_BODIES - len(closed)} slow-body connections still open"
    assert max(served) < 2.0, "health checks and another tenant's ingest are served during the flood"
    figures("T-24 slow body").record(
        fault=f"{SLOW_BODIES} slow-body connections with a valid key (1 byte / 0.5 s) for {flood_for:.0f} s",
        held=f"/healthz and another tenant's ingest served throughout; each slow request answered 408 "
        f"and closed at the {DEADLINE} s body deadline",
        slowest_served_s=round(max(served), 2),
        answered_408=f"{len(answers)}/{SLOW_BODIES}",
    )
