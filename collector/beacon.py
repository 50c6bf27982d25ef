"""The schema of a RUM beacon, and the rows it becomes.

Every field is bounded (lengths, ranges, item counts) and unknown fields are
refused, so a bad beacon gets a 400 that names its first bad field. The script
(``static/rum.js``) and this schema ship together.

Times in ``timing`` are milliseconds from the experience's start (the
navigation's start, or the moment ``fetch``/``send`` was called), as the
browser's Navigation and Resource Timing give them.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from tierscope.config import Settings
from tierscope.processing.naming import collapse_ids
from tierscope.store.rum import ErrorRow, ExperienceRow

MAX_ITEMS = 200
_HOUR_MS = 3_600_000.0

Id = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Token = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Name = Annotated[str, Field(min_length=1, max_length=256)]
Url = Annotated[str, Field(max_length=2048)]
Millis = Annotated[float, Field(ge=0, le=_HOUR_MS, allow_inf_nan=False)]
Epoch = Annotated[float, Field(gt=0, lt=1e14, allow_inf_nan=False)]  # ms since 1970
TraceParent = Annotated[str, Field(pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timing(_Strict):
    fetchStart: Millis = 0.0
    requestStart: Millis = 0.0
    responseStart: Millis = 0.0
    responseEnd: Millis
    domInteractive: Millis | None = None
    domContentLoaded: Millis | None = None
    loadEnd: Millis | None = None
    end: Millis  # when the experience ended: load event end, or the response's end


class Vitals(_Strict):
    lcp: Millis | None = None
    fcp: Millis | None = None
    ttfb: Millis | None = None
    inp: Millis | None = None
    cls: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)] | None = None


class PageLoad(_Strict):
    type: Literal["page_load"]
    id: Id
    start: Epoch
    name: Name
    url: Url
    status: Annotated[int, Field(ge=0, le=999)] | None = None
    traceparent: TraceParent | None = None
    final: bool = False
    timing: Timing
    vitals: Vitals = Vitals()


class RequestItem(_Strict):
    type: Literal["request"]
    id: Id
    page_view: Id
    start: Epoch
    name: Name
    url: Url
    method: Annotated[str, Field(max_length=16, pattern=r"^[A-Za-z]+$")]
    status: Annotated[int, Field(ge=0, le=999)]
    traceparent: TraceParent | None = None
    timing: Timing


class ScriptError(_Strict):
    type: Literal["error"]
    id: Id
    page_view: Id
    time: Epoch
    page: Name
    message: Annotated[str, Field(max_length=1024)]
    source: Annotated[str, Field(max_length=2048)] | None = None
    stack: Annotated[str, Field(max_length=8192)] | None = None


Item = Annotated[PageLoad | RequestItem | ScriptError, Field(discriminator="type")]


class Beacon(_Strict):
    v: Literal[1]
    session: Token | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    site: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    items: Annotated[list[Item], Field(min_length=1, max_length=MAX_ITEMS)]


_BEACON = TypeAdapter(Beacon)


def parse_beacon(body: bytes) -> Beacon:
    """Raises ValueError (not JSON) or pydantic's ValidationError (not a beacon)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from None
    return _BEACON.validate_python(data)


def hash_user(user: str | None) -> str | None:
    """The same digest processing gives ``enduser.id`` on traces, so a user's
    experiences and traces carry one value; the id itself is never stored."""
    if not user:
        return None
    return hashlib.sha256(user.encode()).hexdigest()[:16]


_BROWSERS = [
    ("Edge", re.compile(r"Edg/(\d+)")),
    ("Firefox", re.compile(r"Firefox/(\d+)")),
    ("Chrome", re.compile(r"(?:Chrome|Chromium|HeadlessChrome)/(\d+)")),
    ("Safari", re.compile(r"Version/(\d+).*Safari/")),
]


def browser_of(user_agent: str) -> str | None:
    """A browser family and major version: few distinct values, never the whole string."""
    for family, pattern in _BROWSERS:
        match = pattern.search(user_agent[:512])
        if match:
            return f"{family} {match.group(1)}"
    return "other" if user_agent else None


# A query in "https://erp/app.js?v=3&token=x:10:5", keeping the line and column.
_QUERY = re.compile(r"[?#][^:]*")


def _path(url: str) -> str:
    """The URL without query or fragment (they may carry tokens)."""
    return url.split("#", 1)[0].split("?", 1)[0][:2048]


def _trace(traceparent: str | None) -> bytes | None:
    if not traceparent:
        return None
    trace = bytes.fromhex(traceparent[3:35])
    return None if trace == bytes(16) else trace


def rows_of(
    beacon: Beacon, *, site: str | None, now: float, settings: Settings, user_agent: str = ""
) -> tuple[list[ExperienceRow], list[ErrorRow]]:
    """The rows a beacon becomes. Raises ValueError for times out of range."""
    oldest = (now - settings.span_max_age.total_seconds()) * 1000
    newest = (now + settings.span_max_future.total_seconds()) * 1000
    browser = browser_of(user_agent)
    user = hash_user(beacon.user)
    experiences: list[ExperienceRow] = []
    errors: list[ErrorRow] = []
    for index, item in enumerate(beacon.items):
        moment = item.time if isinstance(item, ScriptError) else item.start
        if not oldest <= moment <= newest:
            raise ValueError(f"items[{index}].{'time' if isinstance(item, ScriptError) else 'start'}")
        when = datetime.fromtimestamp(moment / 1000, UTC)
        if isinstance(item, ScriptError):
            errors.append(
                ErrorRow(
                    item.id, item.page_view, when, collapse_ids(item.page)[:256], item.message,
                    item.source and _QUERY.sub("", item.source), item.stack, beacon.session, site,
                )
            )  # fmt: skip
            continue
        failed = item.status is not None and (item.status == 0 or item.status >= 500)
        experiences.append(
            ExperienceRow(
                id=item.id,
                kind=item.type,
                start_time=when,
                page=collapse_ids(item.name)[:256],
                url=_path(item.url),
                method=item.method.upper() if isinstance(item, RequestItem) else "GET",
                status=item.status,
                site=site,
                session_id=beacon.session,
                user_hash=user,
                browser=browser,
                trace_id=_trace(item.traceparent),
                timing=item.timing.model_dump(exclude_none=True),
                vitals=item.vitals.model_dump(exclude_none=True) if isinstance(item, PageLoad) else {},
                final=isinstance(item, PageLoad) and item.final,
                duration_ms=item.timing.end,
                outcome="error" if failed else "ok",
            )
        )
    return experiences, errors
