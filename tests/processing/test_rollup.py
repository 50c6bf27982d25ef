"""Rollups add traces up; top components stay bounded per stored minute, hour and day."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import psycopg

from tierscope.processing.assemble import TraceSummary
from tierscope.processing.rollup import MINUTE_US, OTHER_COMPONENT, ComponentFigures, Rollup
from tierscope.processing.writer import write_rollup


def summary(
    duration_us: int, components: list[tuple[str, str, int, int, bool]], error: bool = False
) -> TraceSummary:
    return TraceSummary(
        tenant_id=1,
        trace_id=b"t" * 16,
        start_us=10 * MINUTE_US + 5,
        duration_us=duration_us,
        service="crm-web",
        entry_name="GET /leads",
        entry_kind=2,
        entry_attributes={},
        error=error,
        error_tier=None,
        error_component=None,
        tier_us=[0, 0, 0, duration_us, 0, 0, 0, 0, 0],
        span_count=1,
        components=components,
    )


def test_apdex_counts_follow_the_threshold() -> None:
    rollup = Rollup()
    for duration_ms in (100, 500, 501, 2000, 2001):
        rollup.add(summary(duration_ms * 1000, []), "GET /leads", apdex_t_ms=500)
    figures = rollup.bts[1, "crm-web", "GET /leads", 10 * MINUTE_US]
    assert (figures.calls, figures.apdex_satisfied, figures.apdex_tolerating) == (5, 2, 2)


def cycle(minute: int, figures: dict[str, int], tier: str = "db") -> Rollup:
    """One processing cycle's rollup: these components (name -> self time, one
    call per 10 µs) of one business transaction and minute."""
    rollup = Rollup()
    for name, self_us in figures.items():
        key = (1, "crm-web", "bt", minute * MINUTE_US, tier, name)
        rollup.components[key] = ComponentFigures(self_us // 10, 0, self_us, 2 * self_us)
    return rollup


async def write_cycles(dsn: str, cycles: list[Rollup], limit: int) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        for rollup in cycles:
            async with conn.transaction():  # each cycle commits on its own, as the processor's do
                await write_rollup(conn, rollup, limit)


def stored(dsn: str, resolution: str) -> dict[tuple[int, str, str], tuple[int, int]]:
    """(minute or bucket, tier, component) -> (calls, self time)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """SELECT extract(epoch FROM bucket)::int8, tier, component, calls, self_us
               FROM component_rollups WHERE resolution = %s""",
            (resolution,),
        ).fetchall()
    return {
        (bucket * 1_000_000 // MINUTE_US, tier, name): (calls, self_us)
        for bucket, tier, name, calls, self_us in rows
    }


def test_cycles_writing_one_minute_keep_the_first_top_components_whole_and_the_rest_as_other(
    database_url: str,
) -> None:
    minute = 29_000_000  # minutes since the epoch
    cycles = [
        cycle(minute, {"A": 500, "B": 400}),
        cycle(minute, {"C": 100, "D": 300, "E": 50, "A": 10}),  # one free place: D, the largest
        cycle(minute, {"C": 1000, "B": 10, "F": 10}),  # full: C stays in _other though it grew
    ]
    asyncio.run(write_cycles(database_url, cycles, limit=3))
    expected = {
        "A": (51, 510),
        "B": (41, 410),
        "D": (30, 300),
        OTHER_COMPONENT: (10 + 5 + 100 + 1, 100 + 50 + 1000 + 10),
    }
    for resolution in ("minute", "hour", "day"):
        rows = {name: figures for (_, _, name), figures in stored(database_url, resolution).items()}
        assert rows == expected, resolution


def test_any_number_of_cycles_keep_at_most_n_components_per_minute_none_split(database_url: str) -> None:
    rnd = random.Random(7)
    pool = [f"component {i}" for i in range(12)]
    truth: dict[tuple[int, str, str], tuple[int, int]] = defaultdict(lambda: (0, 0))
    cycles = []
    for _ in range(12):  # two shards' cycles, interleaved: all write two minutes of one hour
        minute = rnd.choice([29_000_000, 29_000_001])
        tier = rnd.choice(["db", "external"])
        figures = {name: rnd.randint(1, 100) * 10 for name in rnd.sample(pool, rnd.randint(1, 6))}
        cycles.append(cycle(minute, figures, tier))
        for name, self_us in figures.items():
            calls, total = truth[minute, tier, name]
            truth[minute, tier, name] = (calls + self_us // 10, total + self_us)
    asyncio.run(write_cycles(database_url, cycles, limit=4))
    rows = stored(database_url, "minute")
    groups = {(minute, tier) for minute, tier, _ in truth}
    for minute, tier in groups:
        named = {n: f for (m, t, n), f in rows.items() if (m, t) == (minute, tier) and n != OTHER_COMPONENT}
        seen = {n: f for (m, t, n), f in truth.items() if (m, t) == (minute, tier)}
        assert len(named) <= 4
        for name, figures in named.items():
            assert figures == seen[name], f"{name} is split between its row and _other"
        other = rows.get((minute, tier, OTHER_COMPONENT), (0, 0))
        folded = [f for n, f in seen.items() if n not in named]
        assert other == (sum(f[0] for f in folded), sum(f[1] for f in folded))
        assert len(named) == min(4, len(seen))
    # Coarser buckets hold everything too, bounded the same way.
    hours = stored(database_url, "hour")
    assert sum(f[1] for f in hours.values()) == sum(f[1] for f in truth.values())
    for tier in ("db", "external"):
        assert len([n for (_, t, n) in hours if t == tier and n != OTHER_COMPONENT]) <= 4
