-- save_business_service --
-- Store a business service of a tenant, replacing one of the same name.
INSERT INTO business_services (tenant_id, name, criticality, document, source)
VALUES (%(tenant_id)s, %(name)s, %(criticality)s, %(document)s, %(source)s)
ON CONFLICT (tenant_id, name) DO UPDATE
SET criticality = EXCLUDED.criticality, document = EXCLUDED.document,
    source = EXCLUDED.source, updated_at = now()

-- save_slo --
-- Store an SLO of a tenant, replacing one of the same name.
INSERT INTO slos (tenant_id, name, document, source)
VALUES (%(tenant_id)s, %(name)s, %(document)s, %(source)s)
ON CONFLICT (tenant_id, name) DO UPDATE
SET document = EXCLUDED.document, source = EXCLUDED.source, updated_at = now()

-- prune_slos --
-- Remove a tenant's SLOs that are not among the names given.
DELETE FROM slos WHERE tenant_id = %(tenant_id)s AND NOT name = ANY(%(keep)s::text[])

-- prune_business_services --
-- Remove a tenant's business services that are not among the names given.
DELETE FROM business_services WHERE tenant_id = %(tenant_id)s AND NOT name = ANY(%(keep)s::text[])

-- save_calendar --
-- Store a tenant's business calendar, replacing the one it had.
INSERT INTO business_calendars (tenant_id, document, source)
VALUES (%(tenant_id)s, %(document)s, %(source)s)
ON CONFLICT (tenant_id) DO UPDATE
SET document = EXCLUDED.document, source = EXCLUDED.source, updated_at = now()

-- delete_calendar --
-- Remove a tenant's business calendar (the TIERSCOPE_BUSINESS_* defaults apply again).
DELETE FROM business_calendars WHERE tenant_id = %(tenant_id)s

-- get_calendar --
-- A tenant's business calendar, if it has one.
SELECT document FROM business_calendars WHERE tenant_id = %(tenant_id)s

-- list_slos --
-- A tenant's SLOs, by name.
SELECT name, document, source, updated_at FROM slos WHERE tenant_id = %(tenant_id)s ORDER BY name

-- list_business_services --
-- A tenant's business services, by name.
SELECT name, criticality, document, source, updated_at
FROM business_services WHERE tenant_id = %(tenant_id)s ORDER BY name

-- bt_buckets --
-- Some business transactions' rollups, summed per bucket: the inputs of SLIs,
-- burn rates and baselines. Latency histograms come back concatenated.
SELECT r.bucket, sum(r.calls)::int8, sum(r.errors)::int8, sum(r.apdex_satisfied)::int8,
       sum(r.apdex_tolerating)::int8,
       ARRAY[sum(r.tier_sum_us[1]), sum(r.tier_sum_us[2]), sum(r.tier_sum_us[3]), sum(r.tier_sum_us[4]),
             sum(r.tier_sum_us[5]), sum(r.tier_sum_us[6]), sum(r.tier_sum_us[7]), sum(r.tier_sum_us[8]),
             sum(r.tier_sum_us[9])]::int8[],
       string_agg(r.latency, ''::bytea)
FROM bt_rollups r
JOIN unnest(%(services)s::text[], %(bts)s::text[]) AS k(service, bt) ON r.service = k.service AND r.bt = k.bt
WHERE r.tenant_id = %(tenant_id)s AND r.resolution = %(resolution)s
  AND r.bucket >= %(start)s AND r.bucket < %(end)s
GROUP BY r.bucket ORDER BY r.bucket

-- tier_buckets --
-- Some business transactions' component rollups, summed per bucket and tier:
-- calls and errors of each tier, for error attribution and tier availability.
SELECT r.bucket, r.tier, sum(r.calls)::int8, sum(r.errors)::int8
FROM component_rollups r
JOIN unnest(%(services)s::text[], %(bts)s::text[]) AS k(service, bt) ON r.service = k.service AND r.bt = k.bt
WHERE r.tenant_id = %(tenant_id)s AND r.resolution = %(resolution)s
  AND r.bucket >= %(start)s AND r.bucket < %(end)s
GROUP BY r.bucket, r.tier ORDER BY r.bucket

-- bad_by_site --
-- Some business transactions' processed traces, per site (user location, from
-- the entry span's tierscope.site): failed ones, ones slower than a threshold, all.
SELECT t.site, count(*) FILTER (WHERE t.error)::int8,
       count(*) FILTER (WHERE t.duration_us > %(threshold_us)s)::int8, count(*)::int8
FROM trace_summaries t
JOIN unnest(%(services)s::text[], %(bts)s::text[]) AS k(service, bt) ON t.service = k.service AND t.bt = k.bt
WHERE t.tenant_id = %(tenant_id)s AND t.start_time >= %(start)s AND t.start_time < %(end)s
GROUP BY t.site
