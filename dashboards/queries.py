"""The SQL the dashboards' panels run on the rollups (Grafana's PostgreSQL
datasource, with its macros).

Every time series reads the coarsest rollup resolution that still describes the
dashboard's range (minutes up to 3 days, hours up to 60 days, then days) and
groups rows into steps no finer than that resolution, so a 30-day panel reads
hour rows and a counter is never split across steps. Text variables are
interpolated with ``${var:sqlstring}`` (quoted, quotes doubled): service and
transaction names come from telemetry and must never become SQL.

Quantiles are read from the stored latency histograms in SQL: each histogram is
an 8-byte header and then one little-endian word per bucket (the bucket index in
the top 16 bits, its count in the low 48; see processing/histogram.py), and a
bucket's duration is ``2·γ^k/(γ+1)`` µs with γ = 1.02.
"""

from __future__ import annotations

from tierscope.collector.tiers import TIERS
from tierscope.processing.histogram import GAMMA

GRAIN = """grain AS (
  SELECT resolution, greatest('$__interval'::interval, step) AS width
  FROM (SELECT CASE WHEN d > interval '60 days' THEN 'day' WHEN d > interval '3 days' THEN 'hour'
                    ELSE 'minute' END AS resolution,
               CASE WHEN d > interval '60 days' THEN interval '1 day'
                    WHEN d > interval '3 days' THEN interval '1 hour' ELSE interval '1 minute' END AS step
        FROM (SELECT $__timeTo()::timestamptz - $__timeFrom()::timestamptz AS d) AS range_) AS choice
)"""

SERVICE = "r.service = ${service:sqlstring}"
TRANSACTION = f"{SERVICE} AND r.bt = ${{bt:sqlstring}}"
TIME = "date_bin(g.width, r.bucket, TIMESTAMPTZ '2000-01-01') AS time"


def _rollups(table: str, where: str) -> str:
    return (
        f"FROM {table} r, grain g WHERE r.tenant_id = $tenant AND r.resolution = g.resolution "
        f"AND $__timeFilter(r.bucket) AND {where}"
    )


def per_bt(expression: str, where: str = SERVICE) -> str:
    """A series per business transaction of ``expression`` over rollup rows ``r``."""
    return (
        f"WITH {GRAIN}\nSELECT {TIME}, r.bt AS metric, {expression} AS value\n"
        f"{_rollups('bt_rollups', where)}\nGROUP BY 1, 2 ORDER BY 1"
    )


def total(expressions: dict[str, str], where: str) -> str:
    """One series per named expression, over the rows ``where`` selects."""
    columns = ", ".join(f'{sql} AS "{name}"' for name, sql in expressions.items())
    return f"WITH {GRAIN}\nSELECT {TIME}, {columns}\n{_rollups('bt_rollups', where)}\nGROUP BY 1 ORDER BY 1"


CALLS_PER_MINUTE = "sum(r.calls) / (max(extract(epoch FROM g.width)) / 60)"
ERROR_PERCENT = "100.0 * sum(r.errors) / nullif(sum(r.calls), 0)"
MEAN_MS = "sum(r.duration_sum_us) / nullif(sum(r.calls), 0) / 1000.0"
APDEX = "(sum(r.apdex_satisfied) + sum(r.apdex_tolerating) / 2.0) / nullif(sum(r.calls), 0)"


def tier_ms(where: str) -> str:
    """Mean self time per call in each tier, one series per tier (stacks to the mean duration)."""
    names = "ARRAY[" + ", ".join(f"'{tier}'" for tier in TIERS) + "]"
    return (
        f"WITH {GRAIN}\nSELECT {TIME}, t.tier AS metric, "
        "sum(t.us) / nullif(sum(r.calls), 0) / 1000.0 AS value\n"
        f"FROM bt_rollups r, grain g, unnest(r.tier_sum_us, {names}) AS t(us, tier)\n"
        "WHERE r.tenant_id = $tenant AND r.resolution = g.resolution AND $__timeFilter(r.bucket) "
        f"AND {where}\nGROUP BY 1, 2 HAVING sum(t.us) > 0 ORDER BY 1"
    )


def _word(offset: str) -> tuple[str, str]:
    """(bucket index, count) of the histogram word at byte ``offset`` of r.latency."""
    key = f"(get_byte(r.latency, {offset} + 6) + get_byte(r.latency, {offset} + 7) * 256)"
    count = " + ".join(f"(get_byte(r.latency, {offset} + {b})::int8 << {8 * b})" for b in range(6))
    return key, f"({count})"


def quantiles(levels: dict[str, float], where: str, by_bt: bool = False) -> str:
    """Latency quantiles (ms) from the merged histograms, per step (or per BT, as a table)."""
    key, count = _word("8 * w")
    part = "bt" if by_bt else "time"
    group = "r.bt AS bt" if by_bt else TIME
    value = f"CASE WHEN k = 0 THEN 0.001 ELSE 2 * power({GAMMA}, k) / {GAMMA + 1} / 1000 END"
    picks = ", ".join(
        f'min({value}) FILTER (WHERE running >= {level} * total) AS "{name}"'
        for name, level in levels.items()
    )
    return (
        f"WITH {GRAIN},\nwords AS (\n  SELECT {group}, {key} AS k, sum({count}) AS n\n"
        "  FROM bt_rollups r, grain g, generate_series(1, length(r.latency) / 8 - 1) AS w\n"
        "  WHERE r.tenant_id = $tenant AND r.resolution = g.resolution AND $__timeFilter(r.bucket) "
        f"AND {where}\n  GROUP BY 1, 2),\n"
        f"cumulative AS (\n  SELECT *, sum(n) OVER (PARTITION BY {part} ORDER BY k) AS running,\n"
        f"         sum(n) OVER (PARTITION BY {part}) AS total FROM words)\n"
        f"SELECT {part}, {picks} FROM cumulative GROUP BY 1 ORDER BY 1"
    )


def transactions_table(where: str = SERVICE) -> str:
    """Every BT of the service over the range: calls, errors, mean, Apdex, p95."""
    p95 = quantiles({"p95_ms": 0.95}, where, by_bt=True)
    return (
        f"WITH figures AS (\n{_indent(per_bt_totals(where))}),\n"
        f"p95 AS (\n{_indent(p95)})\n"
        'SELECT f.bt AS "transaction", f.calls, f.error_percent AS "errors %", f.mean_ms AS "mean ms", '
        'p.p95_ms AS "p95 ms", f.apdex AS "Apdex"\n'
        "FROM figures f LEFT JOIN p95 p ON p.bt = f.bt ORDER BY f.calls DESC"
    )


def per_bt_totals(where: str) -> str:
    return (
        f"WITH {GRAIN}\nSELECT r.bt, sum(r.calls) AS calls, {ERROR_PERCENT} AS error_percent, "
        f"{MEAN_MS} AS mean_ms, {APDEX} AS apdex\n{_rollups('bt_rollups', where)}\nGROUP BY 1"
    )


def top_components(limit: int = 20) -> str:
    """The components where the transaction's time went: self time, calls, errors."""
    return (
        f"WITH {GRAIN}\nSELECT r.tier, r.component, sum(r.calls) AS calls, sum(r.errors) AS errors,\n"
        '  sum(r.self_us) / 1000.0 AS "self ms total",\n'
        '  sum(r.self_us) / nullif(sum(r.calls), 0) / 1000.0 AS "self ms per call"\n'
        f"{_rollups('component_rollups', TRANSACTION)}\nGROUP BY 1, 2 ORDER BY 5 DESC LIMIT {limit}"
    )


def _indent(sql: str) -> str:
    return "\n".join("  " + line for line in sql.splitlines())
