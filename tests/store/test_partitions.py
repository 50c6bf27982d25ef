"""Daily span partitions: created ahead, dropped past the retention."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from tierscope.store import partitions

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)


async def names(conn: psycopg.AsyncConnection) -> list[str]:
    return sorted((await partitions.existing_partitions(conn)).values())


async def test_partitions_cover_the_acceptance_window_and_expire(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        report = await partitions.maintain(
            conn, retention=timedelta(days=7), accept_from=timedelta(days=3), now=NOW
        )
        assert report.created == [partitions.partition_name(date(2026, 11, d)) for d in range(21, 28)]
        assert (
            await partitions.maintain(
                conn, retention=timedelta(days=7), accept_from=timedelta(days=3), now=NOW
            )
            == partitions.MaintenanceReport()
        )
        # Ten days later: the old days are past the 7-day retention and dropped.
        later = NOW + timedelta(days=10)
        report = await partitions.maintain(
            conn, retention=timedelta(days=7), accept_from=timedelta(days=3), now=later
        )
        assert report.dropped == [partitions.partition_name(date(2026, 11, d)) for d in range(21, 27)]
        remaining = await names(conn)
        assert remaining[0] == "spans_p20261127"  # ends Nov 28, inside 7 days of Dec 4 15:30
        assert remaining[-1] == "spans_p20261207"


async def test_a_span_for_a_day_without_partition_gets_one(database_url: str) -> None:
    from tierscope.collector.convert import Limits, convert
    from tierscope.store.spans import write_spans
    from tierscope.testing import otlp

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        assert await names(conn) == []  # the template database has no partitions yet
        tenant = await (await conn.execute("INSERT INTO tenants (name) VALUES ('t') RETURNING id")).fetchone()
        assert tenant is not None
        request = otlp.request([otlp.span()])
        now = request.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano
        conversion = convert(request, tenant[0], Limits(), now)
        result = await write_spans(conn, conversion.rows, conversion.resources)
        assert result.stored == 1
        assert len(await names(conn)) == 1
