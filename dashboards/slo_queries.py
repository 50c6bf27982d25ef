"""The SQL of the SLO and alert dashboards.

SLOs are stored as their documents (``tierscope slo apply``); the panels
resolve each one to its business transactions (one, or every transaction of its
business service) and count bad events in the same rollups the SLO code reads:
failed calls (availability), frustrated plus half the tolerating calls (Apdex),
or calls whose histogram bucket is slower than the threshold (latency — the
bucket rule of ``processing/histogram.py``'s ``at_most``, so the dashboard and
``/api/v1/slos`` count the same calls).

Two simplifications against ``/api/v1/slos``, said in the panels' descriptions:
the budget table aligns calendar windows in UTC (not the business time zone),
and bad latency events are attributed to tiers in proportion to each tier's
time (the API compares each tier with its normal time first).
"""

from __future__ import annotations

from tierscope.collector.tiers import TIERS
from tierscope.dashboards.queries import GRAIN
from tierscope.processing.histogram import GAMMA

SLO_TRANSACTIONS = """slo_bts AS (
  SELECT s.name, s.document -> 'spec' ->> 'objective' AS objective,
         (s.document -> 'spec' ->> 'target')::float8 AS target,
         extract(epoch FROM (s.document -> 'spec' ->> 'threshold')::interval) * 1e6 AS threshold_us,
         coalesce(s.document -> 'spec' ->> 'businessService',
                  (s.document -> 'spec' ->> 'service') || ' / ' || (s.document -> 'spec' ->> 'bt')) AS covers,
         s.document -> 'spec' -> 'timeWindow' AS time_window, t.service, t.bt
  FROM slos s
  LEFT JOIN business_services b
    ON b.tenant_id = s.tenant_id AND b.name = s.document -> 'spec' ->> 'businessService'
  CROSS JOIN LATERAL (
    SELECT s.document -> 'spec' ->> 'service', s.document -> 'spec' ->> 'bt'
    WHERE s.document -> 'spec' ->> 'businessService' IS NULL
    UNION ALL
    SELECT x ->> 'service', x ->> 'bt' FROM jsonb_array_elements(b.document -> 'spec' -> 'transactions') AS x
  ) AS t(service, bt)
  WHERE s.tenant_id = $tenant
)"""

# Calls of one histogram (8-byte header, then words: bucket index in the top 16
# bits, count in the low 48) in buckets whose value is above the threshold.
_KEY = "(get_byte(r.latency, 8 * w + 6) + get_byte(r.latency, 8 * w + 7) * 256)"
_COUNT = " + ".join(f"(get_byte(r.latency, 8 * w + {b})::int8 << {8 * b})" for b in range(6))
SLOW_CALLS = (
    f"(SELECT coalesce(sum({_COUNT}), 0) FROM generate_series(1, length(r.latency) / 8 - 1) AS w\n"
    f"       WHERE {_KEY} > 0 AND 2 * power({GAMMA}, {_KEY}) / {GAMMA + 1} > s.threshold_us)"
)
BAD_EVENTS = (
    "CASE s.objective WHEN 'availability' THEN r.errors::float8\n"
    "     WHEN 'apdex' THEN r.calls - r.apdex_satisfied - r.apdex_tolerating / 2.0\n"
    f"     ELSE {SLOW_CALLS}::float8 END"
)
JOIN_ROLLUPS = (
    "FROM slo_bts s JOIN bt_rollups r ON r.tenant_id = $tenant AND r.service = s.service AND r.bt = s.bt"
)


def _per_step(select: str) -> str:
    return (
        f"WITH {GRAIN},\n{SLO_TRANSACTIONS},\n"
        "steps AS (\n"
        "  SELECT date_bin(g.width, r.bucket, TIMESTAMPTZ '2000-01-01') AS time, s.name,\n"
        f"         max(s.target) AS target, sum(r.calls)::float8 AS calls, sum({BAD_EVENTS}) AS bad\n"
        f"  {JOIN_ROLLUPS}, grain g\n"
        "  WHERE r.resolution = g.resolution AND $__timeFilter(r.bucket)\n"
        "  GROUP BY 1, 2)\n"
        f"SELECT time, name AS metric, {select} AS value FROM steps WHERE calls > 0 ORDER BY 1"
    )


def compliance() -> str:
    """Per SLO and step: the share of good events."""
    return _per_step("100 * (1 - bad / calls)")


def burn_rate() -> str:
    """Per SLO and step: how fast the error budget burns (1 = exactly on budget)."""
    return _per_step("(bad / calls) / nullif(1 - target, 0)")


def budget_table() -> str:
    """Each SLO over its own window ending at the dashboard's end: SLI, budget left."""
    start = (
        "CASE WHEN (s.time_window ->> 'isRolling')::boolean IS FALSE\n"
        "               AND s.time_window ->> 'duration' = '1M'\n"
        "            THEN date_trunc('month', $__timeTo()::timestamptz)\n"
        "          WHEN (s.time_window ->> 'isRolling')::boolean IS FALSE\n"
        "            THEN date_trunc('week', $__timeTo()::timestamptz)\n"
        "          ELSE date_trunc('hour', $__timeTo()::timestamptz"
        " - (s.time_window ->> 'duration')::interval) END"
    )
    return (
        f"WITH {SLO_TRANSACTIONS},\n"
        "totals AS (\n"
        "  SELECT s.name, s.covers, s.objective, max(s.target) AS target,\n"
        f"         sum(r.calls)::float8 AS calls, sum({BAD_EVENTS}) AS bad\n"
        f"  {JOIN_ROLLUPS}\n"
        f"    AND r.resolution = 'hour' AND r.bucket >= {start}\n"
        "    AND r.bucket < $__timeTo()::timestamptz\n"
        "  GROUP BY 1, 2, 3)\n"
        'SELECT name AS "SLO", covers AS "covers", objective AS "objective", 100 * target AS "target %",\n'
        '  100 * (1 - bad / nullif(calls, 0)) AS "achieved %",\n'
        '  100 * (1 - (bad / nullif(calls, 0)) / nullif(1 - target, 0)) AS "budget left %",\n'
        '  calls AS "events", bad AS "bad events"\n'
        "FROM totals ORDER BY 6 NULLS LAST, 1"
    )


def attribution() -> str:
    """Bad events of each SLO over the range, shared among the tiers: failed calls
    in proportion to the errors each tier's components recorded, slow ones in
    proportion to each tier's time."""
    names = "ARRAY[" + ", ".join(f"'{tier}'" for tier in TIERS) + "]"
    return (
        f"WITH {GRAIN},\n{SLO_TRANSACTIONS},\n"
        "rows_ AS (\n"
        f"  SELECT s.name, s.objective, r.service, r.bt, r.bucket, r.resolution, {BAD_EVENTS} AS bad,\n"
        "         r.tier_sum_us, r.duration_sum_us\n"
        f"  {JOIN_ROLLUPS}, grain g\n"
        "  WHERE r.resolution = g.resolution AND $__timeFilter(r.bucket)),\n"
        "tier_errors AS (\n"
        "  SELECT c.service, c.bt, c.bucket, c.resolution, c.tier, sum(c.errors)::float8 AS errors,\n"
        "         sum(sum(c.errors)) OVER (PARTITION BY c.service, c.bt, c.bucket, c.resolution)\n"
        "           AS all_errors\n"
        "  FROM component_rollups c, grain g\n"
        "  WHERE c.tenant_id = $tenant AND c.resolution = g.resolution AND $__timeFilter(c.bucket)\n"
        "  GROUP BY 1, 2, 3, 4, 5),\n"
        "owned AS (\n"
        "  SELECT x.name, t.tier, x.bad * t.us / nullif(x.duration_sum_us, 0) AS bad\n"
        f"  FROM rows_ x, unnest(x.tier_sum_us, {names}) AS t(us, tier)\n"
        "  WHERE x.objective <> 'availability' AND x.bad > 0\n"
        "  UNION ALL\n"
        "  SELECT x.name, coalesce(e.tier, 'unattributed'),\n"
        "         CASE WHEN e.tier IS NULL THEN x.bad ELSE x.bad * e.errors / e.all_errors END\n"
        "  FROM rows_ x LEFT JOIN tier_errors e\n"
        "    ON e.service = x.service AND e.bt = x.bt AND e.bucket = x.bucket\n"
        "   AND e.resolution = x.resolution AND e.all_errors > 0 AND e.errors > 0\n"
        "  WHERE x.objective = 'availability' AND x.bad > 0)\n"
        'SELECT name AS "SLO", tier AS "tier", sum(bad) AS "bad events",\n'
        '  100 * sum(bad) / sum(sum(bad)) OVER (PARTITION BY name) AS "share %"\n'
        "FROM owned GROUP BY 1, 2 HAVING sum(bad) > 0 ORDER BY 1, 3 DESC"
    )


# Alerts: the table the evaluator writes (one row per incident). An alert is in
# the range when it was active at any time within it.
ALERTS_IN_RANGE = (
    "FROM alerts a\nWHERE a.tenant_id = $tenant AND a.pending_since <= $__timeTo()::timestamptz\n"
    "  AND (a.resolved_at IS NULL OR a.resolved_at >= $__timeFrom()::timestamptz)"
)
DURATION_MINUTES = (
    "extract(epoch FROM coalesce(a.resolved_at, now()) - coalesce(a.started_at, a.pending_since)) / 60"
)


def open_alerts() -> str:
    return (
        'SELECT count(*) AS "open alerts" FROM alerts a\n'
        "WHERE a.tenant_id = $tenant AND a.state IN ('firing', 'acknowledged')"
    )


def alerts_table(limit: int = 100) -> str:
    """Alerts of the range, open ones first, by priority: who acts, what is hit, what it costs."""
    return (
        'SELECT a.id AS "id", a.state AS "state", a.severity AS "severity", a.title AS "alert",\n'
        '  a.service AS "service", a.tier AS "suspected tier", a.component AS "component",\n'
        '  coalesce(a.started_at, a.pending_since) AS "started", a.resolved_at AS "resolved",\n'
        f'  round(({DURATION_MINUTES})::numeric, 1) AS "minutes",\n'
        "  (a.impact ->> 'users')::int8 AS \"users\", (a.impact ->> 'cost')::float8 AS \"estimated cost\",\n"
        '  a.priority AS "priority"\n'
        f"{ALERTS_IN_RANGE}\n"
        "ORDER BY (a.state = 'resolved'), a.priority DESC, a.id DESC LIMIT " + str(limit)
    )


def alerts_over_time() -> str:
    """Alerts that started in each step, per severity."""
    return (
        "SELECT date_bin('$__interval'::interval, coalesce(a.started_at, a.pending_since),"
        " TIMESTAMPTZ '2000-01-01') AS time,\n"
        "  a.severity AS metric, count(*) AS value\n"
        "FROM alerts a\n"
        "WHERE a.tenant_id = $tenant\n"
        "  AND coalesce(a.started_at, a.pending_since) BETWEEN $__timeFrom() AND $__timeTo()\n"
        "GROUP BY 1, 2 ORDER BY 1"
    )


def alerts_by_tier() -> str:
    """Which layer the alerts of the range pointed at, with their users and cost."""
    return (
        'SELECT coalesce(a.tier, \'not localised\') AS "suspected tier", count(*) AS "alerts",\n'
        "  sum((a.impact ->> 'users')::int8) AS \"users\",\n"
        "  sum((a.impact ->> 'cost')::float8) AS \"estimated cost\",\n"
        f'  round(sum({DURATION_MINUTES})::numeric, 1) AS "minutes"\n'
        f"{ALERTS_IN_RANGE}\nGROUP BY 1 ORDER BY 2 DESC"
    )
