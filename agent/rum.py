"""Opt-in injection of the RUM snippet into HTML responses (``TIERSCOPE_RUM_INJECT=true``).

The snippet is one ``<script>`` tag carrying the collector URL and the tenant's
public RUM key; it goes right after ``<head ...>`` (else before ``<body``,
else at the end). Responses are rewritten as they stream, never buffered
whole: only the bytes before the insertion point (at most
:data:`SEARCH_LIMIT`) are held. ``Content-Length`` is dropped (the server then
sends the body chunked); a body labelled HTML that is no document (Flask's
default type for plain strings) is left alone; gzip-encoded HTML is
decompressed and recompressed on the fly; other encodings (br, deflate, ...)
and non-HTML responses pass untouched. Should rewriting fail (a body labelled
gzip that is not), the error is swallowed and counted (:mod:`.guard`) and the
rest of the body, with what was held back, passes through unchanged.

Zero-code, the agent wraps Flask's ``wsgi_app``, Django's WSGI handler and
Starlette's ``__call__`` (FastAPI included); :class:`RumWsgiMiddleware` and
:class:`RumAsgiMiddleware` wrap any other WSGI or ASGI app by hand.
"""

from __future__ import annotations

import html
import re
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import wrapt

from tierscope.agent.guard import guarded, swallowed

SEARCH_LIMIT = 64 * 1024
_HEAD = re.compile(rb"<head(?:\s[^>]*)?>", re.IGNORECASE)
_BODY = re.compile(rb"<body[\s>]", re.IGNORECASE)
_HTML = re.compile(rb"<!doctype html|<html[\s>]", re.IGNORECASE)
_MARK = "tierscope.rum"


def snippet(collector_url: str, rum_key: str) -> bytes:
    url = html.escape(collector_url.rstrip("/"), quote=True)
    key = html.escape(rum_key, quote=True)
    # The attribute names are the ones rum.js reads from its own tag (dataset.key, .endpoint).
    attributes = f'src="{url}/rum.js" data-endpoint="{url}" data-key="{key}"'
    return f"<script async {attributes}></script>".encode()


class Injector:
    """Streams one HTML body, inserting the snippet once; gzip bodies are re-encoded."""

    def __init__(self, tag: bytes, *, gzipped: bool = False) -> None:
        self._tag = tag
        self._held = b""
        self._done = False
        self._at_end = False
        self._inflate = zlib.decompressobj(wbits=31) if gzipped else None
        self._deflate = zlib.compressobj(wbits=31) if gzipped else None
        # Input not yet answered by any output: what is sent unchanged if rewriting fails.
        self._pending: list[bytes] = []

    def _plain(self, data: bytes) -> bytes:
        if self._done or self._at_end:
            return data
        held = self._held + data
        found = _HEAD.search(held)
        if found is not None:
            self._done, self._held = True, b""
            return held[: found.end()] + self._tag + held[found.end() :]
        if len(held) > SEARCH_LIMIT:
            body = _BODY.search(held)
            self._held = b""
            if body is not None:
                self._done = True
                return held[: body.start()] + self._tag + held[body.start() :]
            # No head in sight: the tag goes at the end, if this is an HTML document at all.
            self._at_end = _HTML.search(held) is not None
            self._done = not self._at_end
            return held
        self._held = held
        return b""

    def feed(self, chunk: bytes) -> bytes:
        if self._inflate is None or self._deflate is None:
            out = self._plain(chunk)
        else:
            out = self._plain(self._inflate.decompress(chunk))
            out = self._deflate.compress(out) + self._deflate.flush(zlib.Z_SYNC_FLUSH) if out else b""
        if out:
            self._pending.clear()
        else:
            self._pending.append(chunk)
        return out

    def unsent(self) -> bytes:
        """The input held back so far, as it came: sent as is once rewriting failed."""
        held, self._pending = b"".join(self._pending), []
        return held

    def finish(self) -> bytes:
        out = self._plain(self._inflate.flush()) if self._inflate is not None else b""
        if not self._done:
            held, self._held, self._done = self._held, b"", True
            body = _BODY.search(held)
            if body is not None:
                out += held[: body.start()] + self._tag + held[body.start() :]
            elif self._at_end or _HTML.search(held):
                out += held + self._tag
            else:
                out += held  # labelled text/html, but no document: left alone
        if self._deflate is None:
            return out
        return self._deflate.compress(out) + self._deflate.flush()


def _decide(headers: Iterable[tuple[Any, Any]], status: int) -> tuple[bool, bool]:
    """(inject?, gzipped?) from the response's status and headers."""
    if status in (204, 304) or status < 200:
        return False, False
    content_type = encoding = ""
    for name, value in headers:
        name = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
        value = value.decode("latin-1") if isinstance(value, bytes) else value
        if name == "content-type":
            content_type = value.lower()
        elif name == "content-encoding":
            encoding = value.strip().lower()
    if "text/html" not in content_type or encoding not in ("", "identity", "gzip"):
        return False, False
    return True, encoding == "gzip"


def _without_length(headers: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    # Whether (and, compressed, how much) the body grows is known only once it has
    # streamed: the server sends it chunked instead.
    return [
        (n, v)
        for n, v in headers
        if (n.decode("latin-1") if isinstance(n, bytes) else n).lower() != "content-length"
    ]


class RumWsgiMiddleware:
    """Injects the snippet into a WSGI app's HTML responses."""

    def __init__(self, app: Any, tag: bytes) -> None:
        self.app = app
        self.tag = tag

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get(_MARK) or environ.get("REQUEST_METHOD") == "HEAD":
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        environ[_MARK] = True
        state: dict[str, Injector] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            with guarded():
                inject, gzipped = _decide(headers, int(status.split(" ", 1)[0]))
                if inject:
                    headers = _without_length(list(headers))
                    state["injector"] = Injector(self.tag, gzipped=gzipped)
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return _InjectedBody(self.app(environ, start), state)


def _feed(state: dict[str, Injector], injector: Injector, chunk: bytes) -> bytes:
    try:
        return injector.feed(chunk)
    except Exception as error:
        # The body is not what its headers say (gzip that is not): from here on it
        # passes unchanged, with the part held back so far.
        swallowed(error)
        state.pop("injector", None)
        return injector.unsent() + chunk


def _finish(injector: Injector) -> bytes:
    try:
        return injector.finish()
    except Exception as error:
        swallowed(error)
        return injector.unsent()


class _InjectedBody:
    def __init__(self, result: Iterable[bytes], state: dict[str, Injector]) -> None:
        self._result = result
        self._state = state

    def __iter__(self) -> Iterator[bytes]:
        state = self._state
        for chunk in self._result:
            injector = state.get("injector")
            yield chunk if injector is None else _feed(state, injector, chunk)
        injector = state.pop("injector", None)
        if injector is not None:
            yield _finish(injector)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


class RumAsgiMiddleware:
    """Injects the snippet into an ASGI app's HTML responses."""

    def __init__(self, app: Any, tag: bytes) -> None:
        self.app = app
        self.tag = tag

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get(_MARK) or scope.get("method") == "HEAD":
            await self.app(scope, receive, send)
            return
        scope[_MARK] = True
        state: dict[str, Injector] = {}

        async def send_injected(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                try:
                    headers = list(message.get("headers", []))
                    inject, gzipped = _decide(headers, int(message["status"]))
                    if inject:
                        state["injector"] = Injector(self.tag, gzipped=gzipped)
                        message = {**message, "headers": _without_length(headers)}
                except Exception as error:
                    swallowed(error)
            elif message["type"] == "http.response.body" and "injector" in state:
                body = _feed(state, state["injector"], message.get("body", b""))
                if not message.get("more_body", False):
                    injector = state.pop("injector", None)
                    if injector is not None:
                        body += _finish(injector)
                message = {**message, "body": body}
            await send(message)

        await self.app(scope, receive, send_injected)


def install(config: Any) -> None:
    """Wrap the frameworks' entry points (when they are imported) with the injection."""
    if not config.rum_key:
        import logging

        logging.getLogger("tierscope.agent").warning(
            "TIERSCOPE_RUM_INJECT needs TIERSCOPE_RUM_KEY; not injecting"
        )
        return
    tag = snippet(config.rum_url or config.endpoint or "", config.rum_key)

    def wsgi(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return RumWsgiMiddleware(wrapped, tag)(*args, **kwargs)

    async def asgi(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return await RumAsgiMiddleware(wrapped, tag)(*args, **kwargs)

    def hook(module: str, name: str, wrapper: Any) -> None:
        def on_import(loaded: Any) -> None:
            with guarded():
                wrapt.wrap_function_wrapper(loaded, name, wrapper)

        wrapt.register_post_import_hook(on_import, module)

    hook("flask.app", "Flask.wsgi_app", wsgi)
    hook("django.core.handlers.wsgi", "WSGIHandler.__call__", wsgi)
    hook("starlette.applications", "Starlette.__call__", asgi)
