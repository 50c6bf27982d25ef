"""Real-user monitoring in the store: a tenant's RUM settings, experiences and
script errors, and what the experience join reads and writes.

Experiences are keyed by an id the browser made, so a beacon sent twice (or a
page load sent again at page hide with its final Web Vitals) updates one row
instead of adding a second.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from tierscope.store.errors import wrap_errors

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RumSettings:
    """What the RUM endpoint checks for a tenant: allowed page origins, and the
    client IP ranges that name sites (most specific first)."""

    origins: frozenset[str]
    sites: tuple[tuple[Network, str], ...]

    def allows(self, origin: str) -> bool:
        return "*" in self.origins or origin.lower() in self.origins

    def site_of(self, ip: str) -> str | None:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for network, site in self.sites:
            if address.version == network.version and address in network:
                return site
        return None


@dataclass(frozen=True)
class ExperienceRow:
    """An experience as a beacon carried it (before the join)."""

    id: str
    kind: str
    start_time: datetime
    page: str
    url: str | None
    method: str | None
    status: int | None
    site: str | None
    session_id: str | None
    user_hash: str | None
    browser: str | None
    trace_id: bytes | None
    timing: dict[str, float]
    vitals: dict[str, float]
    final: bool  # sent at page hide: its Web Vitals are the final ones
    duration_ms: float
    outcome: str


@dataclass(frozen=True)
class ErrorRow:
    id: str
    page_view: str
    time: datetime
    page: str
    message: str
    source: str | None
    stack: str | None
    session_id: str | None
    site: str | None


# -- settings ------------------------------------------------------------------


@wrap_errors
async def load_settings(conn: AsyncConnection, tenant_id: int) -> RumSettings:
    cur = await conn.execute("SELECT origins FROM rum_settings WHERE tenant_id = %s", (tenant_id,))
    row = await cur.fetchone()
    origins = frozenset(o.lower() for o in row[0]) if row else frozenset()
    cur = await conn.execute(
        "SELECT network, site FROM rum_sites WHERE tenant_id = %s ORDER BY masklen(network) DESC",
        (tenant_id,),
    )
    sites = tuple((ipaddress.ip_network(network), site) for network, site in await cur.fetchall())
    return RumSettings(origins, sites)


@wrap_errors
async def set_origins(conn: AsyncConnection, tenant_id: int, origins: Sequence[str]) -> None:
    await conn.execute(
        """INSERT INTO rum_settings (tenant_id, origins) VALUES (%s, %s)
           ON CONFLICT (tenant_id) DO UPDATE SET origins = EXCLUDED.origins, updated_at = now()""",
        (tenant_id, sorted({o.lower() for o in origins})),
    )


@wrap_errors
async def set_site(conn: AsyncConnection, tenant_id: int, network: str, site: str) -> None:
    await conn.execute(
        """INSERT INTO rum_sites (tenant_id, network, site) VALUES (%s, %s, %s)
           ON CONFLICT (tenant_id, network) DO UPDATE SET site = EXCLUDED.site""",
        (tenant_id, str(ipaddress.ip_network(network, strict=False)), site),
    )


# -- beacons -------------------------------------------------------------------

_EXPERIENCE_COLUMNS = (
    "tenant_id, id, kind, start_time, page, url, method, status, site, session_id, user_hash, browser, "
    "trace_id, timing, vitals, duration_ms, outcome, vitals_final"
)


@wrap_errors
async def write_beacon(
    conn: AsyncConnection, tenant_id: int, experiences: Sequence[ExperienceRow], errors: Sequence[ErrorRow]
) -> None:
    """Store a beacon's experiences and errors in one transaction (idempotent)."""
    async with conn.transaction(), conn.cursor() as cur:
        if experiences:
            # A final record (page hide) brings the final Web Vitals; an early one
            # arriving after it must not take them back.
            await cur.executemany(
                f"""INSERT INTO rum_experiences ({_EXPERIENCE_COLUMNS})
                    VALUES ({", ".join(["%s"] * 18)})
                    ON CONFLICT (tenant_id, id) DO UPDATE SET
                      vitals = CASE WHEN %s THEN rum_experiences.vitals || EXCLUDED.vitals
                                    ELSE EXCLUDED.vitals || rum_experiences.vitals END,
                      outcome = CASE WHEN EXCLUDED.outcome = 'error' THEN 'error'
                                     ELSE rum_experiences.outcome END,
                      vitals_final = rum_experiences.vitals_final OR EXCLUDED.vitals_final""",  # noqa: S608 - constant columns
                [
                    (
                        tenant_id,
                        e.id,
                        e.kind,
                        e.start_time,
                        e.page,
                        e.url,
                        e.method,
                        e.status,
                        e.site,
                        e.session_id,
                        e.user_hash,
                        e.browser,
                        e.trace_id,
                        json.dumps(e.timing),
                        json.dumps(e.vitals),
                        e.duration_ms,
                        e.outcome,
                        e.final,
                        e.final,
                    )
                    for e in experiences
                ],
            )
        if errors:
            await cur.executemany(
                """INSERT INTO rum_errors
                   (tenant_id, id, page_view, time, page, message, source, stack, session_id, site)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                [
                    (
                        tenant_id,
                        r.id,
                        r.page_view,
                        r.time,
                        r.page,
                        r.message,
                        r.source,
                        r.stack,
                        r.session_id,
                        r.site,
                    )
                    for r in errors
                ],
            )


# -- the join --------------------------------------------------------------------


@wrap_errors
async def pending_with_traces(conn: AsyncConnection, limit: int = 1000) -> list[dict[str, Any]]:
    """Pending experiences whose trace has been summarized, locked for this
    transaction (others joining at the same time skip them)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT e.tenant_id, e.id, e.timing, e.duration_ms, e.status,
                      t.duration_us AS trace_duration_us, t.tier_us, t.service, t.bt, t.error,
                      t.error_tier
               FROM rum_experiences e
               JOIN LATERAL (SELECT * FROM trace_summaries t
                             WHERE t.tenant_id = e.tenant_id AND t.trace_id = e.trace_id
                               AND t.start_time BETWEEN e.start_time - interval '1 hour'
                                                    AND e.start_time + interval '1 hour'
                             LIMIT 1) t ON true
               WHERE e.state = 'pending' AND e.trace_id IS NOT NULL
               ORDER BY e.received_at LIMIT %s
               FOR UPDATE OF e SKIP LOCKED""",
            (limit,),
        )
        return await cur.fetchall()


@wrap_errors
async def pending_past(conn: AsyncConnection, waited: timedelta, limit: int = 1000) -> list[dict[str, Any]]:
    """Pending experiences that have no trace, or waited for it long enough."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT tenant_id, id, timing, duration_ms, status FROM rum_experiences
               WHERE state = 'pending' AND (trace_id IS NULL OR received_at < now() - %s)
               ORDER BY received_at LIMIT %s
               FOR UPDATE SKIP LOCKED""",
            (waited, limit),
        )
        return await cur.fetchall()


@wrap_errors
async def finish(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows of (tenant_id, id, state, service, bt, tier_ms, failed, error_tier)."""
    async with conn.cursor() as cur:
        await cur.executemany(
            """UPDATE rum_experiences SET state = %s, service = %s, bt = %s, tier_ms = %s,
                      outcome = CASE WHEN %s THEN 'error' ELSE outcome END, error_tier = %s,
                      finished_at = now()
               WHERE tenant_id = %s AND id = %s""",
            [
                (state, service, bt, json.dumps(tiers), failed, error_tier, tenant, id_)
                for tenant, id_, state, service, bt, tiers, failed, error_tier in rows
            ],
        )


@wrap_errors
async def ready_to_roll_up(conn: AsyncConnection, wait: timedelta, limit: int = 2000) -> list[dict[str, Any]]:
    """Finished experiences not yet in the rollups whose figures are final: requests,
    page loads whose page-hide beacon brought the final Web Vitals, and the rest
    once finished ``wait`` ago. Locked for this transaction (others skip them)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT tenant_id, id, start_time, page, site, service, bt, duration_ms, tier_ms, vitals,
                      outcome, error_tier
               FROM rum_experiences
               WHERE state <> 'pending' AND NOT rolled_up
                 AND (kind = 'request' OR vitals_final OR finished_at < now() - %s)
               ORDER BY finished_at LIMIT %s
               FOR UPDATE SKIP LOCKED""",
            (wait, limit),
        )
        return await cur.fetchall()


@wrap_errors
async def not_rolled_up(
    conn: AsyncConnection,
    tenant_id: int,
    start: datetime,
    end: datetime,
    service: str | None = None,
    bt: str | None = None,
    limit: int = 20_000,
) -> list[dict[str, Any]]:
    """A tenant's finished experiences of ``[start, end)`` that the rollups do not
    hold yet (page loads wait there for their final Web Vitals), optionally of
    one service's business transaction: what a reader of the rollups adds to
    show the last minutes too. Few rows: the joiner rolls experiences up within
    ``rum_rollup_wait`` of finishing."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT tenant_id, start_time, page, site, service, bt, duration_ms, tier_ms, vitals,
                      outcome, error_tier
               FROM rum_experiences
               WHERE tenant_id = %(tenant)s AND state <> 'pending' AND NOT rolled_up
                 AND start_time >= %(start)s AND start_time < %(end)s
                 AND (%(service)s::text IS NULL OR service = %(service)s)
                 AND (%(bt)s::text IS NULL OR bt = %(bt)s)
               LIMIT %(limit)s""",
            {"tenant": tenant_id, "start": start, "end": end, "service": service, "bt": bt, "limit": limit},
        )
        return await cur.fetchall()


@wrap_errors
async def mark_rolled_up(conn: AsyncConnection, keys: Sequence[tuple[int, str]]) -> None:
    if keys:
        await conn.execute(
            """UPDATE rum_experiences e SET rolled_up = true
               FROM unnest(%s::int4[], %s::text[]) AS k(tenant_id, id)
               WHERE e.tenant_id = k.tenant_id AND e.id = k.id""",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )


@wrap_errors
async def expire(conn: AsyncConnection, retention: timedelta) -> int:
    cur = await conn.execute("DELETE FROM rum_experiences WHERE start_time < now() - %s", (retention,))
    deleted = cur.rowcount
    await conn.execute("DELETE FROM rum_errors WHERE time < now() - %s", (retention,))
    return deleted


# -- reading ---------------------------------------------------------------------

_LIST_COLUMNS = """id, kind, trace_id, service, bt, page, url, method, status, site, session_id, user_hash,
                   browser, start_time, duration_ms, tier_ms, vitals, outcome, state, timing"""


@wrap_errors
async def list_experiences(
    conn: AsyncConnection,
    tenant_id: int,
    since: datetime,
    until: datetime,
    *,
    bt: str | None,
    page: str | None,
    site: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT {_LIST_COLUMNS},
                       (SELECT count(*) FROM rum_errors r
                        WHERE r.tenant_id = e.tenant_id AND r.page_view = e.id) AS errors
                FROM rum_experiences e
                WHERE tenant_id = %(tenant)s AND start_time >= %(since)s AND start_time < %(until)s
                  AND (%(bt)s::text IS NULL OR bt = %(bt)s)
                  AND (%(page)s::text IS NULL OR page = %(page)s)
                  AND (%(site)s::text IS NULL OR site = %(site)s)
                ORDER BY start_time DESC LIMIT %(limit)s""",  # noqa: S608 - constant columns
            {"tenant": tenant_id, "since": since, "until": until, "bt": bt, "page": page}
            | {"site": site, "limit": limit},
        )
        return await cur.fetchall()


@wrap_errors
async def get_experience(conn: AsyncConnection, tenant_id: int, id_: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_LIST_COLUMNS}, 0 AS errors FROM rum_experiences WHERE tenant_id = %s AND id = %s",  # noqa: S608
            (tenant_id, id_),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            """SELECT id, time, page, message, source, stack FROM rum_errors
               WHERE tenant_id = %s AND page_view = %s ORDER BY time LIMIT 100""",
            (tenant_id, id_),
        )
        row["error_list"] = await cur.fetchall()
        row["errors"] = len(row["error_list"])
        if row["trace_id"] is not None:
            await cur.execute(
                """SELECT service, bt, duration_us, tier_us, error, error_tier, error_component, span_count
                   FROM trace_summaries WHERE tenant_id = %s AND trace_id = %s LIMIT 1""",
                (tenant_id, row["trace_id"]),
            )
            row["trace_summary"] = await cur.fetchone()
        return row
