"""One trace, assembled: its entry, its time per tier, where an error began.

Everything here is pure: spans in (as read from the store), a
:class:`TraceSummary` out. The processor decides which traces are ready and
writes the results.

Time per tier is *self time*: a span's duration minus the time covered by its
children, so nothing is counted twice. Children that run concurrently are
merged first (the union of their intervals, clipped to the parent), so two
parallel 100 ms queries under a 120 ms request leave the request 20 ms of its
own, not -80 ms. Self time is never negative.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tierscope.collector.tiers import TIERS
from tierscope.collector.wire import AttributeMap
from tierscope.store.processing import SpanRow

TIER_INDEX = {tier: index for index, tier in enumerate(TIERS)}
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5
ERROR = 2


@dataclass
class Edge:
    """A call seen in a trace: from a service to a service, database or external system."""

    source: str
    target: str
    target_kind: str  # service, db, cache, external, queue
    duration_us: int
    error: bool


@dataclass
class TraceSummary:
    tenant_id: int
    trace_id: bytes
    start_us: int
    duration_us: int
    service: str
    entry_name: str
    entry_kind: int
    entry_attributes: Mapping[str, Any]
    error: bool
    error_tier: str | None  # where the error began: the tier of the deepest failing span
    error_component: str | None
    tier_us: list[int]
    span_count: int
    user_hash: str | None = None
    session_id: str | None = None
    site: str | None = None
    # (tier, component, self_us, duration_us, error) per span that has a component
    components: list[tuple[str, str, int, int, bool]] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def entry_span(spans: Sequence[SpanRow]) -> SpanRow:
    """The span a business transaction is named after: the first server span
    (under a browser's spans too), else the first consumer span (a job), else
    the earliest root."""
    for kinds in ((SERVER,), (CONSUMER,)):
        candidates = [s for s in spans if s.kind in kinds]
        if candidates:
            return min(candidates, key=lambda s: (s.start_us, s.span_id))
    roots = [s for s in spans if not s.parent_span_id] or list(spans)
    return min(roots, key=lambda s: (s.start_us, s.span_id))


def covered(parent_start: int, parent_end: int, children: Iterable[tuple[int, int]]) -> int:
    """How much of ``[parent_start, parent_end)`` the children's intervals cover together."""
    total = 0
    current_start = current_end = None
    for start, end in sorted(children):
        start, end = max(start, parent_start), min(end, parent_end)
        if end <= start:
            continue
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        elif end > current_end:
            current_end = end
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total


def self_times(spans: Sequence[SpanRow]) -> list[int]:
    """Each span's self time (µs), in the order given."""
    children: dict[bytes, list[tuple[int, int]]] = {}
    for span in spans:
        if span.parent_span_id:
            children.setdefault(span.parent_span_id, []).append(
                (span.start_us, span.start_us + span.duration_us)
            )
    result = []
    for span in spans:
        kids = children.get(span.span_id)
        if not kids:
            result.append(span.duration_us)
            continue
        end = span.start_us + span.duration_us
        result.append(max(0, span.duration_us - covered(span.start_us, end, kids)))
    return result


def _depths(spans: Sequence[SpanRow]) -> dict[bytes, int]:
    parents = {s.span_id: s.parent_span_id for s in spans}
    depths: dict[bytes, int] = {}
    for span in spans:
        depth, seen, current = 0, set(), span.parent_span_id
        while current and current in parents and current not in seen:
            seen.add(current)
            depth += 1
            current = parents[current]
        depths[span.span_id] = depth
    return depths


def _hash_user(user: object) -> str | None:
    if user in (None, ""):
        return None
    return hashlib.sha256(str(user).encode()).hexdigest()[:16]


def summarize(
    spans: Sequence[SpanRow], component_of: Callable[[SpanRow], str | None] = lambda span: span.component
) -> TraceSummary:
    """Summarize one complete trace (its spans in any order, no duplicates).

    ``component_of`` names the component a span's time is reported under (the
    processor normalizes SQL statements there).
    """
    entry = entry_span(spans)
    own = self_times(spans)
    tier_us = [0] * len(TIERS)
    components: list[tuple[str, str, int, int, bool]] = []
    # The traced service that answered each call, if any.
    callees = {s.parent_span_id: s for s in spans if s.parent_span_id and s.kind in (SERVER, CONSUMER)}
    edges: list[Edge] = []
    for span, self_us in zip(spans, own, strict=True):
        tier_us[TIER_INDEX.get(span.tier, TIER_INDEX["app"])] += self_us
        span_failed = span.status_code == ERROR
        component = component_of(span)
        if component:
            components.append((span.tier, component, self_us, span.duration_us, span_failed))
        if span.kind in (CLIENT, PRODUCER) or span.tier in ("db", "cache"):
            edges.append(_edge(span, callees.get(span.span_id), span_failed))
    attrs = entry_attributes(entry)
    failed_entry = failed(entry, attrs)
    error_tier, error_component = error_origin(spans, entry) if failed_entry else (None, None)
    user_hash, session_id, site = user_fields(attrs)
    return TraceSummary(
        tenant_id=entry.tenant_id,
        trace_id=entry.trace_id,
        start_us=entry.start_us,
        duration_us=entry.duration_us,
        service=entry.service,
        entry_name=entry.name or "",
        entry_kind=entry.kind,
        entry_attributes=attrs,
        error=failed_entry,
        error_tier=error_tier,
        error_component=error_component,
        tier_us=tier_us,
        span_count=len(spans),
        user_hash=user_hash,
        session_id=session_id,
        site=site,
        components=components,
        edges=[e for e in edges if e.target],
    )


def entry_attributes(entry: SpanRow) -> Mapping[str, Any]:
    """The entry span's attributes, read lazily from its stored bytes."""
    return AttributeMap(entry.span_pb) if entry.span_pb else {}


def failed(entry: SpanRow, attrs: Mapping[str, Any]) -> bool:
    """Whether the transaction failed: the outcome is what the entry answered,
    so a child's error the application handled (a retried query, a fallback)
    does not fail it."""
    status = attrs.get("http.response.status_code", attrs.get("http.status_code"))
    return entry.status_code == ERROR or (isinstance(status, int) and status >= 500)


def error_origin(spans: Sequence[SpanRow], entry: SpanRow) -> tuple[str, str]:
    """Where a failed transaction's error began: the deepest failing span."""
    depths = _depths(spans)
    failing = [s for s in spans if s.status_code == ERROR] or [entry]
    origin = max(failing, key=lambda s: (depths[s.span_id], s.start_us))
    return origin.tier, origin.component or origin.name


def user_fields(attrs: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(hashed user, session, site) when the entry span carries them."""
    user = _hash_user(attrs.get("enduser.id") or attrs.get("user.id"))
    return user, _text(attrs.get("session.id")), _text(attrs.get("tierscope.site"))


def _text(value: object) -> str | None:
    return None if value in (None, "") else str(value)[:128]


def _edge(span: SpanRow, callee: SpanRow | None, failed: bool) -> Edge:
    # A call answered by another traced service points at that service.
    if callee is not None and callee.service != span.service:
        return Edge(span.service, callee.service, "service", span.duration_us, failed)
    kind = span.tier if span.tier in ("db", "cache", "queue") else "external"
    return Edge(span.service, span.peer or "", kind, span.duration_us, failed)
