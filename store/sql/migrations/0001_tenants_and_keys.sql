-- Tenants, their keys, and the resources (service, host, ...) their spans refer to.

CREATE TABLE tenants (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_name_format CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$')
);
COMMENT ON TABLE tenants IS 'One customer organisation; every row of telemetry is scoped by tenant.';

CREATE TABLE api_keys (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind text NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    key_hint text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    CONSTRAINT api_keys_kind CHECK (kind IN ('ingest', 'rum', 'api'))
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, kind);
COMMENT ON TABLE api_keys IS 'Keys are stored as SHA-256 digests only; key_hint is their first characters, for listings.';
COMMENT ON COLUMN api_keys.expires_at IS 'Set when the key is rotated: it keeps working until then, beside its successor.';

CREATE TABLE resources (
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    resource_id bigint NOT NULL,
    service text NOT NULL,
    attributes jsonb NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, resource_id)
);
COMMENT ON TABLE resources IS 'OpenTelemetry resources, stored once; resource_id is a digest of the resource.';
