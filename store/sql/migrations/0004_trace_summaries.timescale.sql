-- TimescaleDB variant of 0004_trace_summaries.sql: a btree on arrival (spans
-- is a hypertable) and summaries as a hypertable with daily chunks; retention
-- is a policy set by store/partitions.py.

CREATE INDEX spans_received_at ON spans (received_at);

CREATE TABLE trace_summaries (
    tenant_id integer NOT NULL,
    trace_id bytea NOT NULL,
    start_time timestamptz NOT NULL,
    duration_us bigint NOT NULL,
    service text NOT NULL,
    bt text NOT NULL,
    error boolean NOT NULL,
    error_tier text,
    error_component text,
    tier_us bigint[] NOT NULL,
    span_count integer NOT NULL,
    user_hash text,
    session_id text,
    site text,
    processed_at timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('trace_summaries', by_range('start_time', INTERVAL '1 day'));
CREATE UNIQUE INDEX trace_summaries_identity ON trace_summaries (tenant_id, trace_id, start_time);
CREATE INDEX trace_summaries_bt ON trace_summaries (tenant_id, service, bt, start_time);
COMMENT ON TABLE trace_summaries IS 'One row per processed trace: its business transaction, time per tier, outcome.';
COMMENT ON COLUMN trace_summaries.tier_us IS 'Self time per tier in microseconds, in the order browser, network, web, app, platform, db, cache, queue, external.';
COMMENT ON COLUMN trace_summaries.error_tier IS 'Where the error originated: the tier of the deepest failing span.';
