"""T-12 at scale: a cardinality flood and absurd timestamps against a real collector.

One service sends 10,000 traces, each with a span name and a route of its own
and a database call on a table of its own. What a user relies on: the store
does not grow a business transaction per name or a component row per table
(the caps hold, the overflow lands in ``_other`` and is counted, nothing is
lost from the totals), and spans with times far in the past or future are
rejected one by one instead of each creating a partition of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.processing.naming import Rules
from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.figures import tally

NAMES = 10_000
BATCH = 1_000  # traces per request (2,000 spans, about 0.4 MB)
TOP = 20  # TIERSCOPE_TOP_COMPONENTS, its default
MS = 1_000_000
SERVICE = "flood-web"


def letters(number: int) -> str:
    """A name part without digits (a number in a route or SQL would be collapsed)."""
    return "".join(chr(97 + int(digit)) for digit in str(number))


def query(dsn: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def partitions(dsn: str) -> int:
    """Partitions of the tables that grow with traffic (store/partitions.py)."""
    rows = query(
        dsn,
        """SELECT count(*) FROM pg_inherits
           WHERE inhparent IN ('spans'::regclass, 'trace_summaries'::regclass)""",
    )
    return int(rows[0][0])


def trace(index: int, start_ns: int) -> list[Span]:
    route = f"/items/{letters(index)}"
    root = otlp.span(
        f"GET {route}",
        kind=Span.SPAN_KIND_SERVER,
        start_ns=start_ns,
        duration_ms=20,
        attributes={"http.request.method": "GET", "http.route": route},
    )
    call = otlp.span(
        "SELECT",
        kind=Span.SPAN_KIND_CLIENT,
        trace_id=root.trace_id,
        parent_span_id=root.span_id,
        start_ns=start_ns + MS,
        duration_ms=5,
        attributes={
            "db.system": "postgresql",
            "db.statement": f"SELECT * FROM t_{letters(index)} WHERE id = 7",  # noqa: S608 (telemetry text)
            "server.address": "db1",
        },
    )
    return [root, call]


def send(collector: CollectorProcess, spans: list[Span]) -> ExportTraceServiceResponse:
    body = otlp.request(spans, service=SERVICE).SerializeToString()
    response = otlp.post(collector.url, collector.credentials()["ingest_key"], body)
    assert response.status_code == 200, response.text
    return ExportTraceServiceResponse.FromString(response.content)


@pytest.fixture(scope="module")
def flooded(collector_factory: Callable[..., CollectorProcess]) -> CollectorProcess:
    collector = collector_factory(TIERSCOPE_SETTLE_DELAY="1s", TIERSCOPE_PROCESSING_INTERVAL="200ms")
    dsn = collector.database_url
    assert dsn
    start = time.time_ns() - 5_000 * MS
    for first in range(0, NAMES, BATCH):
        spans = [span for index in range(first, first + BATCH) for span in trace(index, start + index * 1000)]
        assert not send(collector, spans).HasField("partial_success")
    done = "SELECT count(*) FROM trace_summaries WHERE service = %s"
    deadline = time.monotonic() + 60
    while query(dsn, done, SERVICE) != [(NAMES,)]:
        assert time.monotonic() < deadline, f"processed {query(dsn, done, SERVICE)} of {NAMES} traces"
        time.sleep(0.5)
    return collector


def test_ten_thousand_names_for_one_service_keep_the_transaction_cap_and_count_the_rest_in_other(
    flooded: CollectorProcess,
) -> None:
    dsn = flooded.database_url
    cap = Rules.default().max_per_service
    names = dict(
        query(dsn, "SELECT bt, count(*) FROM trace_summaries WHERE service = %s GROUP BY bt", SERVICE)
    )
    assert names.pop("_other") == NAMES - cap
    assert len(names) == cap
    assert set(names.values()) == {1}
    known = query(dsn, "SELECT count(*) FROM business_transactions WHERE service = %s", SERVICE)
    assert known == [(cap + 1,)], "the cap's names and _other, no more"
    overflow = "SELECT overflow FROM business_transactions WHERE service = %s AND name = '_other'"
    assert query(dsn, overflow, SERVICE) == [(NAMES - cap,)]
    # Every call is in the rollups once: the cap moves calls, it drops none.
    calls = "SELECT sum(calls)::int8 FROM bt_rollups WHERE resolution = 'minute' AND service = %s"
    assert query(dsn, calls, SERVICE) == [(NAMES,)]
    tally("T-12").note(
        span_names_sent=NAMES, transactions_kept=cap, in_other=NAMES - cap, calls_in_rollups=NAMES
    )


def test_ten_thousand_tables_keep_the_component_cap_per_transaction_and_bucket(
    flooded: CollectorProcess,
) -> None:
    dsn = flooded.database_url
    cap = Rules.default().max_per_service
    groups = query(
        dsn,
        """SELECT resolution, bucket, bt, tier,
                  count(*) FILTER (WHERE component <> '_other'),
                  coalesce(sum(calls) FILTER (WHERE component = '_other'), 0)::int8,
                  sum(calls)::int8
           FROM component_rollups WHERE service = %s
           GROUP BY resolution, bucket, bt, tier""",
        SERVICE,
    )
    rows = dict(
        query(
            dsn, "SELECT resolution, count(*) FROM component_rollups WHERE service = %s GROUP BY 1", SERVICE
        )
    )
    for resolution in ("minute", "hour", "day"):
        mine = [group for group in groups if group[0] == resolution]
        assert max(named for *_, named, _, _ in mine) <= TOP, f"at most the top {TOP} named per group"
        db = [group for group in mine if group[3] == "db"]
        assert sum(total for *_, total in db) == NAMES, f"every database call counted once ({resolution})"
        # The _other transaction's 9,500 tables (a minute boundary may split
        # them over two buckets): at most TOP named per bucket, the rest summed
        # in the _other component, nothing dropped.
        other = [group for group in db if group[2] == "_other"]
        assert other
        assert sum(total for *_, total in other) == NAMES - cap
        in_other = sum(summed for *_, summed, _ in other)
        assert in_other >= NAMES - cap - TOP * len(other), f"{in_other} calls in the _other component"
        # Rows: each named transaction's one trace (its app and db rows), and
        # per bucket of _other its app row, TOP named tables and _other.
        assert rows[resolution] <= 2 * cap + len(other) * (TOP + 2), rows
    tally("T-12").note(tables_sent=NAMES, component_rows=rows)


def test_spans_with_absurd_times_are_rejected_and_create_no_partition(flooded: CollectorProcess) -> None:
    dsn = flooded.database_url
    before = partitions(dsn)
    now = time.time_ns()
    day = 86_400 * 10**9
    absurd = {
        "the epoch": 0,
        "one nanosecond": 1,
        "in 2262": 2**63 - 10**12,
        "a year ahead": now + 365 * day,
        "an hour ahead": now + 3_600 * 10**9,
        "ten years ago": now - 3_650 * day,
        "a week ago": now - 7 * day,
    }
    spans = [otlp.span(f"GET /absurd/{letters(i)}", start_ns=at) for i, at in enumerate(absurd.values())]
    good = otlp.span("GET /absurd/fine", start_ns=now - 10**9)
    answer = send(flooded, [*spans, good])
    assert answer.partial_success.rejected_spans == len(absurd), answer
    stored = "SELECT name FROM spans WHERE name LIKE 'GET /absurd/%%'"
    assert query(dsn, stored) == [("GET /absurd/fine",)]
    assert partitions(dsn) == before, "no partition created for a rejected time"
    tally("T-12").count(time_cases=len(absurd), spans_rejected=len(absurd), spans_stored=1)
    tally("T-12").note(partitions_before_after=f"{before}, {partitions(dsn)}")
