"""``tierscope demo --history``: the backfilled business has the traffic model's
seasonality (busy mornings, quiet nights, weekends, the month-end peak), lands
in the rollups of past days, and SLO status and baselines read it through a
real collector's API from the first minute."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import psycopg
import pytest
from rich.console import Console

from tierscope.demo.estate import Options, _apply_definitions
from tierscope.demo.history import PROFILES, backfill, build_rollup
from tierscope.testing.collector import CollectorProcess

pytestmark = pytest.mark.timeout(300)

DAYS = 5
EVERY_BT = {(p.service, p.bt) for profiles in PROFILES.values() for p in profiles}


def _day(start: datetime, per_minute: float = 20.0) -> tuple[int, dict[int, int]]:
    """Requests of one simulated day, and per UTC hour."""
    rollup, count = build_rollup(1, start, 1440, per_minute, 500.0, np.random.default_rng(5))
    hours: dict[int, int] = {}
    for (_, _, _, minute), figures in rollup.bts.items():
        hour = datetime.fromtimestamp(minute / 1e6, UTC).hour
        hours[hour] = hours.get(hour, 0) + figures.calls
    return count, hours


def test_history_follows_the_business_day_week_and_month_end() -> None:
    wednesday, month_end_friday, saturday = (
        datetime(2026, 10, 28, tzinfo=UTC),
        datetime(2026, 10, 30, tzinfo=UTC),  # the last two days of October close the month
        datetime(2026, 10, 24, tzinfo=UTC),
    )
    ordinary, hours = _day(wednesday)
    peak, _ = _day(month_end_friday)
    weekend, _ = _day(saturday)
    mornings = sum(hours[h] for h in (9, 10, 11)) / 3
    nights = sum(hours[h] for h in (1, 2, 3)) / 3
    assert mornings > 8 * nights, hours  # 1.2-1.4 against 0.1 in the traffic model
    assert hours[12] < hours[10]  # the lunch dip
    assert 1.4 < peak / ordinary < 1.8, (peak, ordinary)  # month-end close: x1.6
    assert 0.12 < weekend / ordinary < 0.3, (weekend, ordinary)  # weekends at a fifth


def test_backfilled_days_are_in_the_rollups_and_slo_and_baselines_read_them(
    collector_factory: Callable[..., CollectorProcess],
) -> None:
    collector = collector_factory()
    dsn = collector.database_url or ""
    tenant_id = asyncio.run(_apply_definitions(dsn))  # the demo's rules and SLOs, as at its start
    # Baselines learn an hour-of-day profile from 3 ordinary days: 5 days give them that.
    options = Options(users=2, think=2.0, history=DAYS, seed=3)
    requests = backfill(dsn, tenant_id, options, Console(quiet=True))
    assert requests > 25_000  # 5 days at 60 requests per busy minute, less at night and weekends

    with psycopg.connect(dsn, autocommit=True) as conn:
        days = conn.execute(
            "SELECT bucket, sum(calls) FROM bt_rollups WHERE resolution = 'day' AND tenant_id = %s"
            " GROUP BY bucket ORDER BY bucket",
            (tenant_id,),
        ).fetchall()
        bts = set(
            conn.execute(
                "SELECT DISTINCT service, bt FROM bt_rollups WHERE resolution = 'minute' AND tenant_id = %s",
                (tenant_id,),
            ).fetchall()
        )
        hours = conn.execute(
            "SELECT extract(hour FROM bucket AT TIME ZONE 'UTC')::int, sum(calls) FROM bt_rollups"
            " WHERE resolution = 'hour' AND tenant_id = %s GROUP BY 1",
            (tenant_id,),
        ).fetchall()
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert [day for day, _ in days] == [today - timedelta(days=n) for n in range(DAYS, -1, -1)], days
    assert sum(calls for _, calls in days) == requests
    assert bts == EVERY_BT
    by_hour = dict(hours)
    assert by_hour[10] > 5 * by_hour[2], by_hour  # the day/night shape, in the stored hours

    token = collector.credentials()["api_token"]
    auth = {"Authorization": f"Bearer {token}"}
    slos = httpx.get(f"{collector.url}/api/v1/slos", headers=auth, timeout=60)
    assert slos.status_code == 200, slos.text
    listed = slos.json()["slos"]
    assert listed
    for slo in listed:  # every SLO of the demo has events from the first minute
        assert slo["events"]["total"] > 0, slo
        assert slo["sli"] is not None, slo
    baselines = httpx.get(
        f"{collector.url}/api/v1/baselines",
        params={"service": "erp-api", "bt": "ERP / Check inventory", "metric": "p95_ms"},
        headers=auth,
        timeout=60,
    )
    assert baselines.status_code == 200, baselines.text
    body = baselines.json()
    assert body["baselines"], body
    slots = body["baselines"][0]["slots"]
    learnt = [slot for slot in slots if slot["basis"] != "learning" and slot["median"]]
    assert len(learnt) >= 24, [(slot["basis"], slot["median"]) for slot in slots[:24]]
    # What the baseline learnt has the day's shape: a busy mid-morning is slower than the night.
    by_hour = {slot["hour"]: slot["median"] for slot in learnt}
    assert by_hour[10] > by_hour[2], by_hour
