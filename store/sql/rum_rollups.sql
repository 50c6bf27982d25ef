-- rollup_rows --
-- Stored rum_rollups rows for some keys (to merge a round's figures into them).
SELECT r.* FROM unnest(%(tenants)s::int4[], %(services)s::text[], %(names)s::text[], %(sites)s::text[],
                       %(buckets)s::timestamptz[]) AS k(tenant_id, service, name, site, bucket)
JOIN rum_rollups r ON r.tenant_id = k.tenant_id AND r.resolution = %(resolution)s
 AND r.service = k.service AND r.name = k.name AND r.site = k.site AND r.bucket = k.bucket

-- write_rollup --
-- Store a merged rum_rollups row (the joiner holds the write turn: no concurrent writer).
INSERT INTO rum_rollups (tenant_id, resolution, bucket, service, name, site, count, errors, duration_sum_ms,
                         apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_errors, vital_count,
                         vital_good, vital_poor, vitals)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, resolution, service, name, site, bucket) DO UPDATE SET
  count = EXCLUDED.count, errors = EXCLUDED.errors, duration_sum_ms = EXCLUDED.duration_sum_ms,
  apdex_satisfied = EXCLUDED.apdex_satisfied, apdex_tolerating = EXCLUDED.apdex_tolerating,
  latency = EXCLUDED.latency, tier_sum_us = EXCLUDED.tier_sum_us, tier_errors = EXCLUDED.tier_errors,
  vital_count = EXCLUDED.vital_count, vital_good = EXCLUDED.vital_good, vital_poor = EXCLUDED.vital_poor,
  vitals = EXCLUDED.vitals

-- known_names --
-- The page names (untraced) and sites a tenant's rollups hold (day rows: every
-- key has one), for the joiner's bound on user-made keys.
SELECT array_agg(DISTINCT name) FILTER (WHERE service = ''), array_agg(DISTINCT site) FILTER (WHERE site <> '')
FROM rum_rollups WHERE tenant_id = %(tenant_id)s AND resolution = 'day'

-- window_rows --
-- A tenant's rum_rollups rows of a window at one resolution, optionally of one
-- BT/page and one site: what the experience summary (and the console) merges.
SELECT service, name, site, count, errors, duration_sum_ms, apdex_satisfied, apdex_tolerating, latency,
       tier_sum_us, tier_errors, vital_count, vital_good, vital_poor, vitals
FROM rum_rollups
WHERE tenant_id = %(tenant_id)s AND resolution = %(resolution)s
  AND bucket >= %(start)s AND bucket < %(end)s
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(site)s::text IS NULL OR site = %(site)s)

-- window_groups --
-- A tenant's rum_rollups figures per (service, name, site) over some segments
-- (resolution, start, end), optionally of one service and name: counts summed, each array column as the array of
-- its rows' arrays (summed by the caller), the histograms concatenated (as
-- histogram.Merged reads them). A page of a busy hour gets 30 rows, not 3,000.
SELECT r.service, r.name, r.site, sum(r.count)::int8 AS count, sum(r.errors)::int8 AS errors,
       sum(r.duration_sum_ms)::float8 AS duration_sum_ms, sum(r.apdex_satisfied)::int8 AS apdex_satisfied,
       sum(r.apdex_tolerating)::int8 AS apdex_tolerating, string_agg(r.latency, ''::bytea) AS latency,
       array_agg(r.tier_sum_us) AS tier_sum_us, array_agg(r.tier_errors) AS tier_errors,
       array_agg(r.vital_count) AS vital_count, array_agg(r.vital_good) AS vital_good,
       array_agg(r.vital_poor) AS vital_poor, string_agg(r.vitals, ''::bytea) AS vitals
FROM unnest(%(resolutions)s::text[], %(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS s(resolution, first, last)
JOIN rum_rollups r ON r.tenant_id = %(tenant_id)s AND r.resolution = s.resolution
 AND r.bucket >= s.first AND r.bucket < s.last
WHERE (%(service)s::text IS NULL OR r.service = %(service)s) AND (%(name)s::text IS NULL OR r.name = %(name)s)
GROUP BY r.service, r.name, r.site

-- transaction_rows --
-- Some business transactions' rum_rollups rows of a window, per bucket and site:
-- the inputs of user-experienced SLIs, burn rates and attribution by tier and site.
SELECT r.bucket, r.service, r.name, r.site, r.count, r.errors, r.apdex_satisfied, r.apdex_tolerating,
       r.latency, r.tier_sum_us, r.tier_errors
FROM rum_rollups r
JOIN unnest(%(services)s::text[], %(bts)s::text[]) AS k(service, bt) ON r.service = k.service AND r.name = k.bt
WHERE r.tenant_id = %(tenant_id)s AND r.resolution = %(resolution)s
  AND r.bucket >= %(start)s AND r.bucket < %(end)s
ORDER BY r.bucket

-- counts_per_minute --
-- For dashboards: experiences, errors and Apdex per minute of a window (all BTs
-- and sites, or one of each), in time order.
SELECT bucket, sum(count)::int8 AS experiences, sum(errors)::int8 AS errors,
       (sum(apdex_satisfied) + sum(apdex_tolerating) / 2.0) / NULLIF(sum(count), 0) AS apdex
FROM rum_rollups
WHERE tenant_id = %(tenant_id)s AND resolution = 'minute' AND bucket >= %(start)s AND bucket < %(end)s
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(site)s::text IS NULL OR site = %(site)s)
GROUP BY bucket ORDER BY bucket

-- tier_ms_by_site --
-- For dashboards: mean milliseconds per experience in each tier, per site, over a
-- window (tiers given in the stored order: TIERS then server).
SELECT r.site, t.tier, sum(t.us)::float8 / 1000 / NULLIF(sum(r.count), 0) AS mean_ms
FROM rum_rollups r, unnest(r.tier_sum_us, %(tiers)s::text[]) AS t(us, tier)
WHERE r.tenant_id = %(tenant_id)s AND r.resolution = %(resolution)s
  AND r.bucket >= %(start)s AND r.bucket < %(end)s
  AND (%(name)s::text IS NULL OR r.name = %(name)s)
GROUP BY r.site, t.tier ORDER BY r.site, t.tier
