"""Per-minute rollups of real-user experiences: they equal a recomputation from
the raw experiences, merge across minutes, rate Web Vitals exactly at the
thresholds' edges, and count each experience once (the joiner runs in-process
against a real store here; tests/e2e-style kill -9 runs are in test_rollups_crash.py)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from tierscope.config import load_settings
from tierscope.processing import histogram
from tierscope.processing.experiences import ExperienceJoiner
from tierscope.processing.experiences_api import summarize
from tierscope.processing.rum_rollup import RUM_TIERS, THRESHOLDS, NameBudget
from tierscope.store import Database, partitions, rum_rollups
from tierscope.store.rum import ExperienceRow, write_beacon

pytestmark = pytest.mark.anyio
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
APDEX_T_MS = 1000.0


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[tuple[Database, int]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO tenants (name) VALUES ('rollups') RETURNING id").fetchone()
    assert row is not None
    database = Database(database_url, pool_size=2)
    await database.open()
    try:
        yield database, row[0]
    finally:
        await database.close()


def joiner(database: Database) -> ExperienceJoiner:
    settings = load_settings(rum_rollup_wait=timedelta(0), rum_apdex_t=timedelta(milliseconds=APDEX_T_MS))
    return ExperienceJoiner(database, settings)


def experience(
    start: datetime, page: str, site: str | None, duration: float, status: int = 200, **vitals: float
) -> ExperienceRow:
    # Untraced: browser after the response, the rest network and server.
    timing = {
        "requestStart": 1.0,
        "responseStart": duration / 4,
        "responseEnd": duration / 2,
        "end": duration,
    }
    return ExperienceRow(
        id=random.randbytes(16).hex(),
        kind="page_load",
        start_time=start,
        page=page,
        url=None,
        method="GET",
        status=status,
        site=site,
        session_id=None,
        user_hash=None,
        browser=None,
        trace_id=None,
        timing=timing,
        vitals=vitals,
        final=False,
        duration_ms=duration,
        outcome="error" if status >= 500 or status == 0 else "ok",
    )


async def store_and_roll_up(database: Database, tenant: int, rows: list[ExperienceRow]) -> None:
    async with database.connection() as conn:
        for first in range(0, len(rows), 200):
            await write_beacon(conn, tenant, rows[first : first + 200], [])
    join = joiner(database)
    while await join.round():
        pass


async def groups(database: Database, tenant: int, resolution: str) -> dict[tuple[str, str | None], Any]:
    async with database.connection() as conn:
        rows = await rum_rollups.window_rows(
            conn, tenant, resolution, NOW - timedelta(days=2), NOW + timedelta(days=1)
        )
    return {(g["bt"], g["site"]): g for g in summarize(rows)}


async def raw(database: Database, tenant: int) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    async with database.connection() as conn:
        cur = await conn.execute(
            "SELECT page, site, duration_ms, tier_ms, vitals, outcome, error_tier FROM rum_experiences "
            "WHERE tenant_id = %s AND rolled_up",
            (tenant,),
        )
        by_group: dict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
        for page, site, duration, tiers, vitals, outcome, owner in await cur.fetchall():
            by_group[page, site].append(
                {"duration": duration, "tiers": tiers, "vitals": vitals, "outcome": outcome, "owner": owner}
            )
        return by_group


def random_experiences(count: int, seed: int) -> list[ExperienceRow]:
    rnd = random.Random(seed)
    rows = []
    for _ in range(count):
        vitals = {
            "lcp": rnd.choice([2500.0, 4000.0, rnd.uniform(100, 8000)]),
            "cls": rnd.choice([0.0, 0.1, 0.25, rnd.uniform(0, 0.6)]),
            "fcp": rnd.uniform(200, 4000),
            "ttfb": rnd.uniform(20, 2500),
        }
        if rnd.random() < 0.5:
            vitals["inp"] = rnd.choice([200.0, 500.0, rnd.uniform(16, 900)])
        rows.append(
            experience(
                NOW - timedelta(minutes=rnd.randrange(0, 90), seconds=rnd.uniform(0, 59)),
                rnd.choice(["Post invoice", "Create lead", "/home"]),
                rnd.choice(["branch-b", "head-office", None]),
                rnd.choice([rnd.uniform(50, 900), rnd.uniform(900, 5000), rnd.uniform(4000, 9000)]),
                status=rnd.choice([200] * 12 + [0, 503]),
                **vitals,
            )
        )
    return rows


async def test_rollups_equal_a_recomputation_from_the_raw_experiences(store: tuple[Database, int]) -> None:
    database, tenant = store
    await store_and_roll_up(database, tenant, random_experiences(600, seed=6))
    recomputed = await raw(database, tenant)
    rolled = await groups(database, tenant, "minute")
    assert set(rolled) == set(recomputed)
    assert sum(g["count"] for g in rolled.values()) == 600
    for key, members in recomputed.items():
        group = rolled[key]
        durations = np.asarray([m["duration"] for m in members])
        failed = np.asarray([m["outcome"] == "error" for m in members])
        assert group["count"] == len(members)
        assert group["errors"] == int(failed.sum())
        satisfied = np.count_nonzero((durations <= APDEX_T_MS) & ~failed)
        tolerating = np.count_nonzero((durations > APDEX_T_MS) & (durations <= 4 * APDEX_T_MS) & ~failed)
        assert group["apdex"] == round((satisfied + tolerating / 2) / len(members), 4)
        assert group["mean_ms"] == pytest.approx(durations.mean(), abs=1e-3)
        # The p75 is read from the histogram: within its relative bound of the exact one.
        assert group["p75_ms"] == pytest.approx(np.percentile(durations, 75), rel=histogram.ALPHA, abs=1e-3)
        for tier in ("browser", "network", "server"):
            mean = sum(m["tiers"].get(tier, 0) for m in members) / len(members)
            assert group["tier_ms"].get(tier, 0.0) == pytest.approx(mean, abs=2e-3)
        owners: dict[str, int] = defaultdict(int)
        for m in members:
            if m["outcome"] == "error":
                owners[m["owner"] or "unattributed"] += 1
        assert group["errors_by_tier"] == owners
        for vital, (good, poor) in THRESHOLDS.items():
            values = np.asarray([m["vitals"][vital] for m in members if vital in m["vitals"]])
            if not len(values):
                assert vital not in group["vitals"]
                continue
            rating = group["vitals"][vital]
            assert rating["count"] == len(values)
            assert rating["good"] == round(np.count_nonzero(values <= good) / len(values), 4)
            assert rating["poor"] == round(np.count_nonzero(values > poor) / len(values), 4)
            assert rating["needs_improvement"] == round(
                np.count_nonzero((values > good) & (values <= poor)) / len(values), 4
            )
            # CLS 0 is counted in the histogram's first bucket (one millionth).
            assert rating["p75"] == pytest.approx(np.percentile(values, 75), rel=histogram.ALPHA, abs=2e-6)


async def test_hours_and_days_hold_the_merged_minutes(store: tuple[Database, int]) -> None:
    database, tenant = store
    await store_and_roll_up(database, tenant, random_experiences(300, seed=7))
    minutes = await groups(database, tenant, "minute")
    for resolution in ("hour", "day"):
        coarser = await groups(database, tenant, resolution)
        assert coarser.keys() == minutes.keys()
        for key, group in minutes.items():
            # Histograms merge exactly: the same quantiles, not only the same counts.
            assert coarser[key] == group, (resolution, key)


EDGES: dict[str, tuple[str, list[float], tuple[float, float, float]]] = {
    "LCP of exactly 2.5 s is good and exactly 4 s needs improvement": (
        "lcp",
        [2500.0, 2500.001, 4000.0, 4000.001],
        (0.25, 0.5, 0.25),
    ),
    "INP of exactly 200 ms is good and exactly 500 ms needs improvement": (
        "inp",
        [199.999, 200.0, 200.001, 500.0, 500.001],
        (0.4, 0.4, 0.2),
    ),
    "CLS of exactly 0.1 is good and exactly 0.25 needs improvement": (
        "cls",
        [0.0, 0.1, 0.1000001, 0.25, 0.2500001],
        (0.4, 0.4, 0.2),
    ),
    "FCP of exactly 1.8 s is good and exactly 3 s needs improvement": (
        "fcp",
        [1800.0, 3000.0, 3000.5],
        (1 / 3, 1 / 3, 1 / 3),
    ),
    "TTFB of exactly 0.8 s is good and exactly 1.8 s needs improvement": (
        "ttfb",
        [800.0, 1800.0, 1800.01, 1800.02],
        (0.25, 0.25, 0.5),
    ),
}


@pytest.mark.parametrize("case", EDGES, ids=list(EDGES))
async def test_vitals_shares_at_the_thresholds_edges(store: tuple[Database, int], case: str) -> None:
    database, tenant = store
    vital, values, (good, needs_improvement, poor) = EDGES[case]
    rows = [
        experience(NOW - timedelta(minutes=index), "Edges", "branch-b", 300.0, **{vital: value})
        for index, value in enumerate(values)
    ]
    await store_and_roll_up(database, tenant, rows)
    for resolution in ("minute", "hour"):
        rating = (await groups(database, tenant, resolution))["Edges", "branch-b"]["vitals"][vital]
        assert (rating["good"], rating["needs_improvement"], rating["poor"]) == pytest.approx(
            (good, needs_improvement, poor), abs=1e-4
        )


async def test_an_experience_is_counted_once_however_often_the_joiner_runs(
    store: tuple[Database, int],
) -> None:
    database, tenant = store
    rows = random_experiences(50, seed=8)
    await store_and_roll_up(database, tenant, rows)
    # Sent again (a resent beacon), and the joiner run again: nothing changes.
    await store_and_roll_up(database, tenant, rows)
    assert sum(g["count"] for g in (await groups(database, tenant, "minute")).values()) == 50


async def test_a_joiner_that_fails_mid_roll_up_leaves_nothing_half_counted(
    store: tuple[Database, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    database, tenant = store
    rows = random_experiences(40, seed=9)
    async with database.connection() as conn:
        await write_beacon(conn, tenant, rows, [])

    async def broken(conn: Any, keys: Any) -> None:
        raise OSError("the connection was lost after the rollups were written")

    monkeypatch.setattr("tierscope.store.rum.mark_rolled_up", broken)
    with pytest.raises(OSError, match="connection was lost"):
        await joiner(database).round()
    assert await groups(database, tenant, "minute") == {}
    monkeypatch.undo()
    while await joiner(database).round():
        pass
    assert sum(g["count"] for g in (await groups(database, tenant, "minute")).values()) == 40


async def test_a_page_load_waits_for_its_final_vitals_unless_they_came(store: tuple[Database, int]) -> None:
    database, tenant = store
    waiting, final = (
        experience(NOW, "Wait", None, 400.0, lcp=900.0),
        experience(NOW, "Final", None, 400.0, lcp=900.0),
    )
    final = ExperienceRow(**{**final.__dict__, "final": True})
    async with database.connection() as conn:
        await write_beacon(conn, tenant, [waiting, final], [])
    settings = load_settings(rum_rollup_wait=timedelta(minutes=5))
    join = ExperienceJoiner(database, settings)
    while await join.round():
        pass
    assert set(await groups(database, tenant, "minute")) == {("Final", None)}


async def test_a_joined_experience_is_counted_under_its_traces_transaction_and_failing_tier(
    store: tuple[Database, int],
) -> None:
    database, tenant = store
    trace_id = random.randbytes(16)
    tier_us = [0] * 9
    tier_us[3], tier_us[5] = 20_000, 180_000  # app 20 ms, db 180 ms
    async with database.connection() as conn:
        await partitions.ensure_days(conn, {NOW.date()}, "trace_summaries")
        await conn.execute(
            "INSERT INTO trace_summaries (tenant_id, trace_id, start_time, duration_us, service, bt, error, "
            "error_tier, tier_us, span_count) VALUES (%s, %s, %s, 200000, 'erp-web', 'ERP / Post invoice', "
            "true, 'db', %s, 2)",
            (tenant, trace_id, NOW, tier_us),
        )
    failed = experience(NOW, "Post invoice", "branch-b", 300.0, status=500)
    failed = ExperienceRow(**{**failed.__dict__, "kind": "request", "trace_id": trace_id})
    await store_and_roll_up(database, tenant, [failed])
    (group,) = (await groups(database, tenant, "minute")).values()
    assert (group["service"], group["bt"], group["site"]) == ("erp-web", "ERP / Post invoice", "branch-b")
    assert group["errors_by_tier"] == {"db": 1}  # the trace says where it failed
    # 300 ms: 150 ms browser after the response (end - responseEnd), the 200 ms server
    # time capped at what the browser waited (149 ms), split 10 % app / 90 % db.
    assert group["tier_ms"] == pytest.approx({"browser": 150.0, "network": 1.0, "app": 14.9, "db": 134.1})


def test_names_a_page_makes_up_are_bounded_per_tenant() -> None:
    budget = NameBudget(pages=2, sites=1)
    budget.known[1] = ({"/home"}, set())
    keys = [
        (1, "", "/home", "branch-b", 0),
        (1, "", "/invoices", "branch-b", 0),
        (1, "", "/random-1", "branch-c", 0),  # a third page, a second site: _other
        (1, "erp-web", "ERP / Post invoice", "", 0),  # business transactions are bounded elsewhere
        (2, "", "/random-1", "branch-c", 0),  # another tenant has a budget of its own
    ]
    assert [budget.bound(key) for key in keys] == [
        (1, "", "/home", "branch-b", 0),
        (1, "", "/invoices", "branch-b", 0),
        (1, "", "_other", "_other", 0),
        (1, "erp-web", "ERP / Post invoice", "", 0),
        (2, "", "/random-1", "branch-c", 0),
    ]


async def test_the_joiner_learns_the_names_already_rolled_up(store: tuple[Database, int]) -> None:
    database, tenant = store
    await store_and_roll_up(database, tenant, [experience(NOW, "/home", "branch-b", 100.0)])
    async with database.connection() as conn:
        assert await rum_rollups.known_names(conn, tenant) == ({"/home"}, {"branch-b"})


async def test_the_dashboard_queries_agree_with_the_summary(store: tuple[Database, int]) -> None:
    database, tenant = store
    await store_and_roll_up(database, tenant, random_experiences(200, seed=10))
    start, end = NOW - timedelta(days=1), NOW + timedelta(days=1)
    summary = await groups(database, tenant, "minute")
    async with database.connection() as conn:
        minutes = await rum_rollups.counts_per_minute(conn, tenant, start, end, name="Post invoice")
        by_site = await rum_rollups.tier_ms_by_site(
            conn, tenant, RUM_TIERS, "hour", start, end, "Post invoice"
        )
    assert [m[0] for m in minutes] == sorted({m[0] for m in minutes})
    invoice = [g for (name, _), g in summary.items() if name == "Post invoice"]
    assert sum(m[1] for m in minutes) == sum(g["count"] for g in invoice)
    assert sum(m[2] for m in minutes) == sum(g["errors"] for g in invoice)
    for group in invoice:
        assert by_site[group["site"] or ""] == pytest.approx(group["tier_ms"], abs=1e-3)
