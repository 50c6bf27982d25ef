"""Opt-in RUM snippet injection: the tag lands right after ``<head>`` in HTML
responses of real servers (FastAPI, Flask, Django) — whole, streamed and
gzip-compressed — with a correct length, and nothing else is touched (``HEAD``
answers included)."""

from __future__ import annotations

import asyncio
import gzip
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tierscope.agent import guard
from tierscope.agent.rum import SEARCH_LIMIT, Injector, RumAsgiMiddleware, RumWsgiMiddleware, snippet
from tierscope.agent.stats import AgentStats
from tierscope.testing.apps import AppProcess
from tierscope.testing.collector import CollectorProcess, free_port

TAG = snippet("https://rum.example.com/", 'pub"key')


def test_the_tag_is_escaped() -> None:
    assert TAG == (
        b'<script async src="https://rum.example.com/rum.js" '
        b'data-endpoint="https://rum.example.com" data-key="pub&quot;key"></script>'
    )


INJECTION_CASES = {
    "after the head tag": (
        [b"<html><head><title>x</title></head></html>"],
        b"<html><head>TAG<title>x</title></head></html>",
    ),
    "a head tag split across chunks": (
        [b"<html><he", b'ad class="a"', b"><title>"],
        b'<html><head class="a">TAG<title>',
    ),
    "a header element is not the head": (
        [b"<body><header>h</header></body>"],
        b"TAG<body><header>h</header></body>",
    ),
    "no head: before the body": ([b"<html>", b"<body>hi</body>"], b"<html>TAG<body>hi</body>"),
    "a document without head and body: at the end": ([b"<!DOCTYPE html><p>hi"], b"<!DOCTYPE html><p>hiTAG"),
    "text that is no document: untouched": ([b"just text"], b"just text"),
    "no head within the search limit: at the end": (
        [b"<html>" + b"x" * SEARCH_LIMIT, b"<head>"],
        b"<html>" + b"x" * SEARCH_LIMIT + b"<head>TAG",
    ),
}


@pytest.mark.parametrize(("chunks", "expected"), INJECTION_CASES.values(), ids=INJECTION_CASES.keys())
def test_injection(chunks: list[bytes], expected: bytes) -> None:
    injector = Injector(b"TAG")
    out = b"".join(injector.feed(chunk) for chunk in chunks) + injector.finish()
    assert out == expected


def test_a_gzip_stream_is_reencoded() -> None:
    body = gzip.compress(b"<html><head></head><body>" + b"y" * 5000 + b"</body></html>")
    injector = Injector(b"TAG", gzipped=True)
    out = b"".join(injector.feed(body[i : i + 100]) for i in range(0, len(body), 100)) + injector.finish()
    assert gzip.decompress(out) == b"<html><head>TAG</head><body>" + b"y" * 5000 + b"</body></html>"


RUM_ENV = {
    "TIERSCOPE_RUM_INJECT": "true",
    "TIERSCOPE_RUM_KEY": "pub_test",
    "TIERSCOPE_RUM_URL": "https://rum.example.com",
}
EXPECTED_TAG = snippet("https://rum.example.com", "pub_test").decode()
PAGE_HEAD = "<!doctype html><html><head><title>Stock</title></head><body>"


def test_fastapi_pages_get_the_snippet_whole_streamed_and_compressed(
    collector: CollectorProcess, run_app: Callable[..., AppProcess]
) -> None:
    port = free_port()
    app = run_app(
        ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "fastapi_app:app"],
        collector,
        service="erp-rum",
        port=port,
        env={**RUM_ENV, "TIERSCOPE_TIMING_ALLOW_ORIGIN": "https://crm.example.com"},
    )
    plain = httpx.get(f"{app.url}/page", headers={"Accept-Encoding": "identity"})
    assert plain.headers["timing-allow-origin"] == "https://crm.example.com"
    assert plain.headers["access-control-expose-headers"] == "Server-Timing"
    assert plain.text.startswith("<!doctype html><html><head>" + EXPECTED_TAG + "<title>Orders</title>")
    assert "content-length" not in plain.headers  # sent chunked: its growth is known only at the end
    assert "server-timing" in plain.headers

    compressed = httpx.get(f"{app.url}/page", headers={"Accept-Encoding": "gzip"})
    assert compressed.headers["content-encoding"] == "gzip"
    assert compressed.text.count(EXPECTED_TAG) == 1
    assert "<head>" + EXPECTED_TAG in compressed.text

    streamed = httpx.get(f"{app.url}/page/streamed", headers={"Accept-Encoding": "identity"})
    assert streamed.text == (
        "<!doctype html><html><head>" + EXPECTED_TAG + "<title>Orders</title></head><body></body></html>"
    )
    json_answer = httpx.get(f"{app.url}/health")
    assert json_answer.json() == {"ok": True}


def test_flask_pages_get_the_snippet(collector: CollectorProcess, run_app: Callable[..., AppProcess]) -> None:
    port = free_port()
    app = run_app(
        ["gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "flask_app:app"],
        collector,
        service="crm-rum",
        port=port,
        env=RUM_ENV,
    )
    page = httpx.get(f"{app.url}/page/streamed")
    assert page.text == (
        "<!doctype html><html><HEAD lang=en>" + EXPECTED_TAG + "<title>Leads</title></head><body>Leads</body>"
    )
    assert httpx.get(f"{app.url}/health").text == "ok"


def test_django_pages_get_the_snippet_plain_and_compressed_and_head_is_left_alone(
    collector: CollectorProcess, run_app: Callable[..., AppProcess]
) -> None:
    port = free_port()
    app = run_app(
        ["gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "djangoapp.wsgi"],
        collector,
        service="erp-rum",
        port=port,
        env={**RUM_ENV, "DJANGO_SETTINGS_MODULE": "djangoapp.settings"},
    )
    original = PAGE_HEAD + "".join(f"<p>item {n}: in stock</p>" for n in range(20)) + "</body></html>"
    with_tag = original.replace("<head>", "<head>" + EXPECTED_TAG, 1)

    plain = httpx.get(f"{app.url}/page", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.text == with_tag  # the hook on Django's WSGIHandler
    assert "content-length" not in plain.headers  # the page grew: sent chunked instead

    with httpx.stream("GET", f"{app.url}/page/compressed", headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    # Django set the compressed length; it must be gone, or (were it kept) be the one sent.
    assert response.headers.get("content-length") in (None, str(len(raw))), response.headers
    assert gzip.decompress(raw).decode() == with_tag

    head = httpx.head(f"{app.url}/page", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(original))  # what the app said, untouched
    assert "server-timing" in head.headers


def test_without_opting_in_nothing_is_injected(
    collector: CollectorProcess, run_app: Callable[..., AppProcess]
) -> None:
    port = free_port()
    app = run_app(
        ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "fastapi_app:app"],
        collector,
        service="erp-rum",
        port=port,
    )
    assert "<script" not in httpx.get(f"{app.url}/page").text


# -- a body the agent cannot rewrite passes unchanged ---------------------------------------------

MISLABELLED = b"<!doctype html><html><head><title>not gzip</title></head></html>"


@pytest.fixture
def counted() -> Any:
    """The agent's count of swallowed errors, as the running agent keeps it."""
    stats = AgentStats()
    saved = list(guard._counter)
    guard.count_with(lambda: stats.add("errors_swallowed"))
    yield stats
    guard._counter[:] = saved


def test_a_body_mislabelled_gzip_passes_unchanged_through_the_wsgi_and_asgi_middleware(
    counted: AgentStats, swallowed_errors: list[BaseException]
) -> None:
    chunks = [MISLABELLED[:10], MISLABELLED[10:]]
    headers = [("Content-Type", "text/html"), ("Content-Encoding", "gzip"), ("Content-Length", "64")]

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", headers)
        return chunks

    body = RumWsgiMiddleware(wsgi_app, b"TAG")({"REQUEST_METHOD": "GET"}, lambda *args: None)
    assert b"".join(body) == MISLABELLED

    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = [(n.lower().encode(), v.encode()) for n, v in headers]
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": chunks[0], "more_body": True})
        await send({"type": "http.response.body", "body": chunks[1]})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(RumAsgiMiddleware(asgi_app, b"TAG")({"type": "http", "method": "GET"}, None, send))
    assert b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body") == MISLABELLED

    assert counted.errors_swallowed == 2
    assert [type(error) for error in swallowed_errors] == [zlib.error, zlib.error]
    swallowed_errors.clear()  # provoked on purpose (in this process, and its copy in the file)
    Path(os.environ["TIERSCOPE_AGENT_ERRORS_FILE"]).unlink(missing_ok=True)


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_a_page_mislabelled_gzip_arrives_intact_from_a_real_server(
    collector: CollectorProcess, run_app: Callable[..., AppProcess], framework: str
) -> None:
    port = free_port()
    if framework == "flask":
        command = ["gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "flask_app:app"]
    else:
        command = ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "fastapi_app:app"]
    app = run_app(command, collector, service="crm-rum", port=port, env=RUM_ENV)
    with httpx.stream("GET", f"{app.url}/page/mislabelled") as response:
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert b"".join(response.iter_raw()) == MISLABELLED
    assert httpx.get(f"{app.url}/page/streamed").text.count(EXPECTED_TAG) == 1  # the app still serves

    # The app process swallowed (and counted) exactly that error; it is expected, so it
    # is taken out of the file the autouse fixture fails the test on.
    errors = Path(os.environ["TIERSCOPE_AGENT_ERRORS_FILE"])
    assert errors.read_text().count("zlib.error: Error -3 while decompressing data") == 1, errors.read_text()
    errors.write_text("")
