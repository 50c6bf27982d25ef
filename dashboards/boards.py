"""tierscope's Grafana dashboards: what ops engineers look at.

- **Service overview**: per business transaction, throughput, errors, latency
  (mean and p95 from the merged histograms), Apdex, and the service's time per
  tier — the first place to look when a service is slow.
- **Transaction drill-down**: one BT's time per tier over time, its latency
  quantiles, calls and errors, and the components (SQL statements, external
  peers, hosts) its time went to.
- **Platform**: tierscope's own health from the collector's Prometheus
  metrics — ingest rate, refusals, request latency, processing lag.

The user-experience, SLO and alert dashboards are in
:mod:`tierscope.dashboards.service_level_boards`.
"""

from __future__ import annotations

from tierscope.dashboards import queries as q
from tierscope.dashboards.grafana import PROMETHEUS, Dashboard, Panel, Row, Target, Variable


def _variables(tenant_id: int, with_bt: bool) -> list[Variable]:
    variables = [
        Variable("tenant", "Tenant", value=str(tenant_id)),
        Variable(
            "service",
            "Service",
            "SELECT DISTINCT service FROM business_transactions WHERE tenant_id = $tenant ORDER BY 1",
        ),
    ]
    if with_bt:
        variables.append(
            Variable(
                "bt",
                "Transaction",
                "SELECT name FROM business_transactions "
                "WHERE tenant_id = $tenant AND service = ${service:sqlstring} ORDER BY 1",
            )
        )
    return variables


def service_overview(tenant_id: int) -> Dashboard:
    return Dashboard(
        uid=f"tierscope-services-{tenant_id}",
        title="tierscope / Service overview",
        description="Throughput, errors, latency, Apdex and time per tier of a service's "
        "business transactions.",
        variables=_variables(tenant_id, with_bt=False),
        rows=[
            Row(
                "Business transactions",
                [
                    Panel(
                        "Calls per minute",
                        "timeseries",
                        [Target(q.per_bt(q.CALLS_PER_MINUTE))],
                        unit="cpm",
                        description="Requests per minute to each business transaction.",
                    ),
                    Panel(
                        "Errors",
                        "timeseries",
                        [Target(q.per_bt(q.ERROR_PERCENT))],
                        unit="percent",
                        description="Share of calls that failed (error status or HTTP 5xx).",
                        thresholds=[(1, "orange"), (5, "red")],
                    ),
                    Panel(
                        "Mean latency",
                        "timeseries",
                        [Target(q.per_bt(q.MEAN_MS))],
                        unit="ms",
                    ),
                    Panel(
                        "Apdex",
                        "timeseries",
                        [Target(q.per_bt(q.APDEX))],
                        unit="none",
                        description="(satisfied + tolerating / 2) / calls, with each BT's threshold T.",
                        thresholds=[(0.7, "orange"), (0.85, "green")],
                    ),
                ],
            ),
            Row(
                "Where the time goes",
                [
                    Panel(
                        "Time per tier (mean per call)",
                        "timeseries",
                        [Target(q.tier_ms(q.SERVICE))],
                        unit="ms",
                        stacked=True,
                        description="Self time of every span, summed per tier: the stack is the "
                        "mean duration.",
                    ),
                    Panel(
                        "Latency quantiles (all transactions)",
                        "timeseries",
                        [Target(q.quantiles({"p50": 0.5, "p95": 0.95, "p99": 0.99}, q.SERVICE))],
                        unit="ms",
                    ),
                    Panel(
                        "Transactions",
                        "table",
                        [Target(q.transactions_table(), table=True)],
                        width=24,
                        height=10,
                    ),
                ],
            ),
        ],
    )


def transaction(tenant_id: int) -> Dashboard:
    return Dashboard(
        uid=f"tierscope-transaction-{tenant_id}",
        title="tierscope / Transaction drill-down",
        description="One business transaction: time per tier over time, quantiles, and the components "
        "its time went to.",
        variables=_variables(tenant_id, with_bt=True),
        rows=[
            Row(
                "Time per tier",
                [
                    Panel(
                        "Time per tier (mean per call)",
                        "timeseries",
                        [Target(q.tier_ms(q.TRANSACTION))],
                        unit="ms",
                        stacked=True,
                        width=24,
                    ),
                ],
            ),
            Row(
                "Latency and load",
                [
                    Panel(
                        "Latency quantiles",
                        "timeseries",
                        [Target(q.quantiles({"p50": 0.5, "p95": 0.95, "p99": 0.99}, q.TRANSACTION))],
                        unit="ms",
                    ),
                    Panel(
                        "Calls and errors per minute",
                        "timeseries",
                        [
                            Target(
                                q.total(
                                    {
                                        "calls": q.CALLS_PER_MINUTE,
                                        "errors": "sum(r.errors) / (max(extract(epoch FROM g.width)) / 60)",
                                    },
                                    q.TRANSACTION,
                                )
                            )
                        ],
                        unit="cpm",
                    ),
                ],
            ),
            Row(
                "Components",
                [
                    Panel(
                        "Top components by self time",
                        "table",
                        [Target(q.top_components(), table=True)],
                        width=24,
                        height=10,
                        description="Normalized SQL statements, external peers and hosts, by the time "
                        "spent in them (self time).",
                    )
                ],
            ),
        ],
    )


def platform() -> Dashboard:
    """tierscope's own health (the same for every tenant)."""
    return Dashboard(
        uid="tierscope-platform",
        title="tierscope / Platform",
        description="The collector and trace processing, from their Prometheus metrics.",
        time_from="now-1h",
        rows=[
            Row(
                "Ingest",
                [
                    Panel(
                        "Spans accepted and rejected per second",
                        "timeseries",
                        [
                            Target("sum(rate(tierscope_spans_accepted_total[5m]))", "A", "accepted"),
                            Target("sum(rate(tierscope_spans_rejected_total[5m]))", "B", "rejected"),
                            Target("sum(rate(tierscope_spans_duplicate_total[5m]))", "C", "duplicates"),
                        ],
                        datasource=PROMETHEUS,
                        unit="ops",
                    ),
                    Panel(
                        "Requests refused (503, 429)",
                        "timeseries",
                        [
                            Target(
                                "sum by (reason) (rate(tierscope_requests_refused_total[5m]))",
                                legend="{{reason}}",
                            )
                        ],
                        datasource=PROMETHEUS,
                        unit="reqps",
                    ),
                    Panel(
                        "Ingest request latency p99",
                        "timeseries",
                        [
                            Target(
                                "histogram_quantile(0.99, sum by (le) "
                                "(rate(tierscope_http_request_duration_seconds_bucket[5m])))",
                                legend="p99",
                            )
                        ],
                        datasource=PROMETHEUS,
                        unit="s",
                    ),
                ],
            ),
            Row(
                "Processing",
                [
                    Panel(
                        "Processing lag",
                        "timeseries",
                        [Target("max(tierscope_processing_lag_seconds)", legend="lag")],
                        datasource=PROMETHEUS,
                        unit="s",
                        thresholds=[(15, "orange"), (60, "red")],
                    ),
                    Panel(
                        "Traces processed and late spans per second",
                        "timeseries",
                        [
                            Target("sum(rate(tierscope_processing_traces_total[5m]))", "A", "traces"),
                            Target("sum(rate(tierscope_processing_late_spans_total[5m]))", "B", "late spans"),
                        ],
                        datasource=PROMETHEUS,
                        unit="ops",
                    ),
                ],
            ),
        ],
    )


def all_dashboards(tenant_id: int) -> list[Dashboard]:
    from tierscope.dashboards import service_level_boards as levels

    return [
        service_overview(tenant_id),
        transaction(tenant_id),
        levels.user_experience(tenant_id),
        levels.slos(tenant_id),
        levels.alerts(tenant_id),
        platform(),
    ]
