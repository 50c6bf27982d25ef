-- The declared schema of a tierscope store on plain PostgreSQL: what every
-- migration in migrations/ adds up to. tests/store/test_migrations.py builds one
-- database from this file and one by migrating, and fails if they differ.
-- A migration that changes the schema changes this file too.

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

CREATE TABLE spans (
    tenant_id integer NOT NULL,
    trace_id bytea NOT NULL,
    span_id bytea NOT NULL,
    parent_span_id bytea,
    start_time timestamptz NOT NULL,
    duration_us bigint NOT NULL,
    service text NOT NULL,
    name text NOT NULL,
    kind smallint NOT NULL,
    tier text NOT NULL,
    component text,
    status_code smallint NOT NULL,
    resource_id bigint NOT NULL,
    scope text,
    span_pb bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (start_time);

-- The identity of a span. Retried requests hit it and store nothing twice.
CREATE UNIQUE INDEX spans_identity ON spans (tenant_id, trace_id, span_id, start_time);
-- Spans arrive close to time order: a BRIN index serves time ranges for almost no write cost.
CREATE INDEX spans_start_time ON spans USING brin (start_time);

COMMENT ON TABLE spans IS 'Raw spans. Attributes, events and links are kept losslessly in span_pb (the OTLP Span message); the columns hold what queries need.';
COMMENT ON COLUMN spans.kind IS 'OTLP SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.';
COMMENT ON COLUMN spans.tier IS 'browser, network, web, app, platform, db, cache, queue or external.';
COMMENT ON COLUMN spans.component IS 'What the span talked to: SQL statement, peer host:port, queue destination.';
COMMENT ON COLUMN spans.status_code IS 'OTLP status: 0 unset, 1 ok, 2 error.';

CREATE TABLE schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS 'Migrations applied to this store (store/migrations.py).';
