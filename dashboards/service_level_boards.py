"""The dashboards about users and promises: what ops engineers open when a
manager asks "are we keeping the service level, and who is affected?".

- **User experience**: Web Vitals per page (p75, as web.dev rates them) and per
  site, what users waited per site, and the experiences' tier split — browser,
  network and the server's tiers — so a slow branch office shows as network
  time, not as a slow database.
- **SLOs**: compliance and burn rate over time, each SLO's error budget over its
  own window, and which tier owns the bad events.
- **Alerts**: open alerts, every incident of the range with its suspected tier
  and component, its users, duration and estimated cost.
"""

from __future__ import annotations

from tierscope.dashboards import experience_queries as ux
from tierscope.dashboards import slo_queries as sq
from tierscope.dashboards.grafana import Dashboard, Panel, Row, Target, Variable

VITAL_BANDS = {
    "lcp": [(2500, "orange"), (4000, "red")],
    "inp": [(200, "orange"), (500, "red")],
}


def _tenant(tenant_id: int) -> list[Variable]:
    return [Variable("tenant", "Tenant", value=str(tenant_id))]


def user_experience(tenant_id: int) -> Dashboard:
    return Dashboard(
        uid=f"tierscope-experience-{tenant_id}",
        title="tierscope / User experience",
        description="What real users experienced: Web Vitals by page and site, waiting time per site, "
        "and where their time went (browser, network, server tiers).",
        variables=_tenant(tenant_id),
        rows=[
            Row(
                "Web Vitals",
                [
                    Panel(
                        "Largest Contentful Paint p75 by page",
                        "timeseries",
                        [Target(ux.vital_p75_by_page("lcp"))],
                        unit="ms",
                        description="75th percentile of LCP of page loads; good up to 2.5 s, poor above 4 s.",
                        thresholds=VITAL_BANDS["lcp"],
                    ),
                    Panel(
                        "Interaction to Next Paint p75 by page",
                        "timeseries",
                        [Target(ux.vital_p75_by_page("inp"))],
                        unit="ms",
                        description="75th percentile of INP; good up to 200 ms, poor above 500 ms.",
                        thresholds=VITAL_BANDS["inp"],
                    ),
                    Panel(
                        "Web Vitals by page and site",
                        "table",
                        [Target(ux.vitals_table(), table=True)],
                        width=24,
                        height=9,
                        description="Per page and site: page loads and the p75 of each Web Vital.",
                    ),
                ],
            ),
            Row(
                "Experiences",
                [
                    Panel(
                        "Where users' time goes (mean per experience)",
                        "timeseries",
                        [Target(ux.tier_split())],
                        unit="ms",
                        stacked=True,
                        description="Browser and network time from the RUM timings, server time split "
                        "into tiers once the experience is joined with its trace.",
                    ),
                    Panel(
                        "What users waited p75 by site",
                        "timeseries",
                        [Target(ux.duration_p75_by_site())],
                        unit="ms",
                    ),
                    Panel(
                        "Experiences and failures per minute",
                        "timeseries",
                        [Target(ux.experiences_per_minute())],
                        unit="cpm",
                    ),
                    Panel(
                        "Slowest pages and transactions by site",
                        "table",
                        [Target(ux.slowest_actions(), table=True)],
                        width=12,
                        description="By what users waited at the 75th percentile.",
                    ),
                ],
            ),
        ],
    )


def slos(tenant_id: int) -> Dashboard:
    return Dashboard(
        uid=f"tierscope-slos-{tenant_id}",
        title="tierscope / SLOs",
        description="Service level objectives: compliance, burn rate, error budget and which tier "
        "owns the bad events.",
        variables=_tenant(tenant_id),
        time_from="now-24h",
        rows=[
            Row(
                "Error budgets",
                [
                    Panel(
                        "Error budget over each SLO's window",
                        "table",
                        [Target(sq.budget_table(), table=True)],
                        width=24,
                        height=8,
                        description="Each SLO over its own window ending at the dashboard's end "
                        "(calendar windows aligned in UTC). Negative budget: overspent.",
                    ),
                ],
            ),
            Row(
                "Over time",
                [
                    Panel(
                        "Compliance",
                        "timeseries",
                        [Target(sq.compliance())],
                        unit="percent",
                        description="Share of good events per step (latency: not slower than the "
                        "threshold; availability: succeeded; Apdex: satisfied, tolerating as half).",
                    ),
                    Panel(
                        "Burn rate",
                        "timeseries",
                        [Target(sq.burn_rate())],
                        unit="none",
                        description="1 spends the budget exactly over the window; 14.4 spends 2 % of "
                        "a 30-day budget in an hour.",
                        thresholds=[(1, "orange"), (14.4, "red")],
                    ),
                ],
            ),
            Row(
                "Attribution",
                [
                    Panel(
                        "Bad events by tier",
                        "table",
                        [Target(sq.attribution(), table=True)],
                        width=24,
                        description="Failed calls shared by the errors each tier's components recorded; "
                        "slow calls shared by each tier's time (/api/v1/slos compares each tier with "
                        "its normal time first).",
                    ),
                ],
            ),
        ],
    )


def alerts(tenant_id: int) -> Dashboard:
    return Dashboard(
        uid=f"tierscope-alerts-{tenant_id}",
        title="tierscope / Alerts",
        description="Incidents: what fired, the layer and component suspected, users affected, "
        "duration and estimated cost.",
        variables=_tenant(tenant_id),
        time_from="now-7d",
        rows=[
            Row(
                "Now",
                [
                    Panel(
                        "Open alerts",
                        "stat",
                        [Target(sq.open_alerts(), table=True)],
                        width=6,
                        height=6,
                        thresholds=[(1, "red")],
                    ),
                    Panel(
                        "Alerts started per step by severity",
                        "timeseries",
                        [Target(sq.alerts_over_time())],
                        width=18,
                        height=6,
                        stacked=True,
                    ),
                ],
            ),
            Row(
                "Incidents",
                [
                    Panel(
                        "Alerts",
                        "table",
                        [Target(sq.alerts_table(), table=True)],
                        width=24,
                        height=10,
                        description="Open alerts first, then by priority (severity × criticality × "
                        "users × duration).",
                    ),
                    Panel(
                        "Alerts by suspected tier",
                        "table",
                        [Target(sq.alerts_by_tier(), table=True)],
                        width=24,
                        height=6,
                    ),
                ],
            ),
        ],
    )
