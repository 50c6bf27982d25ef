"""Scheduled SLA reports by e-mail: each week or month, the report of the period
that just ended goes to its recipients as a PDF, with the plain-language
summary in the message.

``tierscope up`` looks for due reports every ``TIERSCOPE_REPORT_SCHEDULE_INTERVAL``
(any number of collectors may run: a schedule is claimed in the store before it
is sent, so each period goes out once); ``tierscope report-schedule send-due``
does one round by hand or from cron. A new schedule sends the last complete
period at its first round, then each period as it ends. A failed send is
recorded (``tierscope report-schedule list`` shows it) and tried again at the
next round. Mail goes through the standard library's smtplib in a worker
thread, as the alert e-mails do.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from psycopg import AsyncConnection

from tierscope.dashboards.report import Period, gather, month, summary, week
from tierscope.store import report_schedules as store

_logger = logging.getLogger(__name__)
TIMEOUT_SECONDS = 30
EVERY = ("week", "month")
Sender = Callable[[dict[str, Any], EmailMessage], None]


def last_complete(every: str, now: datetime) -> Period:
    """The last period of this kind that has ended by ``now`` (UTC)."""
    if every == "week":
        return week((now - timedelta(days=7)).date())
    first = now.replace(day=1)
    last_month = first - timedelta(days=1)
    return month(last_month.year, last_month.month)


def compose(schedule: dict[str, Any], period: Period, lines: list[str], pdf: bytes) -> EmailMessage:
    message = EmailMessage()
    scope = f", {schedule['service']}" if schedule.get("service") else ""
    message["Subject"] = f"SLA report {period.label} — {schedule['tenant']}{scope}"
    message["From"] = schedule["smtp"]["sender"]
    message["To"] = ", ".join(schedule["recipients"])
    body = [f"SLA report {period.label} ({period.start.date()} to {period.end.date()}, UTC)", "", *lines]
    body += ["", "The full report is attached (PDF)."]
    body.append(f"Schedule: {schedule['name']}, every {schedule['every']}.")
    message.set_content("\n".join(body) + "\n")
    message.add_attachment(
        pdf, maintype="application", subtype="pdf", filename=f"tierscope-sla-{period.label}.pdf"
    )
    return message


def smtp_send(smtp: dict[str, Any], message: EmailMessage) -> None:
    with smtplib.SMTP(smtp["host"], int(smtp["port"]), timeout=TIMEOUT_SECONDS) as client:
        if smtp.get("starttls"):
            client.starttls()
        if smtp.get("username") and smtp.get("password"):
            client.login(smtp["username"], smtp["password"])
        client.send_message(message)


def _pdf(report: Any) -> bytes:
    # reportlab and matplotlib are imported here, in a worker thread, when a report
    # is due: importing them takes a second or two, which the collector's event
    # loop must not wait for.
    from tierscope.dashboards import render

    return render.pdf(report)


async def send_due(
    conn: AsyncConnection, now: datetime | None = None, send: Sender = smtp_send
) -> list[tuple[str, str, str]]:
    """Send every report whose period has ended and was not sent yet; returns
    (tenant, schedule, period) of those sent. A failure is recorded, not raised."""
    now = now or datetime.now(UTC)
    done = []
    for schedule in await store.all_schedules(conn):
        period = last_complete(schedule["every"], now)
        tenant_id, name = schedule["tenant_id"], schedule["name"]
        if schedule["last_period"] == period.label or not await store.claim(
            conn, tenant_id, name, period.label, now
        ):
            continue
        try:
            report = await gather(conn, tenant_id, schedule["tenant"], period, schedule["service"], now)
            pdf = await asyncio.to_thread(_pdf, report)
            message = compose(schedule, period, summary(report), pdf)
            await asyncio.to_thread(send, schedule["smtp"], message)
        except Exception as exc:  # an SMTP or store failure: recorded, tried again next round
            error = f"{type(exc).__name__}: {exc}"
            _logger.warning("report schedule %s of tenant %s: %s", name, schedule["tenant"], error)
            await store.failed(conn, tenant_id, name, error)
            continue
        await store.sent(conn, tenant_id, name, period.label)
        done.append((schedule["tenant"], name, period.label))
    return done


async def run_forever(database: Any, interval: timedelta) -> None:
    """``tierscope up``'s loop: a round every ``interval`` (the first one interval
    after start-up, not while the collector starts); never raises."""
    while True:
        await asyncio.sleep(interval.total_seconds())
        try:
            async with database.connection() as conn:
                for tenant, name, label in await send_due(conn):
                    _logger.info("sent the %s SLA report %s of tenant %s", label, name, tenant)
        except asyncio.CancelledError:
            raise
        except Exception:
            _logger.exception("scheduled reports: this round failed; trying again next round")
