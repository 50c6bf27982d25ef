"""Trace processing end to end: real collectors, a real processor, the query API."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import psutil
import psycopg
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families

from tierscope.collector.tiers import TIERS
from tierscope.config import Settings
from tierscope.processing import histogram
from tierscope.processing.naming import Rules
from tierscope.processing.processor import CycleReport, Processor
from tierscope.store import Database
from tierscope.store import processing as processing_store
from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess, tierscope_command

FAST = {"TIERSCOPE_SETTLE_DELAY": "1s", "TIERSCOPE_PROCESSING_INTERVAL": "200ms"}
MS = 1_000_000  # nanoseconds
SERVER, CLIENT = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "processing") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def query(dsn: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def summaries(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM trace_summaries")[0][0])


def api(collector: CollectorProcess, path: str, **params: object) -> dict:
    response = httpx.get(
        f"{collector.url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {collector.credentials()['api_token']}"},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def two_service_trace(
    start_ns: int, trace_id: bytes | None = None, route: str = "/leads"
) -> dict[str, list[Span]]:
    """crm-web POST /leads (1000 ms) -> INSERT (200 ms) and a call to erp-api
    (500 ms) -> erp-api POST /credit (400 ms) -> SELECT (200 ms)."""
    trace_id = trace_id or os.urandom(16)
    root = otlp.span(
        f"POST {route}",
        kind=SERVER,
        trace_id=trace_id,
        start_ns=start_ns,
        duration_ms=1000,
        attributes={"http.request.method": "POST", "http.route": route},
    )
    insert = otlp.span(
        "INSERT",
        kind=CLIENT,
        trace_id=trace_id,
        parent_span_id=root.span_id,
        start_ns=start_ns + 100 * MS,
        duration_ms=200,
        attributes={
            "db.system": "postgresql",
            "db.statement": "INSERT INTO crm_lead VALUES (1)",
            "server.address": "db1",
        },
    )
    call = otlp.span(
        "POST",
        kind=CLIENT,
        trace_id=trace_id,
        parent_span_id=root.span_id,
        start_ns=start_ns + 400 * MS,
        duration_ms=500,
        attributes={"url.full": "http://erp-api:8000/credit", "http.request.method": "POST"},
    )
    credit = otlp.span(
        "POST /credit",
        kind=SERVER,
        trace_id=trace_id,
        parent_span_id=call.span_id,
        start_ns=start_ns + 450 * MS,
        duration_ms=400,
        attributes={"http.request.method": "POST", "http.route": "/credit"},
    )
    select = otlp.span(
        "SELECT",
        kind=CLIENT,
        trace_id=trace_id,
        parent_span_id=credit.span_id,
        start_ns=start_ns + 500 * MS,
        duration_ms=200,
        attributes={
            "db.system": "postgresql",
            "db.statement": "SELECT score FROM credit WHERE id = 7",
            "server.address": "db2",
        },
    )
    return {"crm-web": [root, insert, call], "erp-api": [credit, select]}


def post(collector: CollectorProcess, spans: list[Span], service: str) -> None:
    post_trace(collector, {service: spans})


def post_trace(collector: CollectorProcess, trace: dict[str, list[Span]]) -> None:
    """Each service's spans under its own resource, in one request. Two requests
    could arrive further apart than a short settle delay on a busy machine, and the
    trace would be processed with one half: tests where the split is not the point
    send it whole."""
    body = otlp.request_of(trace).SerializeToString()
    response = otlp.post(collector.url, collector.credentials()["ingest_key"], body)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def processing(collector_factory: Callable[..., CollectorProcess]) -> CollectorProcess:
    return collector_factory(**FAST)


def test_a_trace_in_three_batches_from_two_services_out_of_order(
    collector_factory: Callable[..., CollectorProcess],
) -> None:
    processing = collector_factory(TIERSCOPE_PROCESSING="false")  # this test drives the processor
    dsn = processing.database_url
    assert dsn
    trace = two_service_trace(time.time_ns() - 5_000 * MS)
    crm, erp = trace["crm-web"], trace["erp-api"]
    post(processing, erp, "erp-api")  # the called service reports first
    time.sleep(0.5)
    post(processing, crm[:1], "crm-web")  # then the root
    time.sleep(0.5)
    post(processing, crm[1:], "crm-web")  # then the root's children
    trace_id = crm[0].trace_id
    arrivals = [
        row[0]
        for row in query(
            dsn, "SELECT DISTINCT received_at FROM spans WHERE trace_id = %s ORDER BY 1", trace_id
        )
    ]
    assert len(arrivals) == 3
    # Windows of at most 150 ms, taken once every batch has arrived: each batch
    # lands in a window of its own, and the trace is still receiving when the
    # first two are processed.
    settings = Settings(settle_delay=timedelta(seconds=1), processing_window=timedelta(milliseconds=150))
    time.sleep(1.2)

    async def process() -> list[CycleReport]:
        database = Database(dsn, pool_size=2, statement_timeout=timedelta(seconds=30))
        await database.open()
        try:
            processor = Processor(database, settings)
            reports = []
            for _ in range(1000):  # bounded: ~30 s of arrivals in 150 ms windows
                reports.append(await processor.cycle())
                if not reports[-1].behind:
                    return reports
            raise AssertionError("the processor did not catch up")
        finally:
            await database.close()

    reports = [r for r in asyncio.run(process()) if r.since is not None and r.until is not None]
    holding = [
        next(r for r in reports if r.since <= arrival < r.until)  # type: ignore[operator]
        for arrival in arrivals
    ]
    assert len({id(r) for r in holding}) == 3, "each batch in a window of its own"
    # The first two windows leave the trace for later; the third takes it,
    # reading the spans of the earlier batches back from the store.
    assert [(r.deferred, r.traces) for r in holding] == [(1, 0), (1, 0), (0, 1)]
    assert sum(r.traces for r in reports) == 1
    assert sum(r.late_spans for r in reports) == 0
    assert query(dsn, "SELECT count(*) FROM trace_summaries") == [(1,)]
    service, bt, duration, spans, tier_us = query(
        dsn,
        "SELECT service, bt, duration_us, span_count, tier_us FROM trace_summaries WHERE trace_id = %s",
        trace_id,
    )[0]
    assert (service, bt, duration, spans) == ("crm-web", "POST /leads", 1_000_000, 5)
    # app: 300 ms of the root + 200 ms of /credit; db: 200 + 200; external: 500 - 400 answered by erp-api
    assert dict(
        zip(
            ["browser", "network", "web", "app", "platform", "db", "cache", "queue", "external"],
            tier_us,
            strict=True,
        )
    ) == {
        "browser": 0,
        "network": 0,
        "web": 0,
        "app": 500_000,
        "platform": 0,
        "db": 400_000,
        "cache": 0,
        "queue": 0,
        "external": 100_000,
    }
    listed = api(processing, "/api/v1/transactions", service="crm-web", **{"from": "1h"})["transactions"]
    leads = next(t for t in listed if t["bt"] == "POST /leads")
    assert leads["count"] == 1
    assert leads["tier_ms"] == {"app": 500.0, "db": 400.0, "external": 100.0}
    assert leads["p50_ms"] == pytest.approx(1000, rel=0.02)
    edges = {(e["source"], e["target"]) for e in api(processing, "/api/v1/service-map")["edges"]}
    assert ("crm-web", "erp-api") in edges
    assert ("erp-api", "postgresql@db2") in edges
    components = api(processing, "/api/v1/transactions/components", bt="POST /leads", tier="db")["components"]
    assert {c["component"] for c in components} >= {
        "INSERT INTO crm_lead VALUES (?)",
        "SELECT score FROM credit WHERE id = ?",
    }


def test_each_tiers_p95_is_served_within_two_percent_of_numpy(processing: CollectorProcess) -> None:
    dsn = processing.database_url
    assert dsn
    rng = np.random.default_rng(3)
    count = 150
    start = time.time_ns() - 5_000 * MS
    db_us, app_us, spans = [], [], []
    for index in range(count):
        # Its own time (app) and, for four in five, a query (db) inside it.
        own_ms = float(rng.uniform(20, 400))
        query_ms = float(rng.lognormal(4, 0.7)) if rng.random() < 0.8 else 0.0
        root = otlp.span(
            "POST /tier-p95",
            kind=SERVER,
            start_ns=start + index * MS,
            duration_ms=own_ms + query_ms,
            attributes={"http.request.method": "POST", "http.route": "/tier-p95"},
        )
        spans.append(root)
        db = 0
        if query_ms:
            child = otlp.span(
                "SELECT",
                kind=CLIENT,
                trace_id=root.trace_id,
                parent_span_id=root.span_id,
                start_ns=root.start_time_unix_nano + 2 * MS,
                duration_ms=query_ms,
                attributes={"db.system": "postgresql", "db.statement": "SELECT 1", "server.address": "db1"},
            )
            spans.append(child)
            db = (child.end_time_unix_nano - child.start_time_unix_nano) // 1000
        db_us.append(db)
        app_us.append((root.end_time_unix_nano - root.start_time_unix_nano) // 1000 - db)
    post(processing, spans, "crm-web")
    done = "SELECT count(*) FROM trace_summaries WHERE bt = 'POST /tier-p95'"
    wait_for(lambda: query(dsn, done) == [(count,)])
    # Over every call, as tier_ms: the calls with no query count as 0 ms of db.
    exact = {
        "db": float(np.percentile(db_us, 95)) / 1000,
        "app": float(np.percentile(app_us, 95)) / 1000,
    }
    listed = api(processing, "/api/v1/transactions", service="crm-web", tier_p95="true", **{"from": "1h"})
    served = next(t for t in listed["transactions"] if t["bt"] == "POST /tier-p95")
    assert served["count"] == count
    assert served["tier_p95_ms"] == pytest.approx(exact, rel=0.02)
    means = {"db": np.mean(db_us) / 1000, "app": np.mean(app_us) / 1000}
    assert served["tier_ms"] == pytest.approx(means, abs=0.001)  # rounded to the microsecond
    plain = api(processing, "/api/v1/transactions", service="crm-web", **{"from": "1h"})["transactions"]
    assert "tier_p95_ms" not in next(t for t in plain if t["bt"] == "POST /tier-p95")
    series = api(processing, "/api/v1/transactions/series", bt="POST /tier-p95", step="1d", **{"from": "2d"})
    (busy,) = [point for point in series["points"] if point["count"]]
    assert busy["tier_p95_ms"] == pytest.approx(exact, rel=0.02)


def late_spans_metric(collector: CollectorProcess) -> float:
    """tierscope_processing_late_spans_total as /metrics shows it."""
    text = httpx.get(f"{collector.url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "tierscope_processing_late_spans_total"
    )


def test_a_late_span_is_counted_and_changes_nothing(processing: CollectorProcess) -> None:
    dsn = processing.database_url
    assert dsn
    trace = two_service_trace(time.time_ns() - 5_000 * MS, route="/late")
    post_trace(processing, trace)
    root = trace["crm-web"][0]
    wait_for(lambda: bool(query(dsn, "SELECT 1 FROM trace_summaries WHERE trace_id = %s", root.trace_id)))
    before = query(dsn, "SELECT sum(calls), sum(duration_sum_us) FROM bt_rollups WHERE bt = 'POST /late'")
    late_before = query(dsn, "SELECT sum(late_spans) FROM processing_progress")[0][0]
    metric_before = late_spans_metric(processing)
    straggler = otlp.span(
        "cache warmup",
        kind=CLIENT,
        trace_id=root.trace_id,
        parent_span_id=root.span_id,
        start_ns=root.start_time_unix_nano + 10 * MS,
        duration_ms=5,
    )
    post(processing, [straggler], "crm-web")
    wait_for(lambda: query(dsn, "SELECT sum(late_spans) FROM processing_progress")[0][0] == late_before + 1)
    assert (
        query(dsn, "SELECT sum(calls), sum(duration_sum_us) FROM bt_rollups WHERE bt = 'POST /late'")
        == before
    )
    # The metric counts it too (written by the shard process after its commit).
    wait_for(lambda: late_spans_metric(processing) == metric_before + 1, what="the late-span metric")


def test_business_transactions_beyond_the_cap_go_to_other(
    collector_factory: Callable[..., CollectorProcess],
) -> None:
    collector = collector_factory(**FAST)
    dsn = collector.database_url
    assert dsn
    rules = Rules.parse("settings:\n  max_per_service: 3\n")

    async def apply() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await processing_store.save_rules(conn, 1, rules.to_document(), "test")

    asyncio.run(apply())
    time.sleep(1)  # the processor reloads rules each cycle
    start = time.time_ns() - 5_000 * MS
    for index in range(5):
        span = otlp.span(
            f"GET /page{index}",
            kind=SERVER,
            start_ns=start,
            attributes={"http.request.method": "GET", "http.route": f"/page{chr(97 + index)}"},
        )
        post(collector, [span], "crm-web")
    wait_for(lambda: summaries(dsn) == 5)
    names = dict(query(dsn, "SELECT bt, count(*) FROM trace_summaries GROUP BY bt"))
    assert names.pop("_other") == 2
    assert len(names) == 3
    assert query(dsn, "SELECT overflow FROM business_transactions WHERE name = '_other'") == [(2,)]
    listed = {t["bt"]: t["count"] for t in api(collector, "/api/v1/transactions")["transactions"]}
    assert listed["_other"] == 2
    # `tierscope bt list` shows how many traces went to _other.
    env = {**os.environ, "TIERSCOPE_DATABASE_URL": dsn, "COLUMNS": "200"}
    shown = subprocess.run(
        [*tierscope_command(), "bt", "list", "--json"], env=env, capture_output=True, text=True, check=True
    )
    known = {(t["service"], t["bt"]): t["overflow"] for t in json.loads(shown.stdout)["transactions"]}
    assert known.pop(("crm-web", "_other")) == 2
    assert len(known) == 3
    assert set(known.values()) == {0}
    table = subprocess.run(
        [*tierscope_command(), "bt", "list"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "sent to _other" in table
    (other_row,) = [line for line in table.splitlines() if "_other" in line and "crm-web" in line]
    cells = [cell.strip() for cell in other_row.strip().strip("│").split("│")]
    assert (cells[0], cells[1], cells[-1]) == ("crm-web", "_other", "2"), table


def letters(number: int) -> str:
    """A name part without digits (a number in a route would be collapsed to {id})."""
    return "".join(chr(97 + int(digit)) for digit in str(number))


def test_the_default_cap_names_500_transactions_per_service_and_sends_the_rest_to_other(
    processing: CollectorProcess,
) -> None:
    dsn = processing.database_url
    assert dsn
    assert Rules.default().max_per_service == 500  # what a tenant without rules gets
    start = time.time_ns() - 5_000 * MS
    spans = [
        otlp.span(
            f"GET /report{index}",
            kind=SERVER,
            start_ns=start + index * MS,
            attributes={"http.request.method": "GET", "http.route": f"/reports/{letters(index)}"},
        )
        for index in range(503)
    ]
    post(processing, spans, "reporting")
    done = "SELECT count(*) FROM trace_summaries WHERE service = 'reporting'"
    wait_for(lambda: query(dsn, done) == [(503,)])
    by_name = "SELECT bt, count(*) FROM trace_summaries WHERE service = 'reporting' GROUP BY bt"
    names = dict(query(dsn, by_name))
    assert names.pop("_other") == 3
    assert len(names) == 500
    overflow = "SELECT overflow FROM business_transactions WHERE service = 'reporting' AND name = '_other'"
    assert query(dsn, overflow) == [(3,)]


def rollups(dsn: str) -> dict[str, list[tuple]]:
    return {
        "bt": query(
            dsn,
            """SELECT resolution, bucket, service, bt, calls, errors, duration_sum_us,
                                   duration_max_us, apdex_satisfied, apdex_tolerating, latency, tier_sum_us,
                                   tier_latency FROM bt_rollups ORDER BY 1, 2, 3, 4""",
        ),
        "components": query(
            dsn,
            """SELECT resolution, bucket, service, bt, tier, component, calls, errors, self_us, duration_us
               FROM component_rollups ORDER BY 1, 2, 3, 4, 5, 6""",
        ),
        "edges": query(
            dsn,
            """SELECT resolution, bucket, source, target, target_kind, calls, errors,
                                      duration_sum_us, latency FROM edge_rollups ORDER BY 1, 2, 3, 4, 5""",
        ),
    }


def fixed_traces(count: int) -> list[dict[str, list[Span]]]:
    rnd = random.Random(11)
    base = (time.time_ns() // (60 * 10**9) - 3) * 60 * 10**9  # a whole minute, a few minutes ago
    return [
        two_service_trace(
            base + rnd.randint(0, 170_000) * MS,
            rnd.randbytes(16),
            route=rnd.choice(["/leads", "/orders", "/quotes"]),
        )
        for _ in range(count)
    ]


def test_two_collectors_ingesting_halves_give_the_rollups_of_one(
    collector_factory: Callable[..., CollectorProcess],
) -> None:
    traces = fixed_traces(60)
    one = collector_factory(**FAST)
    for trace in traces:
        post_trace(one, trace)
    # The two halves of a trace travel by different collectors, from two threads
    # that a busy machine can hold apart for seconds: settle long enough that
    # no trace is processed with only one half.
    halves = {**FAST, "TIERSCOPE_SETTLE_DELAY": "8s"}
    first = collector_factory(**halves)
    assert first.database_url
    second = CollectorProcess(
        first.data_dir.parent / "second",
        database_url=first.database_url,
        env={"TIERSCOPE_WORKERS": "1", **halves},
    ).start()
    try:

        def send(collector: CollectorProcess, service: str) -> None:
            # Each collector needs the tenant's key, which is the first's.
            for trace in traces:
                body = otlp.request(trace[service], service=service).SerializeToString()
                assert otlp.post(collector.url, first.credentials()["ingest_key"], body).status_code == 200

        threads = [
            threading.Thread(target=send, args=(first, "crm-web")),
            threading.Thread(target=send, args=(second, "erp-api")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert one.database_url
        wait_for(
            lambda: summaries(one.database_url or "") == 60 and summaries(first.database_url or "") == 60,
            timeout=90,
        )
        time.sleep(1.5)  # nothing else is pending; let both finish their last cycle
        assert rollups(one.database_url) == rollups(first.database_url)
    finally:
        second.stop()


def _sent_figures(dsn: str) -> dict[str, object]:
    """What the rollups of each resolution say about the traces, summed: the
    additive figures and the counts held by the histograms."""
    figures: dict[str, object] = {}
    for resolution in ("minute", "hour", "day", "week"):
        rows = query(
            dsn,
            """SELECT calls, errors, duration_sum_us, tier_sum_us, latency, tier_latency
               FROM bt_rollups WHERE resolution = %s""",
            resolution,
        )
        tier_sums = [sum(row[3][i] for row in rows) for i in range(len(TIERS))]
        latency_count = sum(sum(histogram.decode(bytes(row[4])).values()) for row in rows)
        tier_counts = [0] * len(TIERS)
        for row in rows:
            for key, count in histogram.decode(bytes(row[5])).items():
                tier_counts[key // histogram.STRIDE] += count
        components = dict(
            query(
                dsn,
                "SELECT tier, sum(calls)::int8 FROM component_rollups WHERE resolution = %s GROUP BY tier",
                resolution,
            )
        )
        edges = query(dsn, "SELECT sum(calls)::int8 FROM edge_rollups WHERE resolution = %s", resolution)
        figures[resolution] = {
            "calls": sum(row[0] for row in rows),
            "errors": sum(row[1] for row in rows),
            "duration_sum_us": sum(row[2] for row in rows),
            "tier_sum_us": dict(zip(TIERS, tier_sums, strict=True)),
            "latency_count": latency_count,
            "tier_latency_count": dict(zip(TIERS, tier_counts, strict=True)),
            "component_calls": components,
            "edge_calls": edges[0][0],
        }
    return figures


def test_killing_the_processor_at_any_moment_counts_every_trace_once(
    collector_factory: Callable[..., CollectorProcess],
    tmp_path: Path,
) -> None:
    collector = collector_factory(TIERSCOPE_PROCESSING="false")
    dsn = collector.database_url
    assert dsn
    total = failed = 0
    start = time.time_ns() - 60_000 * MS
    for burst in range(12):  # arrivals spread over a few seconds: many processing windows
        batch = []
        for index in range(60):
            spans = two_service_trace(start + (burst * 60 + index) * MS)["crm-web"]
            if total % 7 == 3:
                spans[0].status.code = 2  # the entry failed: the transaction is an error
                failed += 1
            batch.extend(spans)
            total += 1
        post(collector, batch, "crm-web")
        time.sleep(0.4)
    env = {
        **os.environ,
        "TIERSCOPE_DATABASE_URL": dsn,
        "TIERSCOPE_SETTLE_DELAY": "500ms",
        "TIERSCOPE_PROCESSING_INTERVAL": "100ms",
        "TIERSCOPE_PROCESSING_WINDOW": "200ms",
        "TIERSCOPE_LOG_LEVEL": "warning",
    }
    rnd = random.Random(5)
    kills: list[tuple[int, int]] = []  # traces summarized just before each kill, and just after it
    for attempt in range(6):
        before = summaries(dsn)
        process = subprocess.Popen(
            [*tierscope_command(), "process", "--data-dir", str(tmp_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # Kill once this run has committed something: the first time at once,
        # then a little later each time (mid-window, mid-transaction, anywhere).
        deadline = time.monotonic() + 60
        while summaries(dsn) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0 if attempt == 0 else rnd.uniform(0, 0.3))
        seen = summaries(dsn)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # it and its shard processes
        process.wait()
        kills.append((seen, summaries(dsn)))
        if kills[-1][1] == total:
            break
    assert any(seen > 0 and after < total for seen, after in kills), (
        f"no kill landed between the first commit and the last: {kills} of {total}"
    )
    process = subprocess.Popen(
        [*tierscope_command(), "process", "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: summaries(dsn) == total, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert query(dsn, "SELECT count(DISTINCT trace_id), count(*) FROM trace_summaries") == [(total, total)]
    assert query(dsn, "SELECT sum(traces) FROM processing_progress") == [(total,)]
    # Each trace: POST /leads 1000 ms, of which INSERT 200 ms (db) and a call to
    # erp-api 500 ms (external, unanswered here); 300 ms of its own (app).
    tiers = {"app": 300_000, "db": 200_000, "external": 500_000}
    expected = {
        "calls": total,
        "errors": failed,
        "duration_sum_us": total * 1_000_000,
        "tier_sum_us": {tier: total * tiers.get(tier, 0) for tier in TIERS},
        "latency_count": total,
        "tier_latency_count": {tier: total if tier in tiers else 0 for tier in TIERS},
        "component_calls": dict.fromkeys(tiers, total),
        "edge_calls": 2 * total,  # crm-web -> the database, crm-web -> erp-api
    }
    figures = _sent_figures(dsn)
    assert {resolution: figures[resolution] for resolution in ("minute", "hour", "day")} == dict.fromkeys(
        ("minute", "hour", "day"), expected
    )
    # Business transactions' week rows too (components and edges have none).
    assert figures["week"] == {**expected, "component_calls": {}, "edge_calls": None}


def test_series_services_and_isolation(processing: CollectorProcess) -> None:
    dsn = processing.database_url
    assert dsn
    trace = two_service_trace(time.time_ns() - 5_000 * MS, route="/series")
    post_trace(processing, trace)
    wait_for(lambda: bool(query(dsn, "SELECT 1 FROM trace_summaries WHERE bt = 'POST /series'")))
    series = api(processing, "/api/v1/transactions/series", bt="POST /series", step="1m", **{"from": "15m"})
    assert series["step_s"] == 60
    assert len(series["points"]) in (15, 16)  # whole minutes covering the 15 asked for
    assert sum(point["count"] for point in series["points"]) == 1
    busy = next(point for point in series["points"] if point["count"])
    assert busy["tier_ms"] == {"app": 500.0, "db": 400.0, "external": 100.0}
    services = {s["service"] for s in api(processing, "/api/v1/services")["services"]}
    assert {"crm-web", "erp-api"} <= services

    async def other_tenant() -> str:
        from tierscope.store import tenants

        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return str((await tenants.create_tenant(conn, "other-co")).api_token)

    token = asyncio.run(other_tenant())
    for path in (
        "/api/v1/transactions",
        "/api/v1/services",
        "/api/v1/service-map",
        "/api/v1/transactions/components",
    ):
        answer = httpx.get(f"{processing.url}{path}", headers={"Authorization": f"Bearer {token}"}).json()
        assert not any(answer.get(key) for key in ("transactions", "services", "edges", "components")), path
    bad = httpx.get(
        f"{processing.url}/api/v1/transactions/series",
        params={"bt": "x", "step": "10s"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert bad.status_code == 400


def test_bt_apply_and_list_from_the_command_line(processing: CollectorProcess, tmp_path: Path) -> None:
    env = {**os.environ, "TIERSCOPE_DATABASE_URL": processing.database_url or ""}
    broken = tmp_path / "broken.yaml"
    broken.write_text("transactions:\n  - name: Leads\n    rout: /leads\n")
    result = subprocess.run(
        [*tierscope_command(), "bt", "apply", str(broken)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert f"{broken}:3: transactions[0].rout" in result.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text("transactions:\n  - name: CRM / Leads\n    route: /leads\n    apdex_t: 800ms\n")
    applied = subprocess.run(
        [*tierscope_command(), "bt", "apply", str(rules)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    listed = subprocess.run(
        [*tierscope_command(), "bt", "list", "--json"], env=env, capture_output=True, text=True, check=True
    )
    document = __import__("json").loads(listed.stdout)
    assert document["rules"][0]["name"] == "CRM / Leads"
    assert document["rules"][0]["apdex_t_ms"] == 800
    dsn = processing.database_url
    assert dsn
    time.sleep(1)  # the processor reloads rules every cycle
    post(processing, two_service_trace(time.time_ns() - 5_000 * MS)["crm-web"][:1], "crm-web")
    wait_for(lambda: bool(query(dsn, "SELECT 1 FROM trace_summaries WHERE bt = 'CRM / Leads'")))


def test_shard_processes_stop_when_their_parent_is_killed(
    collector_factory: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    collector = collector_factory(TIERSCOPE_PROCESSING="false")
    env = {
        **os.environ,
        "TIERSCOPE_DATABASE_URL": collector.database_url or "",
        "TIERSCOPE_PROCESSING_SHARDS": "3",
    }
    parent = subprocess.Popen(
        [*tierscope_command(), "process", "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def shard_processes() -> list[psutil.Process]:
        # multiprocessing's resource tracker is a child too; it is not a shard.
        return [
            child
            for child in psutil.Process(parent.pid).children()
            if "resource_tracker" not in " ".join(child.cmdline())
        ]

    try:
        wait_for(lambda: len(shard_processes()) == 3, timeout=60, what="three shard processes")
        shards = shard_processes()
        wait_for(
            lambda: len(query(collector.database_url or "", "SELECT shard FROM processing_progress")) == 3,
            timeout=60,
            what="three shards dividing the work",
        )
    finally:
        parent.send_signal(signal.SIGKILL)  # it cannot stop them itself
        parent.wait()
    # Each notices within a second and finishes its cycle; allow for a busy machine.
    _, alive = psutil.wait_procs(shards, timeout=45)
    assert alive == [], f"shard processes outlived their parent: {[p.cmdline() for p in alive]}"
