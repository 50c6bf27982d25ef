"""``Server-Timing: traceparent`` on every response of an instrumented server.

The browser's RUM snippet reads it (Resource/Navigation Timing expose
``serverTiming``) and so ties what the user waited for to the server's trace.
The OpenTelemetry instrumentations of Flask, Django and ASGI (FastAPI,
Starlette) call the global *response propagator* when a response starts, with
the server span current; this is one, so every framework gets the header
through the instrumentation it already has.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.propagators import ResponsePropagator, default_setter
from opentelemetry.trace import format_span_id, format_trace_id

from tierscope.agent.guard import swallowed

EXPOSE = "Access-Control-Expose-Headers"


def server_timing_value(trace_id: int, span_id: int, flags: int = 1) -> str:
    return f'traceparent;desc="00-{format_trace_id(trace_id)}-{format_span_id(span_id)}-{flags:02x}"'


class ServerTimingPropagator(ResponsePropagator):
    """Writes ``Server-Timing`` (and ``Timing-Allow-Origin`` when configured) into responses.

    Args:
        timing_allow_origin: value of ``Timing-Allow-Origin``, which lets pages of
            other origins read the timing; None sends no such header.
    """

    def __init__(self, timing_allow_origin: str | None = None) -> None:
        self._timing_allow_origin = timing_allow_origin

    def inject(self, carrier: Any, context: Context | None = None, setter: Any = default_setter) -> None:
        try:
            span_context = trace.get_current_span(context).get_span_context()
            if not span_context.is_valid:
                return
            # Only the sampled bit: browsers' trace-context level 1 knows no other flag.
            flags = span_context.trace_flags & 0x01
            value = server_timing_value(span_context.trace_id, span_context.span_id, flags)
            setter.set(carrier, "Server-Timing", value)
            # Cross-origin fetches can read the header only when it is exposed.
            setter.set(carrier, EXPOSE, "Server-Timing")
            if self._timing_allow_origin:
                setter.set(carrier, "Timing-Allow-Origin", self._timing_allow_origin)
        except Exception as error:
            swallowed(error)
