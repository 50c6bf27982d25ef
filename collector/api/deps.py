"""Dependencies shared by the query API routers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import HTTPException, Request

from tierscope.collector.auth import AuthError, KeyVerifier
from tierscope.config import parse_duration
from tierscope.store.tenants import KeyInfo

_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2262, 1, 1, tzinfo=UTC)
MAX_WINDOW = timedelta(days=800)


# Methods that only read. Any other method changes something and needs an
# editor: deciding by method rather than per endpoint means a new write endpoint
# that uses api_tenant is guarded without anyone remembering to.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def required_role(method: str) -> str:
    return "viewer" if method.upper() in READ_METHODS else "editor"


async def _verified(request: Request, role: str) -> KeyInfo:
    verifier: KeyVerifier = request.app.state.verifier
    try:
        return await verifier.verify(request.headers.get("authorization"), "api", role)
    except AuthError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="tierscope"'} if exc.status == 401 else None
        raise HTTPException(exc.status, str(exc), headers=headers) from None


async def api_tenant(request: Request) -> KeyInfo:
    """The caller's tenant, from an API token; 401/403 otherwise.

    Reads need a viewer token, writes (any other method) an editor token. A
    store outage while checking the token surfaces as StoreUnavailable, which
    the app answers with 503 and Retry-After.
    """
    return await _verified(request, required_role(request.method))


async def api_admin(request: Request) -> KeyInfo:
    """The caller's tenant, from an admin token (keys, retention, purges)."""
    return await _verified(request, "admin")


def parse_time(value: str | None, now: datetime, default: datetime) -> datetime:
    """An instant from ``2026-11-24T10:00:00Z``, unix seconds, ``now``, or a
    duration meaning "that long ago" (``15m``, ``2h``, ``7d``)."""
    if value is None or value == "":
        return default
    try:
        moment = _parse_time(value.strip(), now)
    except OverflowError:
        moment = None
    if moment is None or not _EARLIEST <= moment < _LATEST:
        raise ValueError(f"{value!r} is not a time between 1970 and 2262")
    return moment


def _parse_time(text: str, now: datetime) -> datetime:
    if text == "now":
        return now
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2026-11-24T10:00:00Z), unix seconds, "
            "'now', or a duration ago such as 15m"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def time_window(
    since: str | None, until: str | None, default: timedelta, limit: timedelta = MAX_WINDOW
) -> tuple[datetime, datetime]:
    """``[since, until)`` from query parameters (400 when they make no sense)."""
    now = datetime.now(UTC)
    try:
        start = parse_time(since, now, now - default)
        end = parse_time(until, now, now)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    if end <= start:
        raise HTTPException(400, "the end of the window must be after its start")
    if end - start > limit:
        raise HTTPException(400, f"the window may be at most {limit.days} days")
    return start, end


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
