-- save_config --
-- Store a tenant's alerting configuration, replacing the one it had.
INSERT INTO alert_configs (tenant_id, document, source)
VALUES (%(tenant_id)s, %(document)s, %(source)s)
ON CONFLICT (tenant_id) DO UPDATE
SET document = EXCLUDED.document, source = EXCLUDED.source, updated_at = now()

-- get_config --
-- A tenant's alerting configuration, if it has one.
SELECT document FROM alert_configs WHERE tenant_id = %(tenant_id)s

-- tenant_ids --
-- Every tenant: the evaluator judges each one.
SELECT id FROM tenants ORDER BY id

-- open_alerts --
-- A tenant's alerts that are not resolved: the state the evaluator carries on from.
SELECT * FROM alerts WHERE tenant_id = %(tenant_id)s AND state <> 'resolved' ORDER BY id

-- list_alerts --
-- A tenant's open alerts and those resolved since a given instant.
SELECT * FROM alerts
WHERE tenant_id = %(tenant_id)s AND (state <> 'resolved' OR resolved_at >= %(since)s)
ORDER BY id

-- get_alert --
-- One alert of a tenant.
SELECT * FROM alerts WHERE tenant_id = %(tenant_id)s AND id = %(id)s

-- insert_alert --
-- A new alert (pending or firing).
INSERT INTO alerts (tenant_id, group_key, state, severity, kind, rule, title, service, bts, tier, component,
                    confidence, evidence, impact, priority, pending_since, started_at, last_active_at)
VALUES (%(tenant_id)s, %(group_key)s, %(state)s, %(severity)s, %(kind)s, %(rule)s, %(title)s, %(service)s,
        %(bts)s, %(tier)s, %(component)s, %(confidence)s, %(evidence)s, %(impact)s, %(priority)s,
        %(pending_since)s, %(started_at)s, %(last_active_at)s)
RETURNING id

-- update_alert --
-- An alert's new state and figures after an evaluation. The evaluator read the
-- alert before judging it; someone may have acknowledged it since. Its "still
-- firing" must not undo that acknowledgement (a lost update), while its
-- "resolved" still ends the alert.
UPDATE alerts
SET state = CASE WHEN state = 'acknowledged' AND %(state)s = 'firing' THEN 'acknowledged' ELSE %(state)s END,
    severity = %(severity)s, kind = %(kind)s, rule = %(rule)s, title = %(title)s,
    service = %(service)s, bts = %(bts)s, tier = %(tier)s, component = %(component)s,
    confidence = %(confidence)s, evidence = %(evidence)s, impact = %(impact)s, priority = %(priority)s,
    started_at = %(started_at)s, last_active_at = %(last_active_at)s, resolved_at = %(resolved_at)s,
    updated_at = now()
WHERE tenant_id = %(tenant_id)s AND id = %(id)s

-- delete_alert --
-- A pending alert whose condition went away before its for: it never was an incident.
DELETE FROM alerts WHERE tenant_id = %(tenant_id)s AND id = %(id)s AND state = 'pending'

-- mark_notified --
-- The firing notification of an alert was queued.
UPDATE alerts SET notified = true WHERE tenant_id = %(tenant_id)s AND id = %(id)s

-- acknowledge --
-- Someone took an alert in hand: firing becomes acknowledged.
UPDATE alerts SET state = 'acknowledged', acknowledged_at = %(at)s, acknowledged_by = %(by)s, updated_at = now()
WHERE tenant_id = %(tenant_id)s AND id = %(id)s AND state = 'firing'
RETURNING id

-- create_silence --
-- A silence or maintenance window of a tenant.
INSERT INTO silences (tenant_id, kind, matchers, starts_at, ends_at, comment, created_by)
VALUES (%(tenant_id)s, %(kind)s, %(matchers)s, %(starts_at)s, %(ends_at)s, %(comment)s, %(created_by)s)
RETURNING id

-- list_silences --
-- A tenant's silences and maintenance windows that have not ended before a given instant.
SELECT id, kind, matchers, starts_at, ends_at, comment, created_by, created_at FROM silences
WHERE tenant_id = %(tenant_id)s AND ends_at > %(since)s ORDER BY starts_at, id

-- get_silence --
-- One silence of a tenant.
SELECT id, kind, matchers, starts_at, ends_at, comment, created_by, created_at FROM silences
WHERE tenant_id = %(tenant_id)s AND id = %(id)s

-- update_silence --
-- Change a silence's matchers, times or comment.
UPDATE silences SET matchers = %(matchers)s, starts_at = %(starts_at)s, ends_at = %(ends_at)s,
    comment = %(comment)s
WHERE tenant_id = %(tenant_id)s AND id = %(id)s
RETURNING id

-- delete_silence --
-- Remove a silence of a tenant.
DELETE FROM silences WHERE tenant_id = %(tenant_id)s AND id = %(id)s RETURNING id

-- enqueue --
-- Queue a notification; the same alert, receiver and event is queued once.
INSERT INTO notifications (tenant_id, alert_id, receiver, event, payload, next_attempt_at)
VALUES (%(tenant_id)s, %(alert_id)s, %(receiver)s, %(event)s, %(payload)s, %(at)s)
ON CONFLICT (alert_id, receiver, event) DO NOTHING

-- refresh --
-- Send a firing notification again (receivers that forget alerts not re-sent).
UPDATE notifications SET delivered_at = NULL, next_attempt_at = %(at)s, payload = %(payload)s
WHERE tenant_id = %(tenant_id)s AND alert_id = %(alert_id)s AND receiver = %(receiver)s
  AND event = 'firing' AND delivered_at < %(before)s

-- escalate --
-- Send a firing notification again, with the alert's new severity, when that
-- is worse than the severity it was last sent with.
UPDATE notifications SET delivered_at = NULL, attempts = 0, next_attempt_at = %(at)s, payload = %(payload)s
WHERE tenant_id = %(tenant_id)s AND alert_id = %(alert_id)s AND receiver = %(receiver)s
  AND event = 'firing'
  AND array_position(ARRAY['info', 'warning', 'critical'], payload->>'severity')
      < array_position(ARRAY['info', 'warning', 'critical'], %(payload)s::jsonb->>'severity')
RETURNING id

-- due_notifications --
-- Notifications whose next attempt is due, oldest first, locked for this sender.
SELECT id, tenant_id, alert_id, receiver, event, payload, attempts FROM notifications
WHERE delivered_at IS NULL AND next_attempt_at <= %(now)s
ORDER BY next_attempt_at, id LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- delivered --
-- A receiver accepted a notification.
UPDATE notifications SET delivered_at = %(at)s, attempts = attempts + 1, last_error = NULL WHERE id = %(id)s

-- failed --
-- A delivery attempt failed; try again later.
UPDATE notifications SET attempts = attempts + 1, last_error = %(error)s, next_attempt_at = %(next_at)s
WHERE id = %(id)s

-- list_notifications --
-- A tenant's notifications of one alert (for the API's evidence and tests).
SELECT receiver, event, attempts, delivered_at, last_error FROM notifications
WHERE tenant_id = %(tenant_id)s AND alert_id = %(alert_id)s ORDER BY id

-- bt_window --
-- Every business transaction's minute rollups in a window, per bucket: the
-- input of baseline and threshold rules, and of localisation.
SELECT service, bt, bucket, calls, errors, latency, tier_sum_us FROM bt_rollups
WHERE tenant_id = %(tenant_id)s AND resolution = %(resolution)s
  AND bucket >= %(start)s AND bucket < %(end)s
ORDER BY service, bt, bucket

-- component_window --
-- Time per request of each component of a tier, summed over some business
-- transactions and a window: where a tier's excess comes from.
SELECT r.component, sum(r.calls)::int8, sum(r.errors)::int8, sum(r.self_us)::int8
FROM component_rollups r
JOIN unnest(%(services)s::text[], %(bts)s::text[]) AS k(service, bt) ON r.service = k.service AND r.bt = k.bt
WHERE r.tenant_id = %(tenant_id)s AND r.resolution = 'minute' AND r.tier = %(tier)s
  AND r.bucket >= %(start)s AND r.bucket < %(end)s
GROUP BY r.component

-- affected_users --
-- Users and sessions whose requests to some business transactions failed or
-- were slower than a threshold in a window, and user-minutes (a user affected
-- in a minute).
SELECT count(DISTINCT t.user_hash)::int8, count(DISTINCT t.session_id)::int8, count(*)::int8,
       count(DISTINCT (t.user_hash, date_trunc('minute', t.start_time)))
           FILTER (WHERE t.user_hash IS NOT NULL)::int8
FROM trace_summaries t
JOIN unnest(%(services)s::text[], %(bts)s::text[]) AS k(service, bt) ON t.service = k.service AND t.bt = k.bt
WHERE t.tenant_id = %(tenant_id)s AND t.start_time >= %(start)s AND t.start_time < %(end)s
  AND (t.error OR t.duration_us > %(threshold_us)s)

-- error_origins --
-- Where some transactions' failed requests failed: the tier and component of
-- each one's deepest failing span, counted, over [start, end).
SELECT t.error_tier, coalesce(t.error_component, ''), count(*)::int8
FROM trace_summaries t
JOIN unnest(%(services)s::text[], %(bts)s::text[]) AS k(service, bt) ON t.service = k.service AND t.bt = k.bt
WHERE t.tenant_id = %(tenant_id)s AND t.start_time >= %(start)s AND t.start_time < %(end)s
  AND t.error AND t.error_tier IS NOT NULL
GROUP BY 1, 2

-- latest_minute --
-- The end of the newest minute of data a tenant has, in the day before now.
SELECT max(bucket) + interval '1 minute' FROM bt_rollups
WHERE tenant_id = %(tenant_id)s AND resolution = 'minute'
  AND bucket > %(now)s - interval '1 day' AND bucket < %(now)s

-- rum_window --
-- Real users' experiences per bucket, BT or page, and site in a window (the
-- minute rollups of processing/rum_rollup.py): network and browser signals.
SELECT bucket, service, name, site, count, tier_sum_us FROM rum_rollups
WHERE tenant_id = %(tenant_id)s AND resolution = %(resolution)s
  AND bucket >= %(start)s AND bucket < %(end)s AND count > 0
ORDER BY bucket

-- rum_site_hours --
-- Each site's experiences and time in one tier per hour: what its baseline learns.
SELECT site, bucket, sum(count)::int8, sum(tier_sum_us[%(tier)s])::int8 FROM rum_rollups
WHERE tenant_id = %(tenant_id)s AND resolution = 'hour' AND bucket >= %(start)s AND bucket < %(end)s
  AND site <> ''
GROUP BY site, bucket

-- rum_page_hours --
-- Each BT's (or untraced page's) experiences and time in one tier per hour, all sites.
SELECT service, name, bucket, sum(count)::int8, sum(tier_sum_us[%(tier)s])::int8 FROM rum_rollups
WHERE tenant_id = %(tenant_id)s AND resolution = 'hour' AND bucket >= %(start)s AND bucket < %(end)s
GROUP BY service, name, bucket

-- rum_page_tier --
-- Per page, the experiences of some BTs (or untraced pages) and their time in
-- one tier, now ([start, end)) and before ([before, since)): which page of a
-- transaction got slow in the browser.
SELECT page,
       count(*) FILTER (WHERE start_time >= %(start)s)::int8,
       coalesce(sum((tier_ms->>%(tier)s)::float8) FILTER (WHERE start_time >= %(start)s), 0)::float8,
       count(*) FILTER (WHERE start_time < %(since)s)::int8,
       coalesce(sum((tier_ms->>%(tier)s)::float8) FILTER (WHERE start_time < %(since)s), 0)::float8
FROM rum_experiences e
JOIN unnest(%(services)s::text[], %(names)s::text[]) AS k(service, name)
  ON coalesce(e.service, '') = k.service AND coalesce(e.bt, e.page) = k.name
WHERE e.tenant_id = %(tenant_id)s AND e.state <> 'pending'
  AND ((e.start_time >= %(start)s AND e.start_time < %(end)s)
       OR (e.start_time >= %(before)s AND e.start_time < %(since)s))
GROUP BY page

-- rum_affected --
-- Real users behind some BTs or pages (all when services is NULL) at some sites
-- (all when sites is NULL) in a window: how many experiences there are, and the
-- users, sessions, experiences, user-minutes and sites of those that failed or
-- were slower than a threshold: in one tier when tier is given, else on the
-- server's side (the experience without its browser and network time, what a
-- trace measures).
WITH e AS (
    SELECT coalesce(e.user_hash, e.session_id) AS who, e.session_id, e.site, e.start_time,
           (e.outcome = 'error' OR CASE
                WHEN %(tier)s::text IS NULL THEN
                    e.duration_ms - coalesce((e.tier_ms->>'browser')::float8, 0)
                    - coalesce((e.tier_ms->>'network')::float8, 0) > %(threshold_ms)s
                ELSE coalesce((e.tier_ms->>%(tier)s::text)::float8, 0) > %(threshold_ms)s
            END) AS affected
    FROM rum_experiences e
    WHERE e.tenant_id = %(tenant_id)s AND e.start_time >= %(start)s AND e.start_time < %(end)s
      AND e.state <> 'pending'
      AND (%(sites)s::text[] IS NULL OR e.site = ANY(%(sites)s::text[]))
      AND (%(services)s::text[] IS NULL OR (coalesce(e.service, ''), coalesce(e.bt, e.page)) IN (
           SELECT * FROM unnest(%(services)s::text[], %(names)s::text[])))
)
SELECT count(*)::int8,
       count(DISTINCT who) FILTER (WHERE affected)::int8,
       count(DISTINCT session_id) FILTER (WHERE affected)::int8,
       count(*) FILTER (WHERE affected)::int8,
       count(DISTINCT (who, date_trunc('minute', start_time))) FILTER (WHERE affected AND who IS NOT NULL)::int8,
       coalesce(array_agg(DISTINCT site ORDER BY site) FILTER (WHERE affected AND site IS NOT NULL AND site <> ''),
                '{}')
FROM e
