"""Merge one processing cycle's :class:`~.rollup.Rollup` into the stored rows of
every resolution (minute, hour, day; and week for business transactions).

Business-transaction and edge rows hold histograms, so they are read, merged in
Python and written back; component rows are plain sums and are added in SQL.
Only the elected processor writes, inside its window transaction, so there is
no concurrent writer to race with (shards take turns).

**Top components per stored row.** The stored rows of one business
transaction, tier and bucket (minute, hour or day) hold at most ``limit`` named
components plus ``_other``, however many cycles and shards write to them. A
component without a row gets one only while the group has fewer than ``limit``
named rows and no ``_other`` row (the newcomers with most self time first);
otherwise it is added to ``_other``. A component is thus never split between
its own row and ``_other``: once something was summed into ``_other``, which
components are in it is not known, so none of them may get a row afterwards.
The price: the named ones are the first to fill the group (ranked within a
cycle), not necessarily the bucket's final top ``limit`` by self time.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from tierscope.processing import histogram
from tierscope.processing.rollup import OTHER_COMPONENT, BtFigures, EdgeFigures, Rollup
from tierscope.store import rollups
from tierscope.store.processing import utc


def _bucket(minute_us: int, seconds: int) -> int:
    width = seconds * 1_000_000
    origin = rollups.WEEK_ORIGIN * 1_000_000 if seconds == rollups.WEEK else 0
    return minute_us - (minute_us - origin) % width


def _bt_figures(row: dict[str, Any]) -> BtFigures:
    return BtFigures(
        calls=row["calls"],
        errors=row["errors"],
        duration_sum_us=row["duration_sum_us"],
        duration_max_us=row["duration_max_us"],
        apdex_satisfied=row["apdex_satisfied"],
        apdex_tolerating=row["apdex_tolerating"],
        latency=histogram.decode(bytes(row["latency"])),
        tier_sum_us=list(row["tier_sum_us"]),
        tier_latency=histogram.decode(bytes(row["tier_latency"])),
    )


def _edge_figures(row: dict[str, Any]) -> EdgeFigures:
    return EdgeFigures(
        calls=row["calls"],
        errors=row["errors"],
        duration_sum_us=row["duration_sum_us"],
        latency=histogram.decode(bytes(row["latency"])),
    )


DEFAULT_TOP_COMPONENTS = 20  # the default of TIERSCOPE_TOP_COMPONENTS


async def write_rollup(conn: AsyncConnection, rollup: Rollup, limit: int = DEFAULT_TOP_COMPONENTS) -> None:
    """Merge ``rollup`` into the stored rows; at most ``limit`` named components
    per business transaction, tier and bucket."""
    for resolution, seconds in rollups.RESOLUTIONS.items():
        await _write_bts(conn, rollup, resolution, seconds)
        await _write_edges(conn, rollup, resolution, seconds)
        await _add_components(conn, rollup, resolution, seconds, limit)
    await _write_bt_weeks(conn, rollup)  # after the day rows: a missing week is built from them


def _bt_merged(rollup: Rollup, seconds: int) -> dict[rollups.BtRowKey, BtFigures]:
    """This cycle's business-transaction figures per stored row of a resolution."""
    merged: dict[rollups.BtRowKey, BtFigures] = {}
    for (tenant, service, bt, minute), figures in rollup.bts.items():
        key = (tenant, service, bt, utc(_bucket(minute, seconds)))
        merged.setdefault(key, BtFigures()).add(figures)
    return merged


async def _write_bts(conn: AsyncConnection, rollup: Rollup, resolution: str, seconds: int) -> None:
    merged = _bt_merged(rollup, seconds)
    for row in await rollups.bt_rows(conn, resolution, list(merged)):
        merged[row["tenant_id"], row["service"], row["bt"], row["bucket"]].add(_bt_figures(row))
    await _store_bts(conn, resolution, merged)


async def _write_bt_weeks(conn: AsyncConnection, rollup: Rollup) -> None:
    """Add the cycle to the stored week rows; a week without a row gets one
    built from its day rows, which already hold this cycle."""
    merged = _bt_merged(rollup, rollups.WEEK)
    stored = set()
    for row in await rollups.bt_rows(conn, "week", list(merged)):
        key = (row["tenant_id"], row["service"], row["bt"], row["bucket"])
        merged[key].add(_bt_figures(row))
        stored.add(key)
    missing = [key for key in merged if key not in stored]
    merged.update(await _weeks_from_days(conn, missing))
    await _store_bts(conn, "week", merged)


async def _weeks_from_days(
    conn: AsyncConnection, weeks: list[rollups.BtRowKey]
) -> dict[rollups.BtRowKey, BtFigures]:
    built: dict[rollups.BtRowKey, BtFigures] = {key: BtFigures() for key in weeks}
    for row in await rollups.days_of_weeks(conn, weeks):
        built[row["tenant_id"], row["service"], row["bt"], row["week"]].add(_bt_figures(row))
    return built


async def build_missing_weeks(conn: AsyncConnection) -> int:
    """Give every week that has day rows but no week row its row (the weeks of a
    store from before week rows); returns how many were built. Idempotent; the
    caller holds the write turn."""
    missing = await rollups.weeks_without_rows(conn)
    for start in range(0, len(missing), 1000):  # bounded memory on a store of years
        await _store_bts(conn, "week", await _weeks_from_days(conn, missing[start : start + 1000]))
    return len(missing)


async def _store_bts(
    conn: AsyncConnection, resolution: str, merged: dict[rollups.BtRowKey, BtFigures]
) -> None:
    await rollups.write_bt_rows(
        conn,
        [
            (
                tenant,
                resolution,
                bucket,
                service,
                bt,
                f.calls,
                f.errors,
                f.duration_sum_us,
                f.duration_max_us,
                f.apdex_satisfied,
                f.apdex_tolerating,
                histogram.encode(f.latency),
                f.tier_sum_us,
                histogram.encode(f.tier_latency),
            )
            for (tenant, service, bt, bucket), f in merged.items()
        ],
    )


async def _write_edges(conn: AsyncConnection, rollup: Rollup, resolution: str, seconds: int) -> None:
    merged: dict[rollups.EdgeRowKey, EdgeFigures] = {}
    for (tenant, minute, source, target, kind), figures in rollup.edges.items():
        key = (tenant, source, target, kind, utc(_bucket(minute, seconds)))
        merged.setdefault(key, EdgeFigures()).add(figures)
    for row in await rollups.edge_rows(conn, resolution, list(merged)):
        key = (row["tenant_id"], row["source"], row["target"], row["target_kind"], row["bucket"])
        merged[key].add(_edge_figures(row))
    await rollups.write_edge_rows(
        conn,
        [
            (
                tenant,
                resolution,
                bucket,
                source,
                target,
                kind,
                f.calls,
                f.errors,
                f.duration_sum_us,
                histogram.encode(f.latency),
            )
            for (tenant, source, target, kind, bucket), f in merged.items()
        ],
    )


async def _add_components(
    conn: AsyncConnection, rollup: Rollup, resolution: str, seconds: int, limit: int
) -> None:
    # This cycle's figures per group (tenant, bucket, service, bt, tier) and component.
    incoming: dict[rollups.ComponentGroupKey, dict[str, list[int]]] = {}
    for (tenant, service, bt, minute, tier, component), f in rollup.components.items():
        group = (tenant, utc(_bucket(minute, seconds)), service, bt, tier)
        figures = incoming.setdefault(group, {}).setdefault(component, [0, 0, 0, 0])
        figures[0] += f.calls
        figures[1] += f.errors
        figures[2] += f.self_us
        figures[3] += f.duration_us
    stored: dict[rollups.ComponentGroupKey, set[str]] = {}
    for *group, component in await rollups.component_names(conn, resolution, list(incoming)):
        stored.setdefault(tuple(group), set()).add(component)  # type: ignore[arg-type]
    rows = []
    for group, components in incoming.items():
        head = (group[0], resolution, *group[1:])  # the row's key, in COMPONENT_COLUMNS order
        names = stored.get(group, set())
        closed = OTHER_COMPONENT in names
        free = 0 if closed else max(0, limit - len(names))
        newcomers = sorted(
            (c for c in components if c not in names and c != OTHER_COMPONENT),
            key=lambda c: (-components[c][2], c),
        )
        admitted = set(newcomers[:free])
        other = [0, 0, 0, 0]
        folded = False
        for component, figures in components.items():
            if component not in names and component not in admitted:
                other = [a + b for a, b in zip(other, figures, strict=True)]
                folded = True
            else:
                rows.append((*head, component, *figures))
        if folded:
            rows.append((*head, OTHER_COMPONENT, *other))
    await rollups.add_component_rows(conn, rows)
