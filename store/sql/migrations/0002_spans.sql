-- Raw spans, partitioned by day on plain PostgreSQL (store/partitions.py creates
-- partitions ahead and drops expired ones). With TimescaleDB the variant
-- 0002_spans.timescale.sql makes the same table a hypertable instead.

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
