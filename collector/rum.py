"""``POST /v1/rum``: beacons from the RUM script, and ``GET /rum.js``, the script.

The RUM key travels in the URL (``?key=tsr_...``: ``sendBeacon`` cannot set
headers). It is public and write-only: it opens this door and no other. What a
beacon may do is bounded before anything is read, cheapest check first:

====  ======================================================================
code  when
====  ======================================================================
200   stored (COMMIT returned): ``{"experiences": n, "errors": m}``
400   not JSON, or not a beacon; the message names the field
401   no key, malformed or unknown key
403   a revoked or wrong-kind key, no ``Origin``, or an Origin the key does
      not allow (no CORS headers then, so the browser hides the answer too)
413   body over ``TIERSCOPE_RUM_MAX_BODY_SIZE`` (64 KiB)
415   a Content-Type other than text/plain or application/json
429   too many beacons from this client IP or with this key; ``Retry-After``
503   store unavailable or collector saturated; ``Retry-After``
====  ======================================================================
"""

from __future__ import annotations

import gzip
import ipaddress
import logging
import math
import time
from dataclasses import dataclass, field
from importlib import resources

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from tierscope.collector.auth import AuthError, KeyVerifier
from tierscope.collector.beacon import Beacon, parse_beacon, rows_of
from tierscope.collector.body import (
    BadEncoding,
    BodyReader,
    BodyTimeout,
    BodyTooLarge,
    InflightBudget,
    Saturated,
)
from tierscope.collector.ratelimit import RateLimiter, retry_after
from tierscope.config import Settings
from tierscope.store import Database, StoreError, StoreUnavailable
from tierscope.store import rum as rum_store
from tierscope.store.tenants import KeyInfo

_logger = logging.getLogger(__name__)

router = APIRouter(tags=["rum"])
_MEDIA = ("text/plain", "application/json")
_SETTINGS_TTL = 10.0  # seconds a tenant's origins and sites are trusted without asking the store


def _script() -> tuple[bytes, bytes]:
    text = resources.files("tierscope.collector").joinpath("static/rum.js").read_bytes()
    return text, gzip.compress(text, 9, mtime=0)


@dataclass
class RumContext:
    """What the RUM routes need, built once by the app."""

    database: Database
    verifier: KeyVerifier
    budget: InflightBudget
    settings: Settings
    per_ip: RateLimiter
    per_key: RateLimiter
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    script: tuple[bytes, bytes] = field(default_factory=_script)
    _tenants: dict[int, tuple[float, rum_store.RumSettings]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, database: Database, verifier: KeyVerifier, budget: InflightBudget, settings: Settings
    ) -> RumContext:
        return cls(
            database=database,
            verifier=verifier,
            budget=budget,
            settings=settings,
            per_ip=RateLimiter(settings.rum_rate_per_ip, 2 * settings.rum_rate_per_ip),
            per_key=RateLimiter(settings.rum_rate_per_key, 2 * settings.rum_rate_per_key),
            trusted=tuple(ipaddress.ip_network(p, strict=False) for p in settings.rum_trusted_proxies),
        )

    async def tenant_settings(self, tenant_id: int) -> rum_store.RumSettings:
        now = time.monotonic()
        cached = self._tenants.get(tenant_id)
        if cached and cached[0] > now:
            return cached[1]
        async with self.database.connection(bounded=True) as conn:
            found = await rum_store.load_settings(conn, tenant_id)
        if len(self._tenants) > 10_000:
            self._tenants.clear()
        self._tenants[tenant_id] = (now + _SETTINGS_TTL, found)
        return found

    def client_ip(self, request: Request) -> str:
        """The TCP peer, or the first untrusted address of X-Forwarded-For when
        the peer is a trusted proxy."""
        peer = request.client.host if request.client else ""
        if not self.trusted or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return peer

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.trusted)


class _Refusal(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, retry: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.retry = retry


def _cors(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _refused(refusal: _Refusal, cors: dict[str, str]) -> Response:
    body: dict[str, object] = {"detail": str(refusal)}
    if refusal.field:
        body["field"] = refusal.field
    headers = dict(cors)
    if refusal.status == 408:
        headers["Connection"] = "close"  # the rest of the body may still be on its way
    if refusal.status in (429, 503):
        headers["Retry-After"] = retry_after(refusal.retry)
    return JSONResponse(body, status_code=refusal.status, headers=headers)


async def _key(ctx: RumContext, request: Request) -> KeyInfo:
    key = request.query_params.get("key")
    try:
        return await ctx.verifier.verify(f"Bearer {key}" if key else None, "rum")
    except AuthError as exc:
        raise _Refusal(
            exc.status, str(exc).replace("'Authorization: Bearer <key>'", "?key=<RUM key>")
        ) from None
    except StoreUnavailable:
        raise _Refusal(503, "cannot verify the key: the store is unavailable; retry later") from None


async def _allowed_origin(ctx: RumContext, request: Request, key: KeyInfo) -> str:
    origin = request.headers.get("origin")
    if not origin:
        raise _Refusal(403, "no Origin header: RUM beacons come from pages in a browser")
    if not (await ctx.tenant_settings(key.tenant_id)).allows(origin):
        raise _Refusal(
            403,
            f"origin {origin[:200]!r} is not allowed to send beacons with this key "
            "(tierscope rum origins --tenant <name> <origin>...)",
        )
    return origin


@router.options("/v1/rum", summary="CORS preflight for beacons", response_class=Response)
async def preflight(request: Request) -> Response:
    ctx: RumContext = request.app.state.rum
    try:
        key = await _key(ctx, request)
        origin = await _allowed_origin(ctx, request, key)
    except _Refusal as refusal:
        return _refused(refusal, {})
    return Response(
        status_code=204,
        headers={
            **_cors(origin),
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "content-type",
            "Access-Control-Max-Age": "600",
        },
    )


@router.post("/v1/rum", summary="Beacons of the RUM script", response_class=Response)
async def receive(request: Request) -> Response:
    ctx: RumContext = request.app.state.rum
    cors: dict[str, str] = {}
    reader = BodyReader(ctx.budget, ctx.settings.rum_max_body_size, ctx.settings.body_timeout.total_seconds())
    try:
        ip = ctx.client_ip(request)
        # Per IP first: a flood costs no store lookup at all.
        wait = ctx.per_ip.take(ip)
        if wait:
            raise _Refusal(429, "too many beacons from this address; retry later", retry=wait)
        key = await _key(ctx, request)
        cors = _cors(await _allowed_origin(ctx, request, key))
        wait = ctx.per_key.take(request.query_params.get("key", ""))
        if wait:
            raise _Refusal(429, "too many beacons with this key; retry later", retry=wait)
        beacon = await _read(ctx, request, reader)
        settings = await ctx.tenant_settings(key.tenant_id)
        try:
            experiences, errors = rows_of(
                beacon,
                site=beacon.site or settings.site_of(ip),
                now=time.time(),
                settings=ctx.settings,
                user_agent=request.headers.get("user-agent", ""),
            )
        except ValueError as exc:
            raise _Refusal(400, f"{exc}: the time is outside the accepted window", str(exc)) from None
        try:
            async with ctx.database.connection(bounded=True) as conn:
                await rum_store.write_beacon(conn, key.tenant_id, experiences, errors)
        except StoreUnavailable as exc:
            _logger.warning("rum: %s", exc)
            raise _Refusal(503, "the store is unavailable; retry later", retry=_retry(ctx)) from None
        except StoreError:
            _logger.exception("rum: the store refused a beacon")
            return JSONResponse({"detail": "the store refused the beacon; a tierscope bug"}, 500, cors)
        return JSONResponse({"experiences": len(experiences), "errors": len(errors)}, headers=cors)
    except _Refusal as refusal:
        if refusal.status == 503 and not refusal.retry:
            refusal.retry = _retry(ctx)
        return _refused(refusal, cors)
    finally:
        ctx.budget.give_back(reader.held)


def _retry(ctx: RumContext) -> float:
    return math.ceil(ctx.settings.retry_after.total_seconds())


async def _read(ctx: RumContext, request: Request, reader: BodyReader) -> Beacon:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _MEDIA:
        raise _Refusal(415, "unsupported Content-Type: send text/plain or application/json", "content-type")
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise _Refusal(415, f"unsupported Content-Encoding {encoding[:40]!r}: send gzip or none")
    limit = ctx.settings.rum_max_body_size
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refusal(413, f"beacon of {declared} bytes is over the limit of {limit} bytes")
    try:
        body = await reader.read(request.stream(), gzip=encoding == "gzip")
    except BodyTooLarge:
        raise _Refusal(413, f"beacon is over the limit of {limit} bytes") from None
    except BadEncoding as exc:
        raise _Refusal(400, str(exc), "body") from None
    except Saturated:
        raise _Refusal(503, "the collector is saturated; retry later") from None
    except BodyTimeout as exc:
        raise _Refusal(408, str(exc), "body") from None
    except ClientDisconnect:
        # A page closed while its last beacon was on the way: nobody waits for the answer.
        raise _Refusal(400, "the client went away before the beacon arrived", "body") from None
    try:
        return parse_beacon(body)
    except ValidationError as exc:  # before ValueError: it is one
        first = exc.errors()[0]
        where = _location(first["loc"])
        raise _Refusal(400, f"{where}: {first['msg']}" if where else first["msg"], where or "body") from None
    except ValueError as exc:
        raise _Refusal(400, f"the body is not JSON: {exc}", "body") from None


def _location(parts: tuple[int | str, ...]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("page_load", "request", "error"):
            continue  # pydantic names the union member; the index already says which item
        else:
            text += ("." if text else "") + str(part)
    return text


@router.get("/rum.js", summary="The RUM script (plain JavaScript)", response_class=Response)
async def script(request: Request) -> Response:
    ctx: RumContext = request.app.state.rum
    plain, packed = ctx.script
    headers = {
        "Cache-Control": "public, max-age=300",
        "Vary": "Accept-Encoding",
        "Access-Control-Allow-Origin": "*",
        "X-Content-Type-Options": "nosniff",
    }
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(packed, media_type="text/javascript", headers={**headers, "Content-Encoding": "gzip"})
    return Response(plain, media_type="text/javascript", headers=headers)
