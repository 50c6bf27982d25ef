"""Which period a scheduled SLA report covers: the last week or month that has
ended, in UTC — across month ends, leap years and the turn of the year."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import psycopg
import pytest

from tierscope.dashboards.report import month, parse_period
from tierscope.dashboards.schedule import last_complete, send_due
from tierscope.store import report_schedules, tenants


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


MONTHS = {
    "January reports December of the year before": ("2027-01-15T09:00", "2026-12"),
    "the first instant of a year reports the December just ended": ("2027-01-01T00:00", "2026-12"),
    "the last instant of December still reports November": ("2026-12-31T23:59:59.999999", "2026-11"),
    "March of a leap year reports its 29-day February": ("2028-03-01T00:00", "2028-02"),
    "a month's last day reports the month before": ("2026-10-31T12:00", "2026-09"),
}


@pytest.mark.parametrize(("now", "label"), MONTHS.values(), ids=MONTHS.keys())
def test_a_monthly_report_covers_the_last_month_that_has_ended(now: str, label: str) -> None:
    period = last_complete("month", at(now))
    assert period.label == label
    assert period == parse_period(label)
    assert period.end == at(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert period.end <= at(now)


def test_december_runs_from_its_first_day_to_the_first_of_january() -> None:
    december = last_complete("month", at("2027-01-02T08:00"))
    assert (december.start, december.end) == (at("2026-12-01T00:00"), at("2027-01-01T00:00"))
    assert month(2028, 2).end - month(2028, 2).start == timedelta(days=29)
    assert month(2027, 2).end - month(2027, 2).start == timedelta(days=28)
    # The report's trend steps back over the year too.
    assert parse_period("2027-01").before().label == "2026-12"
    assert parse_period("2026-12").before().before().label == "2026-10"


def test_every_hour_of_two_years_gets_the_month_just_ended() -> None:
    now = at("2026-01-01T00:00")
    while now < at("2028-01-01T00:00"):
        period = last_complete("month", now)
        assert period.end <= now < period.end + timedelta(days=31), now  # ended, and the latest
        assert period.start.day == 1
        assert period.end == period.start.replace(
            year=period.start.year + period.start.month // 12, month=period.start.month % 12 + 1
        )
        now += timedelta(hours=7)  # not a divisor of a day: every hour of the day comes up


def test_a_weekly_report_at_new_year_covers_the_last_iso_week() -> None:
    # 2026 has 53 ISO weeks; the 53rd runs from Monday 28 December to Sunday 3 January.
    assert last_complete("week", at("2027-01-04T00:00")).label == "2026-W53"
    assert last_complete("week", at("2027-01-03T23:59")).label == "2026-W52"
    assert last_complete("week", at("2027-01-11T06:00")).label == "2027-W01"


def test_a_monthly_schedule_mails_december_in_january_once_then_january_in_february(
    database_url: str,
) -> None:
    sent: list[EmailMessage] = []

    def send(smtp: dict[str, Any], message: EmailMessage) -> None:
        sent.append(message)

    async def scenario() -> list[list[tuple[str, str, str]]]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await tenants.create_tenant(conn, "acme")
            (tenant_id,) = await (await conn.execute("SELECT id FROM tenants WHERE name = 'acme'")).fetchone()
            await report_schedules.save(
                conn,
                tenant_id,
                {
                    "name": "monthly",
                    "every": "month",
                    "recipients": ["cfo@example.test"],
                    "service": None,
                    "smtp": {"host": "127.0.0.1", "port": 25, "sender": "tierscope@example.test"},
                },
            )
            return [
                await send_due(conn, at(now), send)
                for now in ("2027-01-01T00:05", "2027-01-20T10:00", "2027-02-01T00:05")
            ]

    rounds = asyncio.run(scenario())
    assert rounds == [[("acme", "monthly", "2026-12")], [], [("acme", "monthly", "2027-01")]]
    december, january = sent
    assert december["Subject"] == "SLA report 2026-12 — acme"
    assert "SLA report 2026-12 (2026-12-01 to 2027-01-01, UTC)" in december.get_body(("plain",)).get_content()
    (attachment,) = list(december.iter_attachments())
    assert attachment.get_filename() == "tierscope-sla-2026-12.pdf"
    assert attachment.get_content().startswith(b"%PDF-")
    assert january["Subject"] == "SLA report 2027-01 — acme"
