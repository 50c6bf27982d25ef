"""Carrying a trace into a background job: the platform tier.

A CRM/ERP enqueues work (an import, a workflow step, a mail) in a database
table and a worker runs it later, in another process. No OpenTelemetry
instrumentation knows such home-made queues, so the agent offers two calls:

    job = {"kind": "post_invoice", "trace": tierscope.agent.job_context(), ...}   # when enqueuing
    ...
    with tierscope.agent.run_job(job["trace"], "post_invoice"):                   # in the worker
        post_invoice(...)

``job_context()`` is a small JSON-able dict (W3C ``traceparent``/``tracestate``).
``run_job`` starts a consumer span — the ``platform`` tier — that joins the
enqueuing request's trace as its child, or with ``link=True`` starts a trace of
its own linked to it (for jobs that run long after the request, or fan in).
Jobs started by threads and asyncio tasks need nothing: the request's context
follows them (the threading instrumentation; asyncio copies context per task).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tierscope.agent.guard import swallowed

_propagator = TraceContextTextMapPropagator()
JOB_ATTRIBUTE = "tierscope.job"


def job_context() -> dict[str, str]:
    """The current trace context as a dict to store with a job (empty outside a trace)."""
    carrier: dict[str, str] = {}
    try:
        _propagator.inject(carrier)
    except Exception as error:
        swallowed(error)
    return carrier


def _parent(carrier: Mapping[str, str] | None) -> otel_context.Context | None:
    if not carrier:
        return None
    try:
        return _propagator.extract(dict(carrier))
    except Exception as error:
        swallowed(error)
        return None


@contextmanager
def run_job(
    carrier: Mapping[str, str] | None,
    name: str,
    *,
    link: bool = False,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """Run a job's code inside a consumer span tied to the trace that enqueued it.

    Args:
        carrier: what :func:`job_context` returned when the job was enqueued (None: no trace).
        name: the job's name (its type, never its arguments): the span name.
        link: start a new trace linked to the enqueuing one instead of joining it.
        attributes: more span attributes.

    Exceptions from the job are recorded on the span and raised unchanged.
    """
    tracer = trace.get_tracer("tierscope.agent.jobs")
    parent = _parent(carrier)
    span_attributes = {JOB_ATTRIBUTE: name, **(attributes or {})}
    links: list[Link] = []
    context = parent
    if link and parent is not None:
        span_context = trace.get_current_span(parent).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
        context = otel_context.Context()  # a root: the job's own trace
    with tracer.start_as_current_span(
        name, context=context, kind=SpanKind.CONSUMER, attributes=span_attributes, links=links
    ) as span:
        yield span
