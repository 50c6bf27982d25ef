-- API tokens carry a role (viewer < editor < admin) within their tenant, and a
-- tenant may keep its telemetry for less time than the collector's default.

ALTER TABLE api_keys ADD COLUMN role text;
-- Before roles, an API token could do everything the API offered (read, silence,
-- acknowledge, change alert rules): admin keeps every existing token working.
UPDATE api_keys SET role = 'admin' WHERE kind = 'api';
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role CHECK (
    CASE WHEN kind = 'api' THEN role IN ('viewer', 'editor', 'admin') ELSE role IS NULL END
);
COMMENT ON COLUMN api_keys.role IS 'For API tokens only: viewer reads, editor also writes configuration, admin also manages keys, retention and purges.';

ALTER TABLE tenants ADD COLUMN retention_spans interval;
ALTER TABLE tenants ADD CONSTRAINT tenants_retention_positive CHECK (retention_spans > interval '0');
COMMENT ON COLUMN tenants.retention_spans IS 'Keep this tenant''s spans and traces for this long, if shorter than the collector''s retention (NULL: the collector''s).';
