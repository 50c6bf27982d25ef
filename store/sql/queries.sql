-- create_tenant --
-- Add a tenant; its id scopes everything it sends and reads.
INSERT INTO tenants (name) VALUES (%(name)s) RETURNING id, name, created_at

-- get_tenant --
-- A tenant by name.
SELECT id, name, created_at FROM tenants WHERE name = %(name)s

-- list_tenants --
-- All tenants with their live keys per kind.
SELECT t.id, t.name, t.created_at,
       count(k.id) FILTER (WHERE k.kind = 'ingest') AS ingest_keys,
       count(k.id) FILTER (WHERE k.kind = 'rum') AS rum_keys,
       count(k.id) FILTER (WHERE k.kind = 'api') AS api_tokens
FROM tenants t
LEFT JOIN api_keys k ON k.tenant_id = t.id AND k.revoked_at IS NULL
     AND (k.expires_at IS NULL OR k.expires_at > now())
GROUP BY t.id ORDER BY t.name

-- insert_key --
-- Store a new key as its digest.
INSERT INTO api_keys (tenant_id, kind, key_hash, key_hint, role)
VALUES (%(tenant_id)s, %(kind)s, %(key_hash)s, %(key_hint)s, %(role)s)
RETURNING id

-- expire_keys --
-- On rotation: the tenant's live keys of one kind (and role, for API tokens) stop working after a grace period.
UPDATE api_keys SET expires_at = now() + %(grace)s
WHERE tenant_id = %(tenant_id)s AND kind = %(kind)s AND revoked_at IS NULL
  AND role IS NOT DISTINCT FROM %(role)s
  AND (expires_at IS NULL OR expires_at > now() + %(grace)s)

-- revoke_kind --
-- Revoke every live key of one kind of a tenant at once.
UPDATE api_keys SET revoked_at = now()
WHERE tenant_id = %(tenant_id)s AND kind = %(kind)s AND revoked_at IS NULL

-- revoke_key --
-- Revoke one key of a tenant, found by its digest.
UPDATE api_keys SET revoked_at = now()
WHERE tenant_id = %(tenant_id)s AND key_hash = %(key_hash)s AND revoked_at IS NULL

-- find_key --
-- Look a presented key up by its digest (the digest is the index key).
SELECT k.key_hash, k.kind, k.tenant_id, t.name AS tenant,
       k.revoked_at IS NOT NULL AS revoked,
       k.expires_at IS NOT NULL AND k.expires_at <= now() AS expired,
       k.role, k.id
FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
WHERE k.key_hash = %(key_hash)s

-- list_keys --
-- A tenant's keys, newest first, without their digests.
SELECT id, kind, role, key_hint, created_at, expires_at, revoked_at,
       revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) AS live
FROM api_keys WHERE tenant_id = %(tenant_id)s
ORDER BY created_at DESC, id DESC

-- revoke_key_id --
-- Revoke one key of a tenant by its id (another tenant's id matches nothing).
UPDATE api_keys SET revoked_at = now()
WHERE tenant_id = %(tenant_id)s AND id = %(key_id)s AND revoked_at IS NULL
RETURNING id

-- insert_resource --
-- Record a resource the first time a span refers to it.
INSERT INTO resources (tenant_id, resource_id, service, attributes)
VALUES (%(tenant_id)s, %(resource_id)s, %(service)s, %(attributes)s)
ON CONFLICT DO NOTHING

-- trace_spans --
-- Every span of one trace of one tenant, with its resource.
SELECT s.trace_id, s.span_id, s.parent_span_id, s.start_time, s.duration_us, s.service,
       s.name, s.kind, s.tier, s.component, s.peer, s.status_code, s.scope, s.span_pb,
       r.attributes AS resource
FROM spans s
LEFT JOIN resources r ON r.tenant_id = s.tenant_id AND r.resource_id = s.resource_id
WHERE s.tenant_id = %(tenant_id)s AND s.trace_id = %(trace_id)s
ORDER BY s.start_time, s.span_id
LIMIT %(limit)s

-- recent_traces --
-- Traces of one tenant that started in a window, newest first, optionally only those
-- touching a service and lasting at least a given time.
WITH window_spans AS (
    SELECT trace_id, span_id, parent_span_id, start_time, duration_us, service, name,
           tier, status_code
    FROM spans
    WHERE tenant_id = %(tenant_id)s
      AND start_time >= %(since)s AND start_time < %(until)s
), traces AS (
    SELECT trace_id,
           min(start_time) AS start_time,
           max(start_time + duration_us * interval '1 microsecond') AS end_time,
           count(*) AS span_count,
           count(*) FILTER (WHERE status_code = 2) AS error_count,
           array_agg(DISTINCT service ORDER BY service) AS services,
           (array_agg(service ORDER BY parent_span_id IS NOT NULL, start_time))[1] AS root_service,
           (array_agg(name ORDER BY parent_span_id IS NOT NULL, start_time))[1] AS root_name
    FROM window_spans
    GROUP BY trace_id
)
SELECT trace_id, start_time, end_time, span_count, error_count, services, root_service, root_name,
       extract(epoch FROM end_time - start_time) * 1000 AS duration_ms
FROM traces
WHERE (%(service)s::text IS NULL OR %(service)s::text = ANY (services))
  AND extract(epoch FROM end_time - start_time) * 1000 >= %(min_duration_ms)s
ORDER BY start_time DESC
LIMIT %(limit)s
