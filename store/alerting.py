"""Alerting's rows: configuration, alerts, silences and the notification outbox.

Every function that reads or writes a tenant's rows takes the tenant; the
outbox's sender works across tenants (each row carries its tenant). The SQL is
in ``sql/alerting.sql`` (same format as ``sql/queries.sql``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tierscope.store.errors import wrap_errors
from tierscope.store.queries import parse

ALERT_QUERIES = parse(resources.files("tierscope.store").joinpath("sql/alerting.sql").read_text())
JSON_COLUMNS = ("bts", "evidence", "impact")


@wrap_errors
async def save_config(conn: AsyncConnection, tenant_id: int, document: dict[str, Any], source: str) -> None:
    await conn.execute(
        ALERT_QUERIES["save_config"], {"tenant_id": tenant_id, "document": Jsonb(document), "source": source}
    )


@wrap_errors
async def get_config(conn: AsyncConnection, tenant_id: int) -> dict[str, Any] | None:
    cur = await conn.execute(ALERT_QUERIES["get_config"], {"tenant_id": tenant_id})
    row = await cur.fetchone()
    return None if row is None else dict(row[0])


@wrap_errors
async def tenant_ids(conn: AsyncConnection) -> list[int]:
    cur = await conn.execute(ALERT_QUERIES["tenant_ids"])
    return [row[0] for row in await cur.fetchall()]


async def _rows(conn: AsyncConnection, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(ALERT_QUERIES[name], params)  # type: ignore[arg-type]
        return await cur.fetchall()


@wrap_errors
async def open_alerts(conn: AsyncConnection, tenant_id: int) -> list[dict[str, Any]]:
    return await _rows(conn, "open_alerts", {"tenant_id": tenant_id})


@wrap_errors
async def list_alerts(conn: AsyncConnection, tenant_id: int, since: datetime) -> list[dict[str, Any]]:
    return await _rows(conn, "list_alerts", {"tenant_id": tenant_id, "since": since})


@wrap_errors
async def get_alert(conn: AsyncConnection, tenant_id: int, alert_id: int) -> dict[str, Any] | None:
    rows = await _rows(conn, "get_alert", {"tenant_id": tenant_id, "id": alert_id})
    return rows[0] if rows else None


def _alert_params(tenant_id: int, alert: dict[str, Any]) -> dict[str, Any]:
    params = {**alert, "tenant_id": tenant_id}
    for column in JSON_COLUMNS:
        params[column] = Jsonb(alert[column])
    return params


@wrap_errors
async def insert_alert(conn: AsyncConnection, tenant_id: int, alert: dict[str, Any]) -> int:
    cur = await conn.execute(ALERT_QUERIES["insert_alert"], _alert_params(tenant_id, alert))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@wrap_errors
async def update_alert(conn: AsyncConnection, tenant_id: int, alert: dict[str, Any]) -> None:
    await conn.execute(ALERT_QUERIES["update_alert"], _alert_params(tenant_id, alert))


@wrap_errors
async def delete_pending(conn: AsyncConnection, tenant_id: int, alert_id: int) -> None:
    await conn.execute(ALERT_QUERIES["delete_alert"], {"tenant_id": tenant_id, "id": alert_id})


@wrap_errors
async def mark_notified(conn: AsyncConnection, tenant_id: int, alert_id: int) -> None:
    await conn.execute(ALERT_QUERIES["mark_notified"], {"tenant_id": tenant_id, "id": alert_id})


@wrap_errors
async def acknowledge(conn: AsyncConnection, tenant_id: int, alert_id: int, by: str, at: datetime) -> bool:
    cur = await conn.execute(
        ALERT_QUERIES["acknowledge"], {"tenant_id": tenant_id, "id": alert_id, "by": by, "at": at}
    )
    return await cur.fetchone() is not None


@wrap_errors
async def create_silence(conn: AsyncConnection, tenant_id: int, silence: dict[str, Any]) -> int:
    cur = await conn.execute(
        ALERT_QUERIES["create_silence"],
        {**silence, "tenant_id": tenant_id, "matchers": Jsonb(silence["matchers"])},
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@wrap_errors
async def list_silences(conn: AsyncConnection, tenant_id: int, since: datetime) -> list[dict[str, Any]]:
    return await _rows(conn, "list_silences", {"tenant_id": tenant_id, "since": since})


@wrap_errors
async def get_silence(conn: AsyncConnection, tenant_id: int, silence_id: int) -> dict[str, Any] | None:
    rows = await _rows(conn, "get_silence", {"tenant_id": tenant_id, "id": silence_id})
    return rows[0] if rows else None


@wrap_errors
async def update_silence(
    conn: AsyncConnection, tenant_id: int, silence_id: int, silence: dict[str, Any]
) -> bool:
    cur = await conn.execute(
        ALERT_QUERIES["update_silence"],
        {**silence, "tenant_id": tenant_id, "id": silence_id, "matchers": Jsonb(silence["matchers"])},
    )
    return await cur.fetchone() is not None


@wrap_errors
async def delete_silence(conn: AsyncConnection, tenant_id: int, silence_id: int) -> bool:
    cur = await conn.execute(ALERT_QUERIES["delete_silence"], {"tenant_id": tenant_id, "id": silence_id})
    return await cur.fetchone() is not None


@wrap_errors
async def enqueue(
    conn: AsyncConnection,
    tenant_id: int,
    alert_id: int,
    receiver: str,
    event: str,
    payload: dict[str, Any],
    at: datetime,
) -> None:
    await conn.execute(
        ALERT_QUERIES["enqueue"],
        {
            "tenant_id": tenant_id,
            "alert_id": alert_id,
            "receiver": receiver,
            "event": event,
            "payload": Jsonb(payload),
            "at": at,
        },
    )


@wrap_errors
async def refresh(
    conn: AsyncConnection,
    tenant_id: int,
    alert_id: int,
    receiver: str,
    payload: dict[str, Any],
    at: datetime,
    before: datetime,
) -> None:
    """Queue a delivered firing notification again if it was delivered before ``before``."""
    await conn.execute(
        ALERT_QUERIES["refresh"],
        {
            "tenant_id": tenant_id,
            "alert_id": alert_id,
            "receiver": receiver,
            "payload": Jsonb(payload),
            "at": at,
            "before": before,
        },
    )


@wrap_errors
async def due_notifications(conn: AsyncConnection, now: datetime, limit: int = 50) -> list[dict[str, Any]]:
    """Due notifications, locked until the caller's transaction ends."""
    return await _rows(conn, "due_notifications", {"now": now, "limit": limit})


@wrap_errors
async def delivered(conn: AsyncConnection, notification_id: int, at: datetime) -> None:
    await conn.execute(ALERT_QUERIES["delivered"], {"id": notification_id, "at": at})


@wrap_errors
async def failed(conn: AsyncConnection, notification_id: int, error: str, next_at: datetime) -> None:
    await conn.execute(ALERT_QUERIES["failed"], {"id": notification_id, "error": error, "next_at": next_at})


@wrap_errors
async def list_notifications(conn: AsyncConnection, tenant_id: int, alert_id: int) -> list[dict[str, Any]]:
    return await _rows(conn, "list_notifications", {"tenant_id": tenant_id, "alert_id": alert_id})


@wrap_errors
async def bt_window(
    conn: AsyncConnection, tenant_id: int, resolution: str, start: datetime, end: datetime, chunk: int = 5000
) -> list[tuple[str, str, datetime, int, int, bytes, list[int]]]:
    """Every business transaction's rollups at ``resolution`` in ``[start, end)``.

    Read through a server-side cursor, ``chunk`` rows at a time: weeks of hours
    of a thousand transactions are a million rows, and no single statement
    should come near the statement timeout nor hold the event loop while rows
    are decoded."""
    found: list[tuple[str, str, datetime, int, int, bytes, list[int]]] = []
    params = {"tenant_id": tenant_id, "resolution": resolution, "start": start, "end": end}
    async with conn.transaction(), conn.cursor(name="alerting_bt_window", binary=True) as cur:
        await cur.execute(ALERT_QUERIES["bt_window"], params)
        while rows := await cur.fetchmany(chunk):
            found += [(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6]) for r in rows]
            await asyncio.sleep(0)  # let requests of this worker through between chunks
    return found


def _keys(transactions: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    return {"services": [s for s, _ in transactions], "bts": [b for _, b in transactions]}


@wrap_errors
async def component_window(
    conn: AsyncConnection,
    tenant_id: int,
    transactions: Sequence[tuple[str, str]],
    tier: str,
    start: datetime,
    end: datetime,
) -> dict[str, tuple[int, int, int]]:
    """``{component: (calls, errors, self µs)}`` of ``tier`` in ``transactions`` over ``[start, end)``."""
    cur = await conn.execute(
        ALERT_QUERIES["component_window"],
        {"tenant_id": tenant_id, **_keys(transactions), "tier": tier, "start": start, "end": end},
    )
    return {row[0]: (row[1], row[2], row[3]) for row in await cur.fetchall()}


@wrap_errors
async def affected_users(
    conn: AsyncConnection,
    tenant_id: int,
    transactions: Sequence[tuple[str, str]],
    start: datetime,
    end: datetime,
    threshold_us: float,
) -> tuple[int, int, int, int]:
    """(users, sessions, requests, user-minutes) that failed or were slower than ``threshold_us``."""
    cur = await conn.execute(
        ALERT_QUERIES["affected_users"],
        {
            "tenant_id": tenant_id,
            **_keys(transactions),
            "start": start,
            "end": end,
            "threshold_us": int(min(threshold_us, 2**62)),
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


@wrap_errors
async def instance_services(conn: AsyncConnection, tenant_id: int, instance: str) -> list[str]:
    """The services whose resources name ``instance`` as their instance id or host."""
    cur = await conn.execute(
        """SELECT DISTINCT service FROM resources
           WHERE tenant_id = %(tenant_id)s
             AND (attributes->>'service.instance.id' = %(name)s
                  OR (attributes->>'service.instance.id' IS NULL AND attributes->>'host.name' = %(name)s))
           ORDER BY service LIMIT 2""",
        {"tenant_id": tenant_id, "name": instance},
    )
    return [str(row[0]) for row in await cur.fetchall()]


@wrap_errors
async def error_origins(
    conn: AsyncConnection,
    tenant_id: int,
    transactions: Sequence[tuple[str, str]],
    start: datetime,
    end: datetime,
) -> list[tuple[str, str, int]]:
    """(tier, component, failed requests) where ``transactions``' requests failed."""
    cur = await conn.execute(
        ALERT_QUERIES["error_origins"],
        {"tenant_id": tenant_id, **_keys(transactions), "start": start, "end": end},
    )
    return [(str(t), str(c), int(n)) for t, c, n in await cur.fetchall()]


@wrap_errors
async def escalate(
    conn: AsyncConnection,
    tenant_id: int,
    alert_id: int,
    receiver: str,
    payload: dict[str, Any],
    at: datetime,
) -> bool:
    """Re-send an alert's firing notification if its severity rose since; True if so."""
    cur = await conn.execute(
        ALERT_QUERIES["escalate"],
        {
            "tenant_id": tenant_id,
            "alert_id": alert_id,
            "receiver": receiver,
            "payload": Jsonb(payload),
            "at": at,
        },
    )
    return await cur.fetchone() is not None


@wrap_errors
async def latest_minute(conn: AsyncConnection, tenant_id: int, now: datetime) -> datetime | None:
    cur = await conn.execute(ALERT_QUERIES["latest_minute"], {"tenant_id": tenant_id, "now": now})
    row = await cur.fetchone()
    return row[0] if row else None


# -- real users (RUM) ------------------------------------------------------------

RumRow = tuple[datetime, str, str, str, int, list[int]]  # bucket, service, name, site, count, tier_sum_us


@wrap_errors
async def rum_window(
    conn: AsyncConnection, tenant_id: int, resolution: str, start: datetime, end: datetime
) -> list[RumRow]:
    cur = await conn.execute(
        ALERT_QUERIES["rum_window"],
        {"tenant_id": tenant_id, "resolution": resolution, "start": start, "end": end},
    )
    return [(r[0], r[1], r[2], r[3], int(r[4]), list(r[5])) for r in await cur.fetchall()]


@wrap_errors
async def rum_hours(
    conn: AsyncConnection, tenant_id: int, by: str, tier_index: int, start: datetime, end: datetime
) -> list[tuple[Any, ...]]:
    """Hour figures of one tier (``tier_index`` in ``tier_sum_us``, from 0) per site
    (``by="site"``: site, bucket, count, µs) or per BT/page (``by="page"``:
    service, name, bucket, count, µs)."""
    cur = await conn.execute(
        ALERT_QUERIES["rum_site_hours" if by == "site" else "rum_page_hours"],
        {"tenant_id": tenant_id, "tier": tier_index + 1, "start": start, "end": end},
    )
    return list(await cur.fetchall())


@wrap_errors
async def rum_page_tier(
    conn: AsyncConnection,
    tenant_id: int,
    names: Sequence[tuple[str, str]],
    tier: str,
    window: tuple[datetime, datetime],
    reference: tuple[datetime, datetime],
) -> dict[str, tuple[int, float, int, float]]:
    """page -> (experiences now, ms in ``tier`` now, experiences before, ms before)."""
    cur = await conn.execute(
        ALERT_QUERIES["rum_page_tier"],
        {
            "tenant_id": tenant_id,
            "services": [s for s, _ in names],
            "names": [n for _, n in names],
            "tier": tier,
            "start": window[0],
            "end": window[1],
            "before": reference[0],
            "since": reference[1],
        },
    )
    return {r[0]: (int(r[1]), float(r[2]), int(r[3]), float(r[4])) for r in await cur.fetchall()}


@wrap_errors
async def rum_affected(
    conn: AsyncConnection,
    tenant_id: int,
    names: Sequence[tuple[str, str]] | None,
    sites: Sequence[str] | None,
    start: datetime,
    end: datetime,
    tier: str | None,
    threshold_ms: float,
) -> tuple[int, int, int, int, int, list[str]]:
    """(experiences seen, users, sessions, experiences, user-minutes, sites) of
    the experiences that failed or were slower than ``threshold_ms`` (see the query)."""
    cur = await conn.execute(
        ALERT_QUERIES["rum_affected"],
        {
            "tenant_id": tenant_id,
            "services": None if names is None else [s for s, _ in names],
            "names": None if names is None else [n for _, n in names],
            "sites": None if sites is None else list(sites),
            "start": start,
            "end": end,
            "tier": tier,
            "threshold_ms": min(threshold_ms, 1e15),
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), list(row[5])
