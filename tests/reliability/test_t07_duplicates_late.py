"""T-07: duplicates, reordering and late data do not double-count.

One tenant gets every request twice, in shuffled order, some of them about
traces from ten minutes ago, and later a few requests a third time after their
traces were processed. Another tenant of the same collector gets the same
spans once each, in order. The store must hold each span once, and the RED
rollups (calls, errors, durations, latency histograms, per-tier time, service
map edges) of the two tenants must be identical.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import psycopg
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.e2e.test_processing import MS, two_service_trace, wait_for
from tests.e2e.test_tenants import make_tenant
from tests.reliability.conftest import Figures
from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess

TRACES = 20
LATE = 8


def rollups(dsn: str, tenant_id: int) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return {
            "bt": conn.execute(
                """SELECT resolution, bucket, service, bt, calls, errors, duration_sum_us, duration_max_us,
                          apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_latency
                   FROM bt_rollups WHERE tenant_id = %s ORDER BY 1, 2, 3, 4""",
                (tenant_id,),
            ).fetchall(),
            "components": conn.execute(
                """SELECT resolution, bucket, service, bt, tier, component, calls, errors, self_us,
                          duration_us
                   FROM component_rollups WHERE tenant_id = %s ORDER BY 1, 2, 3, 4, 5, 6""",
                (tenant_id,),
            ).fetchall(),
            "edges": conn.execute(
                """SELECT resolution, bucket, source, target, target_kind, calls, errors, duration_sum_us,
                          latency FROM edge_rollups WHERE tenant_id = %s ORDER BY 1, 2, 3, 4, 5""",
                (tenant_id,),
            ).fetchall(),
        }


def stored(dsn: str, tenant_id: int) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM spans WHERE tenant_id = %(t)s),
                      (SELECT count(DISTINCT (trace_id, span_id)) FROM spans WHERE tenant_id = %(t)s),
                      (SELECT count(*) FROM trace_summaries WHERE tenant_id = %(t)s)""",
            {"t": tenant_id},
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_duplicated_shuffled_and_late_requests_count_once(
    collector_factory: Callable[..., CollectorProcess], figures: Callable[[str], Figures]
) -> None:
    # A settle delay longer than sending everything takes, so that both tenants'
    # traces are processed whole and their rollups can be compared exactly.
    collector = collector_factory(
        TIERSCOPE_SETTLE_DELAY="8s", TIERSCOPE_PROCESSING_INTERVAL="200ms", TIERSCOPE_ALERTING="false"
    )
    dsn = collector.database_url
    assert dsn
    messy_key = collector.credentials()["ingest_key"]
    clean = make_tenant(collector, "clean")
    with psycopg.connect(dsn) as conn:
        ids = dict(conn.execute("SELECT name, id FROM tenants").fetchall())
    messy_id, clean_id = ids["default"], ids["clean"]

    rnd = random.Random(7)
    minute = (time.time_ns() // (60 * 10**9) - 2) * 60 * 10**9
    requests: list[tuple[str, list[Span]]] = []
    for index in range(TRACES):
        start = minute - (10 * 60 * 10**9 if index < LATE else 0) + rnd.randint(0, 50_000) * MS
        trace = two_service_trace(start, rnd.randbytes(16), route=rnd.choice(["/leads", "/orders"]))
        requests.extend(trace.items())
    bodies = [
        (len(spans), otlp.request(spans, service=service).SerializeToString()) for service, spans in requests
    ]

    for _count, body in bodies:
        assert otlp.post(collector.url, clean.ingest_key, body).status_code == 200
    # Shuffled within groups of three traces: each request twice, the called
    # service's half often before the caller's, but a trace's parts within a
    # few seconds of each other, as real retries are (a trace whose parts
    # arrive further apart than the settle delay is processed in two parts
    # by design, which is not what this test is about).
    for group in range(0, len(bodies), 6):
        messy = bodies[group : group + 6] * 2
        rnd.shuffle(messy)
        for _count, body in messy:
            assert otlp.post(collector.url, messy_key, body).status_code == 200

    wait_for(lambda: stored(dsn, messy_id)[2] == TRACES and stored(dsn, clean_id)[2] == TRACES, 90)
    time.sleep(2)  # a cycle more: nothing else may arrive
    first = rollups(dsn, messy_id)
    third = rnd.sample(bodies, 10)
    for _count, body in third:  # after processing: a third copy
        assert otlp.post(collector.url, messy_key, body).status_code == 200
    time.sleep(3)

    spans = 5 * TRACES
    assert stored(dsn, messy_id) == (spans, spans, TRACES), "rows = distinct spans"
    assert stored(dsn, clean_id) == (spans, spans, TRACES)
    messy_rollups = rollups(dsn, messy_id)
    assert messy_rollups == first, "late duplicates change no rollup"
    assert messy_rollups == rollups(dsn, clean_id), "rollups are not double-counted"
    calls = sum(row[4] for row in messy_rollups["bt"] if row[0] == "minute" and row[2] == "crm-web")
    assert calls == TRACES
    figures("T-07").record(
        fault=f"{TRACES} traces ({LATE} ten minutes late) sent twice shuffled, 10 requests a third "
        "time after processing",
        held="rows = distinct spans; rollups identical to a tenant that got each span once",
        sent=2 * spans + sum(count for count, _ in third),
        acknowledged=spans,
        stored=stored(dsn, messy_id)[0],
        lost=0,
        duplicates=stored(dsn, messy_id)[0] - stored(dsn, messy_id)[1],
        bt_calls=calls,
    )
