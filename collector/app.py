"""The collector's ASGI application: ingest, query API, health and metrics.

:func:`create_app` builds a self-contained app from settings and a DSN; the
store pool is opened and closed by the app's lifespan, and partition
maintenance runs in the background while it serves. Collectors keep no state
that matters between requests, so any number can serve one store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Receive, Scope, Send

from tierscope.alerting import api as alerting_api
from tierscope.collector import ingest, rum
from tierscope.collector.api import admin, openapi, traces
from tierscope.collector.auth import KeyVerifier
from tierscope.collector.body import InflightBudget
from tierscope.collector.convert import Limits
from tierscope.collector.metrics import (
    CollectorMetrics,
    exposition,
    forget_dead_workers,
    multiprocess_dir,
)
from tierscope.collector.ratelimit import RateLimiter, RequestGate
from tierscope.config import Settings, load_settings
from tierscope.dashboards import schedule as report_schedule
from tierscope.dashboards.console import app as console
from tierscope.processing import api as processing_api
from tierscope.processing import experiences_api
from tierscope.slo import api as slo_api
from tierscope.store import Database, StoreError, StoreUnavailable, partitions
from tierscope.store import retention as tenant_retention

_logger = logging.getLogger(__name__)


OPENAPI_URL = "/api/v1/openapi.json"


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class _InFlight:
    """Plain ASGI middleware: count requests in flight and answered, per route."""

    def __init__(self, app: ASGIApp, metrics: CollectorMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.metrics.in_flight.dec()


async def maintain(database: Database, settings: Settings) -> None:
    """Partitions ahead, expired data out."""
    async with database.connection() as conn:
        await partitions.maintain(conn, retention=settings.table_retention, accept_from=settings.span_max_age)
        await partitions.trim_rollups(conn, settings.rollup_retention)
        await tenant_retention.apply_tenant_retention(conn, datetime.now(UTC))


async def _maintain_forever(database: Database, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.maintenance_interval.total_seconds())
        try:
            await maintain(database, settings)
        except Exception as exc:  # the next round tries again
            _logger.warning("maintenance failed: %s", exc)


def create_app(settings: Settings, dsn: str) -> FastAPI:
    metrics = CollectorMetrics()
    database = Database(
        dsn,
        pool_size=settings.db_pool_size,
        acquire_timeout=settings.db_acquire_timeout,
        statement_timeout=settings.db_statement_timeout,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await database.open()
        try:
            await maintain(database, settings)
        except Exception as exc:
            # Not fatal: ingest creates a missing partition itself, and the
            # periodic round tries again (another worker may hold the lock now).
            _logger.warning("maintenance at start-up failed: %s", exc)
        maintenance = asyncio.create_task(_maintain_forever(database, settings))
        background = [maintenance]  # the alert evaluator is a process of its own (server.py)
        if settings.report_schedule_interval.total_seconds() > 0:
            background.append(
                asyncio.create_task(report_schedule.run_forever(database, settings.report_schedule_interval))
            )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app.state.ingest.writer.close()
            await database.close()

    app = FastAPI(
        title="tierscope collector",
        summary="OTLP/HTTP ingest and the tierscope query API",
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url=OPENAPI_URL,
        redoc_url=None,
        # The collector does not trace itself; FastAPI's built-in OpenTelemetry
        # middleware would only add cost to every ingest request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    verifier = KeyVerifier(database, settings.key_cache_ttl.total_seconds())
    app.state.settings = settings
    app.state.database = database
    app.state.metrics = metrics
    app.state.verifier = verifier
    app.state.ingest = ingest.IngestContext(
        database=database,
        verifier=verifier,
        metrics=metrics,
        budget=InflightBudget(settings.max_inflight_bytes),
        limits=Limits(
            attribute_value=settings.attribute_value_limit,
            event_attribute_value=settings.event_attribute_value_limit,
            max_age_ns=_ns(settings.span_max_age.total_seconds()),
            max_future_ns=_ns(settings.span_max_future.total_seconds()),
        ),
        max_body_size=settings.max_body_size,
        retry_after_seconds=math.ceil(settings.retry_after.total_seconds()),
        requests=RequestGate(settings.max_inflight_requests),
        body_timeout=settings.body_timeout.total_seconds(),
        tenant_rate=RateLimiter(settings.ingest_rate_per_tenant, 2 * settings.ingest_rate_per_tenant)
        if settings.ingest_rate_per_tenant
        else None,
        tenant_rate_status=settings.ingest_rate_status,
    )
    app.state.rum = rum.RumContext.build(database, verifier, app.state.ingest.budget, settings)
    app.include_router(ingest.router)
    app.include_router(rum.router)
    app.include_router(traces.router)
    app.include_router(processing_api.router)
    app.include_router(slo_api.router)
    app.include_router(console.router)
    app.mount("/console/static", console.static, name="console-static")
    app.include_router(experiences_api.router)
    app.include_router(alerting_api.router)
    app.include_router(admin.router)
    openapi.describe(app)
    app.add_middleware(_InFlight, metrics=metrics)
    retry_after = str(max(1, math.ceil(settings.retry_after.total_seconds())))

    @app.exception_handler(psycopg.DataError)
    async def bad_value(request: Request, exc: psycopg.DataError) -> Response:
        # SQLSTATE class 22: a value from the request the store cannot take (a NUL
        # character in a text, a number out of range). Bad input, never a 500.
        # Found by schemathesis (tests/security/test_openapi.py).
        message = (str(exc).strip().splitlines() or ["invalid value"])[0]
        return JSONResponse({"detail": f"a value in this request cannot be used: {message}"}, status_code=400)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> Response:
        if isinstance(exc.__cause__, psycopg.DataError):
            return await bad_value(request, exc.__cause__)
        _logger.error("store error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "internal error in the store"}, status_code=500)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
        return JSONResponse(
            {"detail": "the store is unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": retry_after},
        )

    @app.get("/api/openapi.json", include_in_schema=False)
    async def openapi_previous_address() -> Response:
        # Where the document was before it moved under /api/v1; kept for old links.
        return JSONResponse(app.openapi())

    @app.get("/healthz", tags=["health"], summary="Liveness: the process serves requests")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: the store answers")
    async def readyz() -> Response:
        started = time.perf_counter()
        if await database.ping():
            return JSONResponse(
                {"status": "ready", "store_ms": round((time.perf_counter() - started) * 1000, 1)}
            )
        return JSONResponse(
            {"status": "unavailable", "detail": "the store does not answer"},
            status_code=503,
            headers={"Retry-After": retry_after},
        )

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics of this collector")
    async def prometheus_metrics() -> Response:
        return Response(exposition(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``tierscope up``: everything it needs
    comes from ``TIERSCOPE_*`` variables, which the parent process has set."""
    settings = load_settings()
    if not settings.database_url:
        raise RuntimeError("a collector worker needs TIERSCOPE_DATABASE_URL (tierscope up sets it)")
    directory = multiprocess_dir()
    if directory is not None:
        forget_dead_workers(directory)
    return create_app(settings, settings.database_url)
