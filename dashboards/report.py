"""The SLA trend report's figures: what a business manager reads once a month.

For a period (a month ``2026-10`` or an ISO week ``2026-W43``, in UTC) and the
periods before it: each SLO's compliance against its target (as of the
period's end, over the SLO's own window), whether it was met, the error budget
left and which tiers consumed it; the busiest and slowest business
transactions with their time per tier; the sites users worked from; the
incidents (alerts that fired) with their users, duration and estimated cost;
the pages and sites where real users waited longest (browser experiences); and
the outlook — forecasts and capacity headroom (:mod:`.outlook`). The
numbers come from the same code the API uses (:mod:`tierscope.slo.status`,
:mod:`tierscope.processing.query`), so the report and the console never
disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from tierscope.dashboards.outlook import HISTORY, MOST, Outlook, outlooks
from tierscope.processing.query import plan, transaction_figures
from tierscope.slo import status
from tierscope.slo.calendar import BusinessCalendar
from tierscope.store import reports as store

TREND_PERIODS = 6  # this period and five before it


@dataclass(frozen=True)
class Period:
    label: str
    start: datetime
    end: datetime

    def before(self) -> Period:
        if "-W" in self.label:
            return week((self.start - timedelta(days=7)).date())
        last = self.start - timedelta(days=1)
        return month(last.year, last.month)


def month(year: int, number: int) -> Period:
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return Period(f"{year:04d}-{number:02d}", start, end)


def week(day: date) -> Period:
    monday = day - timedelta(days=day.weekday())
    year, number, _ = monday.isocalendar()
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    return Period(f"{year:04d}-W{number:02d}", start, start + timedelta(days=7))


def parse_period(text: str) -> Period:
    """``2026-10`` (a month) or ``2026-W43`` (an ISO week)."""
    if found := re.fullmatch(r"(\d{4})-(\d{2})", text):
        year, number = int(found[1]), int(found[2])
        if 1 <= number <= 12:
            return month(year, number)
    if found := re.fullmatch(r"(\d{4})-W(\d{2})", text):
        try:
            return week(date.fromisocalendar(int(found[1]), int(found[2]), 1))
        except ValueError:
            pass
    raise ValueError(f"period {text!r}: use a month like 2026-10 or an ISO week like 2026-W43")


@dataclass
class Compliance:
    name: str
    subject: str  # "crm-web / POST /leads" or a business service
    criticality: str | None
    objective: str
    target: float
    sli: float | None
    budget_remaining: float | None
    attribution: dict[str, float]
    trend: list[tuple[str, float | None]]  # (period, SLI), oldest first

    @property
    def met(self) -> bool | None:
        return None if self.sli is None else self.sli >= self.target


@dataclass
class Report:
    tenant: str
    period: Period
    generated_at: datetime
    service: str | None
    compliance: list[Compliance]
    transactions: list[dict[str, Any]]  # as /api/v1/transactions lists them, slowest p95 first
    sites: list[dict[str, Any]]
    periods: list[str] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    pages: list[dict[str, Any]] = field(default_factory=list)  # slowest first, as users waited
    experience_sites: list[dict[str, Any]] = field(default_factory=list)
    outlooks: list[Outlook] = field(default_factory=list)

    @property
    def missed(self) -> list[Compliance]:
        return [c for c in self.compliance if c.met is False]


async def gather(
    conn: AsyncConnection,
    tenant_id: int,
    tenant: str,
    period: Period,
    service: str | None = None,
    now: datetime | None = None,
    calendar: BusinessCalendar | None = None,
) -> Report:
    now = now or datetime.now(UTC)
    periods = [period]
    while len(periods) < TREND_PERIODS:
        periods.insert(0, periods[0].before())
    compliance = []
    for objective in await status.objectives(conn, tenant_id):
        if service and all(s != service for s, _ in objective.transactions):
            continue
        trend = []
        current: dict[str, Any] = {}
        calendar_window = not objective.document.spec.timeWindow.isRolling
        for each in periods:
            at = min(each.end, now)
            if calendar_window and at == each.end:
                # At the period's very end a calendar window has just begun again (and
                # is empty): evaluate at its last instant, the window just completed.
                at -= timedelta(microseconds=1)
            if at <= each.start:
                trend.append((each.label, None))
                continue
            figures_ = await status.evaluate(conn, tenant_id, objective, at)
            trend.append((each.label, figures_["sli"]))
            current = figures_ if each is period else current
        spec = objective.document.spec
        subject = objective.business_service or f"{spec.service} / {spec.bt}"
        compliance.append(
            Compliance(
                name=current.get("name") or objective.name,
                subject=subject,
                criticality=objective.criticality,
                objective=spec.objective,
                target=spec.target,
                sli=current.get("sli"),
                budget_remaining=current.get("error_budget_remaining"),
                attribution=current.get("attribution") or {},
                trend=trend,
            )
        )
    window = plan(period.start, min(period.end, now), weeks=True)
    transactions = await transaction_figures(conn, tenant_id, window.segments, service)
    transactions.sort(key=lambda t: -(t["p95_ms"] or 0))
    until = min(period.end, now)
    sites = await store.sites(conn, tenant_id, period.start, until, service)
    incidents = [
        _incident(row, until) for row in await store.incidents(conn, tenant_id, period.start, until, service)
    ]
    busiest = await store.busiest_transactions(conn, tenant_id, until - HISTORY, until, service, MOST)
    ahead = await outlooks(conn, tenant_id, busiest, until, calendar)
    return Report(
        tenant=tenant,
        period=period,
        generated_at=now,
        service=service,
        compliance=compliance,
        transactions=transactions,
        sites=sites,
        periods=[p.label for p in periods],
        incidents=incidents,
        pages=await store.slowest_pages(conn, tenant_id, period.start, until, service),
        experience_sites=await store.experience_sites(conn, tenant_id, period.start, until, service),
        outlooks=ahead,
    )


def no_experiences(report: Report) -> str:
    """What the pages section says when it has nothing to show."""
    if report.service:
        return (
            f"No real-user actions were served by {report.service} in this period (only actions "
            "joined with a trace of its transactions count; page loads belong to no service)."
        )
    return "No real-user experiences in this period (the RUM script is not on the pages)."


def _incident(row: dict[str, Any], until: datetime) -> dict[str, Any]:
    """An alert as the report tells it: what, where, how long, whom, what it cost."""
    impact = row["impact"] or {}
    ended = min(row["resolved_at"] or until, until)
    return {
        "title": row["title"],
        "severity": row["severity"],
        "state": row["state"],
        "tier": row["tier"],
        "component": row["component"],
        "started": row["started_at"],
        "minutes": max((ended - row["started_at"]).total_seconds() / 60, 0.0),
        "users": int(impact.get("users") or 0),
        "users_from": impact.get("users_from", "users"),
        "cost": float(impact["cost"]) if impact.get("cost") is not None else None,
        "business_services": list(impact.get("business_services") or []),
    }


def summary(report: Report) -> list[str]:
    """The report's opening, in plain language."""
    lines = []
    total = len(report.compliance)
    if total:
        met = sum(1 for c in report.compliance if c.met)
        lines.append(f"{met} of {total} service level objectives were met in {report.period.label}.")
        for missed in report.missed:
            owner = max(missed.attribution.items(), key=lambda item: item[1], default=None)
            cause = f", mostly {owner[0]} ({owner[1]:.0%} of the bad events)" if owner else ""
            lines.append(
                f"{missed.name} ({missed.subject}) was missed: {percent(missed.sli)} against a target "
                f"of {percent(missed.target)}{cause}."
            )
    else:
        lines.append("No service level objectives are defined yet (tierscope slo apply).")
    if report.transactions:
        slowest = report.transactions[0]
        calls = sum(t["count"] for t in report.transactions)
        lines.append(
            f"{calls:,} requests to {len(report.transactions)} business transactions; the slowest was "
            f"{slowest['service']} / {slowest['bt']} with p95 {milliseconds(slowest['p95_ms'])}."
        )
    lines += incident_summary(report)
    if report.pages:
        page = report.pages[0]
        lines.append(
            f"Users waited longest on {page['page']}: "
            f"{milliseconds(page['p75_ms'])} or less for three in four actions."
        )
    if len(report.experience_sites) > 1:
        site = report.experience_sites[0]
        network = f", {milliseconds(site['network_ms'])} of it network" if site["network_ms"] else ""
        lines.append(
            f"Users at {site['site']} waited longest ({milliseconds(site['p75_ms'])} at p75{network})."
        )
    short = [o for o in report.outlooks if o.headroom is not None and o.headroom < 0.2]
    crossing = [o for o in report.outlooks if o.crossing_days is not None]
    for outlook in short:
        lines.append(
            f"Capacity: {outlook.service} / {outlook.bt} grows {outlook.growth_per_day * 100:+.1f} % a day; "
            f"its busiest hour will need {outlook.busiest_at_horizon:.0f} requests/min within 30 days, "
            f"against {outlook.busiest_seen:.0f} served at most so far."
        )
    for outlook in crossing:
        lines.append(outlook.sentence())
    return lines


def incident_summary(report: Report) -> list[str]:
    if not report.incidents:
        return ["No alert fired in this period."]
    users = sum(i["users"] for i in report.incidents)
    minutes = sum(i["minutes"] for i in report.incidents)
    costs = [i["cost"] for i in report.incidents if i["cost"] is not None]
    cost = f"; estimated cost {sum(costs):,.2f}" if costs else ""
    worst = report.incidents[0]
    where = f", suspected {worst['tier']}" if worst["tier"] else ""
    count = len(report.incidents)
    return [
        f"{count} incident{'s' if count != 1 else ''} affected {users:,} users for "
        f"{duration(minutes)} in all{cost}. The largest: {worst['title']} ({worst['users']:,} users, "
        f"{duration(worst['minutes'])}{where})."
    ]


def duration(minutes: float) -> str:
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"


def percent(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:.2f} %" if value >= 0.99 else f"{value * 100:.1f} %"  # 99.95 % vs 87.3 %


def budget_left(value: float | None) -> str:
    """The error budget left; an overspent one says how many budgets were spent."""
    if value is None:
        return "n/a"
    return percent(value) if value >= 0 else f"exhausted ({1 - value:.1f}× spent)"


def milliseconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"
