"""``tierscope demo --history DAYS``: days of past business, backfilled before
the users start, so baselines, SLOs and reports have data from the first minute.

Sending days of spans through the collector would take longer than the days
are worth on a 2-core machine (and the collector refuses spans older than its
``accept_from`` window, on purpose). The backfill therefore takes the path
right after trace assembly: it makes one :class:`~tierscope.processing.assemble.TraceSummary`
per simulated request and adds it up with the processing code's own
:class:`~tierscope.processing.rollup.Rollup` and
:func:`~tierscope.processing.writer.write_rollup`, exactly as the processor
does for live traces. Minute, hour and day rows of every business transaction
come out as live ones do (calls, errors, Apdex, latency and per-tier
histograms); what is read from them (baselines, SLO status, reports, the
transactions API) cannot tell the difference.

The volume follows the live traffic model: ``users`` people, half sales (CRM),
half back office (ERP), one action per ``think`` seconds at an ordinary busy
hour, the same mix of actions, scaled minute by minute by
:func:`~tierscope.demo.traffic.load_factor` (busy mornings, quiet nights,
weekends, the month-end peak). Each request's time per tier is drawn around
the BT's typical profile (log-normal), a little slower when the business is
busy. Component and service-map rows are not backfilled: their names carry the
live run's ports.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import numpy as np
import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tierscope.collector.tiers import TIERS
from tierscope.demo.traffic import BACKOFFICE_MIX, SALES_MIX, load_factor
from tierscope.processing.assemble import TraceSummary
from tierscope.processing.naming import Rules
from tierscope.processing.rollup import MINUTE_US, Rollup
from tierscope.processing.writer import write_rollup

MAX_DAYS = 90.0


@dataclass(frozen=True)
class Profile:
    """A business transaction's typical request: milliseconds per tier, error rate."""

    service: str
    bt: str
    tiers_ms: dict[str, float]
    error_rate: float = 0.002
    error_tier: str = "app"


# What each action of the users does on the server; typical times as the
# estate shows them at an ordinary hour on a quiet machine.
PROFILES: dict[str, list[Profile]] = {
    "login": [Profile("crm-web", "CRM / Login", {"web": 1.5, "app": 3.0, "db": 1.5})],
    "leads": [Profile("crm-web", "CRM / Lead list", {"web": 1.5, "app": 4.0, "db": 3.0})],
    "search": [Profile("crm-web", "CRM / Search leads", {"web": 1.0, "app": 2.5, "db": 4.0})],
    "create": [
        Profile("crm-web", "CRM / Create lead", {"web": 1.5, "app": 3.0, "db": 2.5, "external": 22.0}, 0.004)
    ],
    "contact": [
        Profile(
            "crm-web",
            "CRM / Contact detail",
            {"web": 1.5, "app": 4.0, "db": 3.0, "external": 38.0},
            0.006,
            "external",
        )
    ],
    "pipeline": [Profile("crm-web", "CRM / Opportunity pipeline", {"web": 1.5, "app": 4.5, "db": 5.0})],
    "order": [Profile("erp-api", "ERP / Create sales order", {"web": 2.0, "app": 5.0, "db": 9.0}, 0.004)],
    "inventory": [Profile("erp-api", "ERP / Check inventory", {"web": 1.5, "app": 2.0, "db": 2.0})],
    "view": [Profile("erp-api", "ERP / View sales order", {"web": 1.5, "app": 2.5, "db": 3.0})],
    "invoice": [
        Profile("erp-api", "ERP / Post invoice", {"web": 2.0, "app": 4.0, "db": 8.0, "platform": 60.0}, 0.003)
    ],
    "import": [
        Profile("erp-api", "ERP / Import customers", {"web": 1.5, "app": 2.0, "db": 2.0, "platform": 180.0})
    ],
    "rpc": [
        Profile("erp-api", "ERP / partner.search", {"web": 1.5, "app": 3.0, "db": 3.5}),
        Profile("erp-api", "ERP / product.read", {"web": 1.5, "app": 3.0, "db": 3.0}),
    ],
}
SESSION_ACTIONS = 20  # a sales user logs in once per session of 10-30 actions


def _shares() -> list[tuple[Profile, float]]:
    """Each BT's share of all requests, from the users' mix of actions."""
    shares: list[tuple[Profile, float]] = []
    for mix, with_login in ((SALES_MIX, True), (BACKOFFICE_MIX, False)):
        weights = dict(mix)
        if with_login:
            weights["login"] = sum(weights.values()) / SESSION_ACTIONS
        total = sum(weights.values())
        for action, weight in weights.items():
            for profile in PROFILES[action]:
                shares.append((profile, 0.5 * weight / total / len(PROFILES[action])))
    return shares


def requests_per_minute(users: int, think: float) -> float:
    """Requests per minute at an ordinary busy hour (load factor 1)."""
    return users * 60.0 / think


def build_rollup(
    tenant_id: int,
    start: datetime,
    minutes: int,
    per_minute: float,
    apdex_t_ms: float,
    rng: np.random.Generator,
) -> tuple[Rollup, int]:
    """The rollup of ``minutes`` of business from ``start`` (a whole minute), and its request count."""
    rollup = Rollup()
    shares = _shares()
    tiers = {tier: index for index, tier in enumerate(TIERS)}
    count = 0
    for offset in range(minutes):
        moment = start + timedelta(minutes=offset)
        factor = load_factor(moment)
        slower = 1.0 + 0.15 * factor  # a busy hour queues a little everywhere
        minute_us = int(moment.timestamp()) * 1_000_000
        for profile, share in shares:
            calls = int(rng.poisson(per_minute * share * factor))
            if not calls:
                continue
            # One log-normal draw per tier and call, around the profile's typical time.
            draws = {
                tier: rng.lognormal(np.log(ms * slower * 1000), 0.45, calls)
                for tier, ms in profile.tiers_ms.items()
            }
            failures = rng.random(calls) < profile.error_rate
            starts = rng.integers(0, MINUTE_US, calls)
            for call in range(calls):
                tier_us = [0] * len(TIERS)
                for tier, values in draws.items():
                    tier_us[tiers[tier]] = int(values[call])
                failed = bool(failures[call])
                summary = TraceSummary(
                    tenant_id=tenant_id,
                    trace_id=b"",
                    start_us=minute_us + int(starts[call]),
                    duration_us=sum(tier_us),
                    service=profile.service,
                    entry_name=profile.bt,
                    entry_kind=2,
                    entry_attributes={},
                    error=failed,
                    error_tier=profile.error_tier if failed else None,
                    error_component=None,
                    tier_us=tier_us,
                    span_count=len(profile.tiers_ms),
                )
                rollup.add(summary, profile.bt, apdex_t_ms)
            count += calls
    return rollup, count


def _apdex_t_ms() -> float:
    text = resources.files("tierscope.demo").joinpath("rules.yaml").read_text()
    return Rules.parse(text, source="demo/rules.yaml").default_apdex_t_ms


def backfill(dsn: str, tenant_id: int, options: Any, console: Console) -> int:
    """Write ``options.history`` days of rollups ending at the current minute;
    returns the number of requests they count. Reproducible with ``options.seed``."""
    days = min(float(options.history), MAX_DAYS)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    per_minute = requests_per_minute(options.users, options.think)
    apdex = _apdex_t_ms()
    rng = np.random.default_rng(options.seed)
    chunk = 6 * 60  # minutes per transaction: a few seconds of work, a visible step
    total_minutes = int((end - start).total_seconds() // 60)
    requests = 0
    began = time.monotonic()

    async def write(rollup: Rollup) -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
            await write_rollup(conn, rollup)

    columns = (
        TextColumn("  history"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("minutes · {task.fields[requests]:,} requests"),
        TimeRemainingColumn(),
    )
    quiet = not console.is_terminal or bool(os.environ.get("TIERSCOPE_DEMO_QUIET_PROGRESS"))
    with Progress(*columns, console=console, disable=quiet) as progress:
        task = progress.add_task("history", total=total_minutes, requests=0)
        done = 0
        while done < total_minutes:
            minutes = min(chunk, total_minutes - done)
            rollup, count = build_rollup(
                tenant_id, start + timedelta(minutes=done), minutes, per_minute, apdex, rng
            )
            asyncio.run(write(rollup))
            done += minutes
            requests += count
            progress.update(task, completed=done, requests=requests)
    console.print(
        f"  history: {days:g} day(s) of business backfilled ({requests:,} requests, "
        f"{start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC, in {time.monotonic() - began:.0f} s)"
    )
    return requests
