"""The ledger itself: its audit must see every kind of damage in a real store.

Every fault test rests on ``Ledger.audit``: if it miscounted, a test could
report 0 lost while spans were lost. So here spans go through a real collector
into a real store, the stored rows are damaged by hand one way at a time, and
the audit must count exactly that damage. The request numbers cross 65,536,
where the first version of the audit's SQL (``<<`` and ``|`` of equal
precedence) decoded them wrongly.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.reliability.conftest import QUIET
from tierscope.testing import otlp
from tierscope.testing.batches import BatchTemplate
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.ledger import Audit, Entry, Ledger

FIRST = 65_530  # the requests are numbered 65,530 to 65,541: across 2**16
REQUESTS = 12
SPANS = 16


def prefix(number: int) -> bytes:
    return number.to_bytes(4, "big")


def copy_row(dsn: str, number: int, change: str, params: dict[str, object]) -> None:
    """Insert a copy of one stored span of request ``number``, with ``change``
    (an SQL assignment list) applied to it."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TEMP TABLE copied AS SELECT * FROM spans WHERE substring(trace_id FROM 1 FOR 4) = %(p)s "
            "ORDER BY span_id LIMIT 1",
            {"p": prefix(number)},
        )
        updated = conn.execute(f"UPDATE copied SET {change}", params).rowcount  # noqa: S608 (fixed text)
        assert updated == 1
        conn.execute("INSERT INTO spans SELECT * FROM copied")


def test_the_audit_counts_lost_phantom_and_duplicate_spans_in_a_real_store(
    collector_factory: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    collector = collector_factory(**QUIET)
    key = collector.credentials()["ingest_key"]
    dsn = collector.database_url
    assert dsn is not None
    template = BatchTemplate.build(spans=SPANS, variants=2, first=FIRST)
    ledger = Ledger(SPANS)
    for _ in range(REQUESTS):
        number, body = template.next_body()
        sent = time.monotonic()
        response = otlp.post(collector.url, key, body)
        assert response.status_code == 200, response.text
        ledger.entries.append(Entry(number, sent, time.monotonic(), 200, None))
    assert {entry.number for entry in ledger.entries} == set(range(FIRST, FIRST + REQUESTS))

    clean = ledger.audit(dsn)
    assert clean == Audit(
        sent=REQUESTS * SPANS,
        acknowledged=REQUESTS * SPANS,
        stored=REQUESTS * SPANS,
        lost=0,
        duplicates=0,
        phantoms=0,
    ), "every request number, below and above 65,536, is decoded back to itself"

    # One acknowledged span deleted from the store: lost.
    with psycopg.connect(dsn) as conn:
        deleted = conn.execute(
            """DELETE FROM spans WHERE (trace_id, span_id) IN (
                   SELECT trace_id, span_id FROM spans WHERE substring(trace_id FROM 1 FOR 4) = %s
                   ORDER BY span_id LIMIT 1)""",
            (prefix(FIRST + 10),),  # 65,540
        ).rowcount
    assert deleted == 1
    after_delete = ledger.audit(dsn)
    assert (after_delete.lost, after_delete.phantoms, after_delete.duplicates) == (1, 0, 0)
    assert after_delete.stored == REQUESTS * SPANS - 1

    # A span under a request number the ledger never sent: a phantom.
    foreign = 70_000
    copy_row(dsn, FIRST + 1, "trace_id = %(p)s || substring(trace_id FROM 5)", {"p": prefix(foreign)})
    after_phantom = ledger.audit(dsn)
    assert (after_phantom.lost, after_phantom.phantoms, after_phantom.duplicates) == (1, 1, 0)
    assert after_phantom.stored == REQUESTS * SPANS - 1, "a phantom is not counted as stored"

    # A second row of a span already stored (a later start time gets it past
    # the unique index, as a store without it would let any resend in).
    copy_row(dsn, FIRST + 8, "start_time = start_time + interval '1 microsecond'", {})
    after_double = ledger.audit(dsn)
    assert (after_double.lost, after_double.phantoms, after_double.duplicates) == (1, 1, 1)

    # A refused request is sent but not acknowledged: never counted lost.
    refused, _ = template.next_body()
    ledger.entries.append(Entry(refused, 0.0, 0.0, 503, "1"))
    with_refused = ledger.audit(dsn)
    assert with_refused.sent == (REQUESTS + 1) * SPANS
    assert (with_refused.acknowledged, with_refused.lost) == (REQUESTS * SPANS, 1)

    # The ledger as an SQLite artefact: one row per attempt.
    saved = tmp_path / "ledger.sqlite"
    ledger.save(saved)
    with contextlib.closing(sqlite3.connect(saved)) as db:
        rows = db.execute("SELECT number, status FROM requests ORDER BY number").fetchall()
    assert rows == [(entry.number, entry.status) for entry in ledger.entries]
