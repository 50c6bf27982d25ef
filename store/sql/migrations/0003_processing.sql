-- Trace processing (processing/): whom each span talked to, and rollups per
-- minute, hour and day that everything downstream reads. The tables that grow
-- with traffic (and differ with TimescaleDB) are in 0004.

ALTER TABLE spans ADD COLUMN peer text;
COMMENT ON COLUMN spans.component IS 'What the span used: SQL statement, called endpoint, queue destination.';
COMMENT ON COLUMN spans.peer IS 'The other side of a call, a node of the service map: database, external host, broker.';
-- Rollups: one table per resolution, the same columns. Histograms are
-- processing/histogram.py encodings (mergeable, about 1 % relative error).
CREATE TABLE bt_rollups (
    tenant_id integer NOT NULL,
    resolution text NOT NULL,
    bucket timestamptz NOT NULL,
    service text NOT NULL,
    bt text NOT NULL,
    calls bigint NOT NULL,
    errors bigint NOT NULL,
    duration_sum_us bigint NOT NULL,
    duration_max_us bigint NOT NULL,
    apdex_satisfied bigint NOT NULL,
    apdex_tolerating bigint NOT NULL,
    latency bytea NOT NULL,
    tier_sum_us bigint[] NOT NULL,
    tier_latency bytea NOT NULL,
    PRIMARY KEY (tenant_id, resolution, service, bt, bucket),
    CONSTRAINT bt_rollups_resolution CHECK (resolution IN ('minute', 'hour', 'day'))
);
CREATE INDEX bt_rollups_time ON bt_rollups (tenant_id, resolution, bucket);
COMMENT ON TABLE bt_rollups IS 'Per business transaction and minute/hour/day: calls, errors, latency histogram, Apdex counts, time per tier.';
COMMENT ON COLUMN bt_rollups.tier_latency IS 'Histogram of each trace''s time in each tier (dimension = tier index).';

CREATE TABLE component_rollups (
    tenant_id integer NOT NULL,
    resolution text NOT NULL,
    bucket timestamptz NOT NULL,
    service text NOT NULL,
    bt text NOT NULL,
    tier text NOT NULL,
    component text NOT NULL,
    calls bigint NOT NULL,
    errors bigint NOT NULL,
    self_us bigint NOT NULL,
    duration_us bigint NOT NULL,
    PRIMARY KEY (tenant_id, resolution, service, bt, tier, component, bucket),
    CONSTRAINT component_rollups_resolution CHECK (resolution IN ('minute', 'hour', 'day'))
);
CREATE INDEX component_rollups_time ON component_rollups (tenant_id, resolution, bucket);
COMMENT ON TABLE component_rollups IS 'Top components (normalized statement, peer, host) per business transaction, tier and minute/hour/day.';

CREATE TABLE edge_rollups (
    tenant_id integer NOT NULL,
    resolution text NOT NULL,
    bucket timestamptz NOT NULL,
    source text NOT NULL,
    target text NOT NULL,
    target_kind text NOT NULL,
    calls bigint NOT NULL,
    errors bigint NOT NULL,
    duration_sum_us bigint NOT NULL,
    latency bytea NOT NULL,
    PRIMARY KEY (tenant_id, resolution, source, target, target_kind, bucket),
    CONSTRAINT edge_rollups_resolution CHECK (resolution IN ('minute', 'hour', 'day'))
);
CREATE INDEX edge_rollups_time ON edge_rollups (tenant_id, resolution, bucket);
COMMENT ON TABLE edge_rollups IS 'Service map: calls from a service to a service, database or external system.';

CREATE TABLE business_transactions (
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    service text NOT NULL,
    name text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    overflow bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, service, name)
);
COMMENT ON TABLE business_transactions IS 'Known BT names per service, bounded; overflow counts traces sent to _other once the bound is reached.';

CREATE TABLE bt_rules (
    tenant_id integer PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    document jsonb NOT NULL,
    source text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bt_rules IS 'Business-transaction naming rules of a tenant (tierscope bt apply).';

CREATE TABLE processing_progress (
    id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    watermark timestamptz NOT NULL,
    traces bigint NOT NULL DEFAULT 0,
    spans bigint NOT NULL DEFAULT 0,
    late_spans bigint NOT NULL DEFAULT 0,
    excluded_traces bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE processing_progress IS 'How far processing has gone: spans received before watermark are processed. Committed with the results.';
