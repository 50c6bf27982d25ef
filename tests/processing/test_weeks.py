"""Week rows of business transactions: a month read as a few weeks and some
days, always equal to what the day rows say."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.processing.query import DAY, WEEK, bt_groups, latency_quantiles, plan
from tierscope.processing.rollup import MINUTE_US, BtFigures, Rollup
from tierscope.processing.writer import build_missing_weeks, write_rollup
from tierscope.store import Database
from tierscope.store.processing import utc

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)


def test_a_long_window_of_transactions_reads_whole_weeks_from_monday_with_days_at_both_ends() -> None:
    rnd = random.Random(3)
    for _ in range(300):
        end = MONDAY + timedelta(minutes=rnd.randrange(60 * 24 * 60))
        start = end - timedelta(days=rnd.uniform(14.01, 100))
        window = plan(start, end, weeks=True)
        assert window.start <= start
        assert window.end >= end
        segments = window.segments
        assert segments[0].start == window.start
        assert segments[-1].end == window.end
        for before, after in itertools.pairwise(segments):
            assert before.end == after.start  # no gap, no overlap: nothing counted twice
        weeks = [s for s in segments if s.resolution == "week"]
        assert len(weeks) == 1, segments  # 14 days hold at least one whole week
        assert weeks[0].start.weekday() == 0
        assert weeks[0].start.time() == datetime.min.time()
        assert (weeks[0].end - weeks[0].start) % WEEK == timedelta(0)
        for day in (s for s in segments if s.resolution == "day"):
            assert day.end - day.start < WEEK
            assert (day.end - day.start) % DAY == timedelta(0)
        # Other tables have no week rows: the same window reads whole days.
        plain = plan(start, end)
        assert [s.resolution for s in plain.segments] == ["day"]
        assert (plain.start, plain.end) == (window.start, window.end)


def test_shorter_windows_read_no_weeks() -> None:
    end = MONDAY + timedelta(days=30, hours=5)
    for days in (0.1, 1, 3, 7, 13.9):
        window = plan(end - timedelta(days=days), end, weeks=True)
        assert "week" not in {s.resolution for s in window.segments}


def random_rollup(rnd: random.Random, minutes: list[int]) -> Rollup:
    """One cycle's figures of two business transactions over some minutes."""
    rollup = Rollup()
    for minute in minutes:
        for bt in ("POST /invoices", "GET /leads"):
            figures = BtFigures()
            for _ in range(rnd.randint(1, 5)):
                duration = rnd.lognormvariate(12, 1)
                figures.calls += 1
                figures.errors += rnd.random() < 0.1
                figures.duration_sum_us += int(duration)
                figures.duration_max_us = max(figures.duration_max_us, int(duration))
                histogram.add(figures.latency, duration)
                figures.tier_sum_us[5] += int(duration / 2)
                histogram.add(figures.tier_latency, duration / 2, dimension=5)
            rollup.bts[1, "erp-api", bt, minute] = figures
    return rollup


def rows(dsn: str, resolution: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """SELECT bucket, service, bt, calls, errors, duration_sum_us, duration_max_us,
                      apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_latency
               FROM bt_rollups WHERE resolution = %s""",
            (resolution,),
        ).fetchall()


def summed_by_week(day_rows: list[tuple[object, ...]]) -> dict[tuple[object, ...], tuple[object, ...]]:
    """What the week rows must hold: the day rows summed per Monday."""
    weeks: dict[tuple[object, ...], list[object]] = {}
    for bucket, service, bt, calls, errors, total, top, sat, tol, latency, tiers, tier_latency in day_rows:
        assert isinstance(bucket, datetime)
        monday = bucket - timedelta(days=bucket.weekday())
        entry = weeks.setdefault((monday, service, bt), [0, 0, 0, 0, 0, 0, {}, [0] * len(TIERS), {}])
        for index, value in enumerate((calls, errors, total, top, sat, tol)):
            entry[index] = max(entry[index], value) if index == 3 else entry[index] + value  # type: ignore[operator]
        histogram.merge_into(entry[6], histogram.decode(bytes(latency)))  # type: ignore[arg-type]
        entry[7] = [a + b for a, b in zip(entry[7], tiers, strict=True)]  # type: ignore[arg-type, call-overload]
        histogram.merge_into(entry[8], histogram.decode(bytes(tier_latency)))  # type: ignore[arg-type]
    return {key: tuple(value) for key, value in weeks.items()}


def as_weeks(week_rows: list[tuple[object, ...]]) -> dict[tuple[object, ...], tuple[object, ...]]:
    weeks = {}
    for bucket, service, bt, *figures in week_rows:
        latency, tiers, tier_latency = figures[6:]
        decoded = (histogram.decode(bytes(latency)), list(tiers), histogram.decode(bytes(tier_latency)))  # type: ignore[arg-type, call-overload]
        weeks[bucket, service, bt] = (*figures[:6], *decoded)
    return weeks


def minute_of(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 // MINUTE_US * MINUTE_US


async def write_cycles(dsn: str, cycles: list[Rollup]) -> None:
    """Each cycle in a transaction of its own, through the processor's pool."""
    database = Database(dsn, pool_size=1)
    await database.open()
    try:
        for rollup in cycles:
            async with database.connection() as conn, conn.transaction():
                await write_rollup(conn, rollup)
    finally:
        await database.close()


@pytest.mark.parametrize(
    ("monday", "timezone"),
    [
        pytest.param(MONDAY, "UTC", id="a week"),
        # Weeks are UTC: a server whose default zone changes clocks that week
        # (Berlin, 25 October 2026) must add up the same days.
        pytest.param(datetime(2026, 10, 19, tzinfo=UTC), "Europe/Berlin", id="a clock change that week"),
    ],
)
def test_every_week_row_is_the_sum_of_its_day_rows_across_sunday_midnight(
    database_url: str, monday: datetime, timezone: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(f"ALTER DATABASE {name} SET TimeZone = '{timezone}'")
    rnd = random.Random(11)
    sunday_night = monday + timedelta(days=6, hours=23, minutes=50)  # the week ends ten minutes later
    cycles = [
        random_rollup(rnd, [minute_of(sunday_night + timedelta(minutes=rnd.randrange(25))) for _ in range(3)])
        for _ in range(8)
    ]
    asyncio.run(write_cycles(database_url, cycles))
    weeks = as_weeks(rows(database_url, "week"))
    assert {bucket for bucket, _, _ in weeks} == {monday, monday + WEEK}
    assert weeks == summed_by_week(rows(database_url, "day"))


def test_weeks_stored_before_week_rows_get_them_from_their_days(database_url: str) -> None:
    rnd = random.Random(5)
    days = [MONDAY + timedelta(days=d, hours=10) for d in range(0, 21, 2)]  # three weeks
    asyncio.run(write_cycles(database_url, [random_rollup(rnd, [minute_of(day)]) for day in days]))
    expected = summed_by_week(rows(database_url, "day"))
    with psycopg.connect(database_url) as conn:  # a store from before week rows
        conn.execute("DELETE FROM bt_rollups WHERE resolution = 'week'")

    # The week in progress gets its row from its days when it is next written to.
    current = random_rollup(rnd, [minute_of(days[-1] + timedelta(hours=1))])
    asyncio.run(write_cycles(database_url, [current]))
    expected = summed_by_week(rows(database_url, "day"))
    assert len(as_weeks(rows(database_url, "week"))) == 2  # only that week's transactions so far

    async def backfill() -> tuple[int, int]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            built = await build_missing_weeks(conn)
            await conn.commit()
            return built, await build_missing_weeks(conn)

    built, again = asyncio.run(backfill())
    assert (built, again) == (4, 0)  # two earlier weeks of two transactions; once
    assert as_weeks(rows(database_url, "week")) == expected


def test_a_month_of_transactions_answers_the_same_from_weeks_as_from_days(database_url: str) -> None:
    rnd = random.Random(8)
    now = MONDAY + timedelta(days=40, hours=13)
    cycles = [random_rollup(rnd, [minute_of(now - timedelta(hours=h)) for h in range(0, 40 * 24, 23)])]
    asyncio.run(write_cycles(database_url, cycles))

    async def answer(weeks: bool) -> dict[str, object]:
        window = plan(now - timedelta(days=30), now, weeks=weeks)
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            groups = await bt_groups(conn, 1, window.segments, "erp-api")
        merged = histogram.Merged(range(len(groups)), (latency for *_, latency in groups))
        quantiles = latency_quantiles(merged)
        return {bt: (totals, quantiles[index]) for index, (_, bt, totals, _) in enumerate(groups)}

    from_weeks, from_days = asyncio.run(answer(True)), asyncio.run(answer(False))
    assert "week" in {s.resolution for s in plan(now - timedelta(days=30), now, weeks=True).segments}
    assert from_weeks == from_days
    assert len(from_weeks) == 2


def test_week_rows_are_trimmed_with_the_day_rows(database_url: str) -> None:
    from tierscope.config import load_settings
    from tierscope.store.partitions import trim_rollups

    old = utc(minute_of(datetime.now(UTC) - timedelta(days=900)))
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """INSERT INTO bt_rollups VALUES (1, 'week', %s, 'erp-api', 'x', 1, 0, 1, 1, 1, 0, %s, %s, %s)""",
            (old, histogram.encode({5: 1}), [0] * len(TIERS), histogram.encode({})),
        )

    async def trim() -> int:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await trim_rollups(conn, load_settings().rollup_retention)

    assert asyncio.run(trim()) == 1
