"""The SQL of the user-experience dashboard: Web Vitals by page and site, and
where real users' time went (the experiences' tier split).

Every query reads the raw experiences (``rum_experiences``, one row per user
action) through :data:`SOURCE` and :data:`STEP`, and nothing else in the
dashboards does: when per-minute RUM rollups land, this module is the one place
to change. Percentiles are computed exactly (``percentile_cont``) because raw
rows are still at hand; experiences are a few per user action, far fewer rows
than spans.
"""

from __future__ import annotations

from tierscope.collector.tiers import TIERS

# Web Vitals as the RUM script reports them (ms, CLS unitless); web.dev's names.
VITALS = {"lcp": "LCP", "inp": "INP", "cls": "CLS", "fcp": "FCP", "ttfb": "TTFB"}
GOOD_LCP_MS = 2500  # web.dev: LCP up to 2.5 s is good

SOURCE = "FROM rum_experiences e\nWHERE e.tenant_id = $tenant AND $__timeFilter(e.start_time)"
STEP = "date_bin('$__interval'::interval, e.start_time, TIMESTAMPTZ '2000-01-01') AS time"
SITE = "coalesce(e.site, '(no site)')"
# A page load is named by its page; an in-page request by its business transaction once joined.
ACTION = "coalesce(e.bt, e.page)"


def _p75(expression: str, condition: str | None = None) -> str:
    where = f" FILTER (WHERE {condition})" if condition else ""
    return f"percentile_cont(0.75) WITHIN GROUP (ORDER BY {expression}){where}"


def _vital(name: str) -> str:
    return f"(e.vitals ->> '{name}')::float8"


def vital_p75_by_page(vital: str) -> str:
    """A series per page of the vital's 75th percentile (page loads that reported it)."""
    return (
        f"SELECT {STEP}, e.page AS metric, {_p75(_vital(vital))} AS value\n{SOURCE}\n"
        f"  AND e.kind = 'page_load' AND e.vitals ? '{vital}'\nGROUP BY 1, 2 ORDER BY 1"
    )


def vitals_table() -> str:
    """Per (page, site): page loads, each vital's p75 and the share of good LCP."""
    columns = ",\n  ".join(f'{_p75(_vital(key))} AS "{label} p75"' for key, label in VITALS.items())
    return (
        f'SELECT e.page AS "page", {SITE} AS "site", count(*) AS "page loads",\n  {columns},\n'
        f"  100.0 * count(*) FILTER (WHERE {_vital('lcp')} <= {GOOD_LCP_MS}) "
        f"/ nullif(count(*) FILTER (WHERE e.vitals ? 'lcp'), 0) AS \"good LCP %\"\n"
        f"{SOURCE}\n  AND e.kind = 'page_load'\nGROUP BY 1, 2 ORDER BY 3 DESC LIMIT 50"
    )


def duration_p75_by_site() -> str:
    """A series per site of the 75th percentile of what users waited (every experience)."""
    return (
        f"SELECT {STEP}, {SITE} AS metric, {_p75('e.duration_ms')} AS value\n{SOURCE}\n"
        "GROUP BY 1, 2 ORDER BY 1"
    )


def tier_split() -> str:
    """Mean milliseconds per experience in each tier (browser, network, then the
    server's tiers once joined with the trace): the stack is the mean duration."""
    order = "array_position(ARRAY[" + ", ".join(f"'{t}'" for t in (*TIERS, "server")) + "], t.tier)"
    return (
        "WITH split AS (\n"
        f"  SELECT {STEP}, t.tier, sum(t.ms::float8) AS ms\n"
        "  FROM rum_experiences e, jsonb_each_text(e.tier_ms) AS t(tier, ms)\n"
        "  WHERE e.tenant_id = $tenant AND $__timeFilter(e.start_time) AND e.tier_ms IS NOT NULL\n"
        "  GROUP BY 1, 2),\n"
        "steps AS (\n"
        f"  SELECT {STEP}, count(*) AS experiences\n"
        "  FROM rum_experiences e\n"
        "  WHERE e.tenant_id = $tenant AND $__timeFilter(e.start_time) AND e.tier_ms IS NOT NULL\n"
        "  GROUP BY 1)\n"
        "SELECT s.time, t.tier AS metric, t.ms / s.experiences AS value\n"
        "FROM split t JOIN steps s ON s.time = t.time\n"
        f"ORDER BY 1, {order}"
    )


def experiences_per_minute() -> str:
    """User actions and failed ones, per minute."""
    minutes = "(extract(epoch FROM '$__interval'::interval) / 60)"
    return (
        f'SELECT {STEP}, count(*) / {minutes} AS "experiences",\n'
        f"  count(*) FILTER (WHERE e.outcome = 'error') / {minutes} AS \"failed\"\n"
        f"{SOURCE}\nGROUP BY 1 ORDER BY 1"
    )


def slowest_actions(limit: int = 25) -> str:
    """Pages and transactions by what users waited at the 75th percentile, per site."""
    return (
        f'SELECT {ACTION} AS "page or transaction", {SITE} AS "site", count(*) AS "experiences",\n'
        f'  {_p75("e.duration_ms")} AS "p75 ms",\n'
        f"  100.0 * count(*) FILTER (WHERE e.outcome = 'error') / count(*) AS \"failed %\",\n"
        f"  avg((e.tier_ms ->> 'browser')::float8) AS \"browser ms\",\n"
        f"  avg((e.tier_ms ->> 'network')::float8) AS \"network ms\"\n"
        f"{SOURCE}\nGROUP BY 1, 2 ORDER BY 4 DESC LIMIT {limit}"
    )
