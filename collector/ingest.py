"""``POST /v1/traces``: OTLP/HTTP trace ingest, exactly as the specification says.

The status codes are the contract clients retry by:

====  ===================================================  ==============
code  when                                                  client retries
====  ===================================================  ==============
200   stored durably (COMMIT returned); ``partial_success``  no
      lists spans that were refused one by one
400   the body can never be accepted (bad protobuf/JSON,    no
      truncated gzip)
401   no key, a malformed or an unknown key                 no
403   a revoked, expired or wrong-kind key                  no
408   the body did not arrive within ``TIERSCOPE_BODY_TIMEOUT`` no
      (the connection is closed)
413   body over the limit after decompression               no
415   unsupported Content-Type or Content-Encoding          no
429   the tenant is over its ingest rate (when one is       yes, after
      set), with ``Retry-After``                             Retry-After
503   store unavailable or collector saturated (bytes or    yes, after
      requests in flight), with ``Retry-After``              Retry-After
====  ===================================================  ==============

Errors carry a ``google.rpc.Status`` in the request's encoding. Bad input never
gives 500.

A request takes one of the worker's in-flight slots (``RequestGate``) only once
its body is in: a client uploading slowly holds memory (counted in the byte
budget) and a connection until the body deadline, but no slot, so a flood of
slow uploads cannot lock everyone else out. When every slot is taken already,
a request is refused before its body is read, which keeps refusing cheap.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from tierscope.collector import otlp
from tierscope.collector.auth import AuthError, KeyVerifier
from tierscope.collector.body import (
    BadEncoding,
    BodyReader,
    BodyTimeout,
    BodyTooLarge,
    InflightBudget,
    Saturated,
)
from tierscope.collector.convert import Limits, convert
from tierscope.collector.group_write import GroupWriter
from tierscope.collector.metrics import CollectorMetrics
from tierscope.collector.ratelimit import RateLimiter, RequestGate, retry_after
from tierscope.collector.span_bytes import span_bytes
from tierscope.store import Database, StoreError, StoreUnavailable
from tierscope.store.spans import KnownResources

_logger = logging.getLogger(__name__)

router = APIRouter(tags=["ingest"])


@dataclass
class IngestContext:
    """What the ingest route needs, built once by the app."""

    database: Database
    verifier: KeyVerifier
    metrics: CollectorMetrics
    budget: InflightBudget
    limits: Limits
    max_body_size: int
    retry_after_seconds: int
    requests: RequestGate
    body_timeout: float | None = None
    tenant_rate: RateLimiter | None = None
    tenant_rate_status: int = 429
    known_resources: KnownResources = field(default_factory=KnownResources)
    writer: GroupWriter = field(init=False)

    def __post_init__(self) -> None:
        self.writer = GroupWriter(
            self.database,
            self.known_resources,
            observe_group=lambda requests, spans: self.metrics.store_write_group.observe(requests),
        )


class _Refusal(Exception):
    """The whole request is refused; ``spans`` is how many it carried, when known."""

    def __init__(
        self, status: int, message: str, reason: str, field: str | None = None, spans: int = 0
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.field = field
        self.spans = spans
        self.retry_after: str | None = None
        self.close = False  # close the connection after the answer


class _Slot:
    """One of the worker's in-flight slots, taken once the body is in."""

    def __init__(self, gate: RequestGate) -> None:
        self.gate = gate
        self.held = False

    def take(self) -> None:
        if not self.gate.enter():
            raise _Refusal(503, "the collector is saturated; retry later", "saturated")
        self.held = True

    def release(self) -> None:
        if self.held:
            self.gate.leave()
            self.held = False


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP trace export (protobuf or JSON, optionally gzip)",
    response_class=Response,
)
async def export_traces(request: Request) -> Response:
    ctx: IngestContext = request.app.state.ingest
    started = time.perf_counter()
    media = otlp.media_type(request.headers.get("content-type"))
    reader = BodyReader(ctx.budget, ctx.max_body_size, ctx.body_timeout)
    slot = _Slot(ctx.requests)
    try:
        if ctx.requests.full:
            raise _Refusal(503, "the collector is saturated; retry later", "saturated")
        response = await _handle(request, ctx, media, reader, slot)
    except _Refusal as refusal:
        ctx.metrics.requests_refused.labels(refusal.reason).inc()
        if refusal.spans:
            ctx.metrics.spans_rejected.labels(refusal.reason).inc(refusal.spans)
        response = _error(
            refusal.status,
            str(refusal),
            media or otlp.JSON,
            ctx,
            refusal.field,
            refusal.retry_after,
            close=refusal.close,
        )
    finally:
        slot.release()
        ctx.budget.give_back(reader.held)
        ctx.metrics.inflight_bytes.set(ctx.budget.used)
    ctx.metrics.request_latency.labels("/v1/traces").observe(time.perf_counter() - started)
    return response


async def _handle(
    request: Request, ctx: IngestContext, media: str | None, reader: BodyReader, slot: _Slot
) -> Response:
    if media is None:
        raise _Refusal(
            415,
            "unsupported Content-Type: send application/x-protobuf or application/json",
            "unsupported_media_type",
        )
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise _Refusal(
            415, f"unsupported Content-Encoding {encoding!r}: send gzip or none", "unsupported_encoding"
        )
    try:
        key = await ctx.verifier.verify(request.headers.get("authorization"), "ingest")
    except AuthError as exc:
        raise _Refusal(
            exc.status, str(exc), "unauthenticated" if exc.status == 401 else "forbidden"
        ) from None
    except StoreUnavailable:
        raise _Refusal(
            503, "cannot verify the key: the store is unavailable; retry later", "store_unavailable"
        ) from None

    if ctx.tenant_rate is not None:
        wait = ctx.tenant_rate.waiting(str(key.tenant_id))
        if wait:
            refusal = _Refusal(
                ctx.tenant_rate_status,
                f"tenant {key.tenant!r} is over its ingest rate; retry after the Retry-After delay",
                "rate_limited",
            )
            refusal.retry_after = retry_after(wait)
            raise refusal

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > ctx.max_body_size:
        raise _Refusal(
            413, f"body of {declared} bytes is over the limit of {ctx.max_body_size} bytes", "too_large"
        )
    try:
        body = await reader.read(request.stream(), gzip=encoding == "gzip")
    except BodyTooLarge as exc:
        raise _Refusal(413, str(exc), "too_large") from None
    except BadEncoding as exc:
        raise _Refusal(400, str(exc), "bad_encoding", field="body") from None
    except Saturated:
        raise _Refusal(503, "the collector is saturated; retry later", "saturated") from None
    except BodyTimeout as exc:
        # The rest of the body may still be on its way: the connection cannot
        # be reused for another request, so it is closed after the answer.
        refusal = _Refusal(408, str(exc), "body_timeout", field="body")
        refusal.close = True
        raise refusal from None
    except ClientDisconnect:
        raise _Refusal(400, "the client went away before the body arrived", "disconnected") from None
    finally:
        ctx.metrics.inflight_bytes.set(ctx.budget.used)
    slot.take()

    try:
        decoded = otlp.decode_traces(body, media)
    except otlp.BadRequest as exc:
        raise _Refusal(400, str(exc), "bad_request", field=exc.field) from None
    originals = span_bytes(body) if media == otlp.PROTOBUF else None
    del body

    conversion = convert(decoded, key.tenant_id, ctx.limits, time.time_ns(), originals)
    del decoded, originals
    if ctx.tenant_rate is not None:
        ctx.tenant_rate.spend(str(key.tenant_id), conversion.rows.count)
    for reason, count in conversion.rejected.items():
        ctx.metrics.spans_rejected.labels(reason).inc(count)
    written_at = time.perf_counter()
    try:
        result = await ctx.writer.write(conversion.rows, conversion.resources)
    except StoreUnavailable as exc:
        _logger.warning("ingest: %s", exc)
        raise _Refusal(
            503, "the store is unavailable; retry later", "store_unavailable", spans=conversion.rows.count
        ) from None
    except StoreError:
        _logger.exception("ingest: the store refused a batch")
        return _error(500, "the store refused the data; this is a tierscope bug, see its log", media, ctx)
    ctx.metrics.store_write_latency.observe(time.perf_counter() - written_at)
    ctx.metrics.spans_accepted.labels(key.tenant).inc(result.stored)
    if result.duplicates:
        ctx.metrics.spans_duplicate.inc(result.duplicates)
    if conversion.truncated:
        ctx.metrics.attributes_truncated.inc(conversion.truncated)
    body_out = otlp.success(media, conversion.rejected_count, conversion.message(ctx.limits))
    ctx.metrics.requests.labels("/v1/traces", "200").inc()
    return Response(body_out, status_code=200, media_type=media)


def _error(
    status: int,
    message: str,
    media: str,
    ctx: IngestContext,
    field: str | None = None,
    retry_after_value: str | None = None,
    *,
    close: bool = False,
) -> Response:
    ctx.metrics.requests.labels("/v1/traces", str(status)).inc()
    headers = {"Connection": "close"} if close else {}
    if retry_after_value is not None:
        headers["Retry-After"] = retry_after_value
    elif status == 503:
        headers["Retry-After"] = str(max(1, math.ceil(ctx.retry_after_seconds)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="tierscope"'
    return Response(
        otlp.status(status, message, media, field), status_code=status, media_type=media, headers=headers
    )
