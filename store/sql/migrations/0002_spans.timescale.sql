-- TimescaleDB variant of 0002_spans.sql: the same columns and indexes, as a
-- hypertable with daily chunks and compression. Retention is a policy set by
-- store/partitions.py from TIERSCOPE_RETENTION_SPANS.

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
);
SELECT create_hypertable('spans', by_range('start_time', INTERVAL '1 day'));
CREATE UNIQUE INDEX spans_identity ON spans (tenant_id, trace_id, span_id, start_time);
ALTER TABLE spans SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'tenant_id',
    timescaledb.compress_orderby = 'start_time'
);
SELECT add_compression_policy('spans', INTERVAL '4 days');
