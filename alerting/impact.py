"""Business impact of an incident: who is affected, how much it matters, what it costs.

Users and sessions are counted, since the incident began, from the first of:

1. real users' experiences (``rum_experiences``), when the affected
   transactions, pages or sites have any in that time (``users_from: rum``):
   those that failed or were slower than the signal's threshold — on the
   server's side (the experience without its browser and network time) for a
   transaction's signal, in the tier itself for a site's network or a page's
   browser signal. A user is the hashed user id, else the browser session.
   The sites of the affected experiences are listed (``sites``);
2. processed traces (``trace_summaries``: the hashed user and session the
   agent attached) of the affected transactions that failed or were slower
   than the threshold (``users_from: users``);
3. the affected requests themselves, standing in for users where traces
   carry none (``users_from: requests``).

The **priority** multiplies the severity, the highest criticality of the
business services the transactions belong to, the users (logarithmically:
the thousandth user matters less than the tenth) and the duration. The
**cost** is user-minutes times the configured cost per user-minute of the
business service (the highest among those concerned). Alerts are ranked by
priority.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from tierscope.store import alerting as store

SEVERITY_WEIGHT = {"info": 1.0, "warning": 2.0, "critical": 3.0}
CRITICALITY_WEIGHT = {"critical": 4.0, "high": 3.0, "medium": 2.0, "low": 1.0}
UNKNOWN_CRITICALITY_WEIGHT = 1.5  # a transaction in no business service: between low and medium


@dataclass(frozen=True)
class Impact:
    users: int
    sessions: int
    requests: int
    users_from: str  # "rum", "users" (traces) or "requests"
    user_minutes: int
    criticality: str | None
    business_services: list[str]
    duration_minutes: float
    priority: float
    cost: float
    sites: list[str] = field(default_factory=list)  # where affected real users are (RUM only)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def services_of(bts: list[tuple[str, str]], services: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The business services (stored rows) that contain any of ``bts``."""
    wanted = set(bts)
    return [
        row
        for row in services
        if any((t["service"], t["bt"]) in wanted for t in row["document"]["spec"]["transactions"])
    ]


def priority(severity: str, criticality: str | None, users: int, duration_minutes: float) -> float:
    weight = CRITICALITY_WEIGHT.get(criticality or "", UNKNOWN_CRITICALITY_WEIGHT)
    reach = 1 + math.log10(1 + users)
    lasting = 1 + math.log2(1 + max(duration_minutes, 0) / 10)
    return round(SEVERITY_WEIGHT[severity] * weight * reach * lasting, 2)


async def assess(
    conn: AsyncConnection,
    tenant_id: int,
    bts: list[tuple[str, str]],
    since: datetime,
    now: datetime,
    threshold_us: float,
    severity: str,
    services: list[dict[str, Any]],
    cost_per_user_minute: dict[str, float],
    default_cost: float,
    rum_scope: dict[str, Any] | None = None,
) -> Impact:
    """``rum_scope`` (from :func:`tierscope.alerting.rum.scope`): the incident is
    about real users' network or browser time, whose experiences are judged
    in that tier against ``edge_ms`` at those sites or pages."""
    if rum_scope:
        names = [tuple(n) for n in rum_scope["names"]] if rum_scope.get("names") else None
        tier, edge_ms = rum_scope["tier"], rum_scope["edge_ms"]
        seen, users, sessions, requests, user_minutes, sites = await store.rum_affected(
            conn, tenant_id, names, rum_scope.get("sites"), since, now, tier, edge_ms
        )
    else:
        seen, users, sessions, requests, user_minutes, sites = await store.rum_affected(
            conn, tenant_id, bts, None, since, now, None, threshold_us / 1000
        )
    users_from = "rum"
    if not seen:
        users, sessions, requests, user_minutes = await store.affected_users(
            conn, tenant_id, bts, since, now, threshold_us
        )
        users_from, sites = "users", []
        if users == 0 and requests > 0:
            users, user_minutes, users_from = requests, requests, "requests"
    concerned = services_of(bts, services)
    names = sorted(row["name"] for row in concerned)
    ranks = ["critical", "high", "medium", "low"]
    criticality = min((row["criticality"] for row in concerned), key=ranks.index, default=None)
    rate = max((cost_per_user_minute.get(name, default_cost) for name in names), default=default_cost)
    duration = max((now - since).total_seconds() / 60, 0.0)
    return Impact(
        users=users,
        sessions=sessions,
        requests=requests,
        users_from=users_from,
        user_minutes=user_minutes,
        criticality=criticality,
        business_services=names,
        duration_minutes=round(duration, 1),
        priority=priority(severity, criticality, users, duration),
        cost=round(user_minutes * rate, 2),
        sites=sites,
    )
