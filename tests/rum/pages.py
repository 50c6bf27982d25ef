"""A small instrumented web app on 127.0.0.1 for the browser tests.

It does what an application with tierscope's agent does, with the plain
OpenTelemetry SDK: a server span per request (continuing the browser's
``traceparent`` on in-page calls), real database calls to PostgreSQL as client
spans (``SELECT pg_sleep`` makes a slow database), spans exported over OTLP to
the collector, and ``Server-Timing: traceparent;desc=...`` on every response so
the browser can name the trace of its page load.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_INVOICE_PAGE = re.compile(r"^/invoices/(\d+)$")
_POST_INVOICE = re.compile(r"^/api/invoices/(\d+)/post$")


class PageApp:
    """Serves the test pages; ``db_seconds`` is how long each request's query takes."""

    def __init__(self, collector_url: str, ingest_key: str, rum_key: str, dsn: str, web_vitals: Path | None):
        self.collector_url = collector_url
        self.rum_key = rum_key
        self.dsn = dsn
        self.web_vitals = web_vitals
        self.db_seconds = 0.0
        self.propagate = ""  # the tag's data-propagate: other origins that get a traceparent
        self.traces: dict[str, str] = {}  # path -> trace id of its last response
        self.reference: list[dict[str, Any]] = []  # what web-vitals reported
        self.provider = TracerProvider(resource=Resource.create({"service.name": "erp-web"}))
        exporter = OTLPSpanExporter(
            endpoint=f"{collector_url}/v1/traces", headers={"Authorization": f"Bearer {ingest_key}"}
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
        self.tracer = self.provider.get_tracer("tests.rum.pages")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> PageApp:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.provider.shutdown()

    def flush(self) -> None:
        self.provider.force_flush()

    # -- pages -------------------------------------------------------------------

    def snippet(self) -> str:
        propagate = f' data-propagate="{self.propagate}"' if self.propagate else ""
        return (
            f'<script src="{self.collector_url}/rum.js" data-key="{self.rum_key}" '
            f'data-user="clerk-17" data-site="branch-b"{propagate}></script>'
        )

    def invoice_page(self, number: str, vitals: bool) -> str:
        reference = ""
        if vitals:
            reference = """<script src="/web-vitals.js"></script><script>
              function report(m) {
                navigator.sendBeacon('/vitals-ref', JSON.stringify({name: m.name, value: m.value}));
              }
              webVitals.onLCP(report); webVitals.onCLS(report); webVitals.onINP(report);
              webVitals.onFCP(report); webVitals.onTTFB(report);
            </script>"""
        return f"""<!doctype html><html><head><title>Invoice {number}</title>{self.snippet()}{reference}
          </head><body><div id="top"></div>
          <h1>Invoice {number}</h1>
          <p id="text" style="font-size:28px;width:700px">{"Posting lines of this invoice. " * 30}</p>
          <button id="post" data-tierscope-action="Post invoice" style="width:200px;height:60px">Post</button>
          <button id="slow" style="width:200px;height:60px">Recalculate</button>
          <button id="break" style="width:200px;height:60px">Break</button>
          <div id="result"></div>
          <script>
            document.getElementById('post').addEventListener('click', function () {{
              fetch('/api/invoices/{number}/post', {{method: 'POST'}})
                .then(function (r) {{ return r.json(); }})
                .then(function (j) {{ document.getElementById('result').textContent = j.state; }});
            }});
            document.getElementById('slow').addEventListener('click', function () {{
              var until = performance.now() + 250; while (performance.now() < until) {{}}
              document.getElementById('result').textContent = 'recalculated';
            }});
            document.getElementById('break').addEventListener('click', function () {{
              setTimeout(function () {{ null.total(); }}, 0);
            }});
            setTimeout(function () {{
              var banner = document.createElement('div');
              banner.style.height = '180px';
              banner.textContent = 'Late banner';
              document.getElementById('top').appendChild(banner);
            }}, 300);
          </script></body></html>"""

    # -- serving -----------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                app._serve(self, "GET")

            def do_POST(self) -> None:
                app._serve(self, "POST")

        return Handler

    def _serve(self, request: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(request.path)
        length = int(request.headers.get("content-length") or 0)
        body = request.rfile.read(length) if length else b""
        if parts.path == "/web-vitals.js" and self.web_vitals is not None:
            self._reply(request, 200, self.web_vitals.read_bytes(), "text/javascript")
            return
        if parts.path == "/vitals-ref":
            self.reference.append(json.loads(body))
            self._reply(request, 204, b"", "text/plain")
            return
        page = _INVOICE_PAGE.match(parts.path)
        post = _POST_INVOICE.match(parts.path)
        if not (page and method == "GET") and not (post and method == "POST"):
            self._reply(request, 404, b"not found", "text/plain")
            return
        route = "/invoices/{id}" if page else "/api/invoices/{id}/post"
        parent = TraceContextTextMapPropagator().extract(dict(request.headers.items()))
        with self.tracer.start_as_current_span(
            f"{method} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route, "url.path": parts.path},
        ) as span:
            context = span.get_span_context()
            self._query(float(parse_qs(parts.query).get("db", [self.db_seconds])[0]))
            if page:
                vitals = "vitals" in parse_qs(parts.query)
                out, media = self.invoice_page(page.group(1), vitals).encode(), "text/html; charset=utf-8"
            else:
                out, media = json.dumps({"state": "posted"}).encode(), "application/json"
            span.set_attribute("http.response.status_code", 200)
        trace_id = format_trace_id(context.trace_id)
        self.traces[parts.path] = trace_id
        server_timing = f'traceparent;desc="00-{trace_id}-{format_span_id(context.span_id)}-01"'
        self._reply(request, 200, out, media, {"Server-Timing": server_timing})

    def _query(self, seconds: float) -> None:
        """A real database call, as a client span with the semantic conventions' attributes."""
        statement = "SELECT pg_sleep(%s)"
        with (
            self.tracer.start_as_current_span(
                "SELECT",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system": "postgresql",
                    "db.statement": statement,
                    "server.address": "127.0.0.1",
                },
            ),
            psycopg.connect(self.dsn) as conn,
        ):
            conn.execute(statement, (seconds,))

    @staticmethod
    def _reply(
        request: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        media: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", media)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)


class OtherOrigin:
    """Another origin on 127.0.0.1 (a port of its own): serves ``html`` at ``/page``,
    and answers in-page calls to ``/ping`` by CORS (preflights included), recording
    the ``traceparent`` header each call arrived with."""

    def __init__(self, html: str = "") -> None:
        self.html = html
        self.calls: list[tuple[str, str | None]] = []  # (method, traceparent) of each /ping
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_OPTIONS(self) -> None:
                PageApp._reply(
                    self,
                    204,
                    b"",
                    "text/plain",
                    {
                        "Access-Control-Allow-Origin": "*",
                        "Access-Control-Allow-Methods": "GET, POST",
                        "Access-Control-Allow-Headers": "traceparent, content-type",
                    },
                )

            def do_GET(self) -> None:
                if urlsplit(self.path).path == "/page":
                    PageApp._reply(self, 200, site.html.encode(), "text/html; charset=utf-8")
                    return
                site.calls.append((self.command, self.headers.get("traceparent")))
                cors = {"Access-Control-Allow-Origin": "*", "Timing-Allow-Origin": "*"}
                PageApp._reply(self, 200, b'{"pong":true}', "application/json", cors)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtherOrigin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_until(check: Any, timeout: float = 30.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s")
