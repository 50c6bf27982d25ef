"""A trace's entry, its time per tier, where its error began."""

from __future__ import annotations

import itertools

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.collector.tiers import TIERS
from tierscope.processing.assemble import covered, self_times, summarize
from tierscope.store.processing import SpanRow
from tierscope.testing.batches import kv

_ids = itertools.count(1)
TRACE = b"t" * 16


def row(
    name: str,
    start: int,
    duration: int,
    *,
    parent: SpanRow | None = None,
    kind: int = 1,
    tier: str = "app",
    service: str = "erp-api",
    status: int = 0,
    component: str | None = None,
    peer: str | None = None,
    attributes: dict | None = None,
) -> SpanRow:
    span_id = next(_ids).to_bytes(8, "big")
    pb = None
    if kind in (2, 5) or parent is None:
        message = Span(name=name)
        message.attributes.extend(kv(k, v) for k, v in (attributes or {}).items())
        pb = message.SerializeToString()
    return SpanRow(
        1,
        TRACE,
        span_id,
        parent.span_id if parent else None,
        start,
        duration,
        service,
        name,
        kind,
        tier,
        component,
        peer,
        status,
        7,
        0,
        pb,
    )


def tiers(summary_tier_us: list[int]) -> dict[str, int]:
    return {tier: us for tier, us in zip(TIERS, summary_tier_us, strict=True) if us}


def test_sequential_children_leave_the_parent_the_gaps() -> None:
    root = row("POST /invoices", 0, 1000, kind=2)
    spans = [
        root,
        row("q1", 100, 200, parent=root, kind=3, tier="db"),
        row("q2", 400, 300, parent=root, kind=3, tier="db"),
    ]
    assert self_times(spans) == [500, 200, 300]
    assert tiers(summarize(spans).tier_us) == {"app": 500, "db": 500}


def test_concurrent_children_are_counted_once() -> None:
    root = row("GET /report", 0, 120, kind=2)
    spans = [
        root,
        row("a", 10, 100, parent=root, kind=3, tier="db"),
        row("b", 10, 100, parent=root, kind=3, tier="db"),
    ]
    assert self_times(spans)[0] == 20  # not 120 - 200
    assert tiers(summarize(spans).tier_us) == {"app": 20, "db": 200}


def test_a_child_outliving_its_parent_leaves_no_negative_time() -> None:
    root = row("POST /orders", 0, 100, kind=2)
    spans = [root, row("async", 50, 500, parent=root, kind=4, tier="queue")]
    assert self_times(spans) == [50, 500]
    assert covered(0, 100, [(50, 550)]) == 50
    assert covered(0, 100, [(200, 300)]) == 0


def test_the_entry_is_the_first_server_span_even_under_a_browser() -> None:
    page = row("documentLoad", 0, 3000, tier="browser", service="crm-browser")
    fetch = row("GET /api/leads", 100, 2000, parent=page, kind=3, tier="network", service="crm-browser")
    server = row(
        "GET /api/leads",
        300,
        1500,
        parent=fetch,
        kind=2,
        service="crm-web",
        attributes={"http.route": "/api/leads", "http.request.method": "GET"},
    )
    summary = summarize([page, fetch, server])
    assert summary.service == "crm-web"
    assert summary.duration_us == 1500
    assert summary.entry_attributes["http.route"] == "/api/leads"
    assert tiers(summary.tier_us) == {"browser": 1000, "network": 500, "app": 1500}


def test_an_error_begins_at_the_deepest_failing_span() -> None:
    root = row("POST /invoices/{id}/post", 0, 1000, kind=2, status=2)
    call = row("POST", 100, 600, parent=root, kind=3, tier="external", status=2, component="credit:8081")
    remote = row("POST /check", 150, 500, parent=call, kind=2, service="credit", status=2)
    query = row("SELECT", 200, 300, parent=remote, kind=3, tier="db", status=2, component="SELECT score")
    summary = summarize([root, call, remote, query])
    assert summary.error
    assert (summary.error_tier, summary.error_component) == ("db", "SELECT score")
    # The call is answered by a traced service; the query names no peer, so no edge.
    assert [(e.source, e.target, e.target_kind) for e in summary.edges] == [("erp-api", "credit", "service")]


def test_a_handled_child_error_does_not_fail_the_transaction() -> None:
    root = row("GET /leads", 0, 1000, kind=2, attributes={"http.response.status_code": 200})
    retried = row("SELECT", 100, 100, parent=root, kind=3, tier="db", status=2)
    summary = summarize([root, retried])
    assert not summary.error
    assert summary.error_tier is None
    failed = summarize([row("GET /x", 0, 10, kind=2, attributes={"http.response.status_code": 503})])
    assert failed.error


def test_components_and_edges() -> None:
    root = row("GET /stock", 0, 1000, kind=2)
    db = row(
        "SELECT",
        100,
        200,
        parent=root,
        kind=3,
        tier="db",
        component="SELECT qty FROM stock",
        peer="postgresql@db1:5432/erp",
    )
    summary = summarize([root, db])
    assert ("db", "SELECT qty FROM stock", 200, 200, False) in summary.components
    assert [(e.target, e.target_kind) for e in summary.edges] == [("postgresql@db1:5432/erp", "db")]
