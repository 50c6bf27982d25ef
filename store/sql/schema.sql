-- The declared schema of a tierscope store on plain PostgreSQL: what every
-- migration in migrations/ adds up to. tests/store/test_migrations.py builds one
-- database from this file and one by migrating, and fails if they differ.
-- A migration that changes the schema changes this file too.

CREATE TABLE tenants (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    retention_spans interval,
    CONSTRAINT tenants_name_format CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    CONSTRAINT tenants_retention_positive CHECK (retention_spans > interval '0')
);
COMMENT ON TABLE tenants IS 'One customer organisation; every row of telemetry is scoped by tenant.';
COMMENT ON COLUMN tenants.retention_spans IS 'Keep this tenant''s spans and traces for this long, if shorter than the collector''s retention (NULL: the collector''s).';

CREATE TABLE api_keys (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind text NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    key_hint text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    role text,
    CONSTRAINT api_keys_kind CHECK (kind IN ('ingest', 'rum', 'api')),
    CONSTRAINT api_keys_role CHECK (
        CASE WHEN kind = 'api' THEN role IN ('viewer', 'editor', 'admin') ELSE role IS NULL END
    )
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, kind);
COMMENT ON TABLE api_keys IS 'Keys are stored as SHA-256 digests only; key_hint is their first characters, for listings.';
COMMENT ON COLUMN api_keys.expires_at IS 'Set when the key is rotated: it keeps working until then, beside its successor.';
COMMENT ON COLUMN api_keys.role IS 'For API tokens only: viewer reads, editor also writes configuration, admin also manages keys, retention and purges.';

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
    received_at timestamptz NOT NULL DEFAULT now(),
    peer text
) PARTITION BY RANGE (start_time);

-- The identity of a span. Retried requests hit it and store nothing twice.
CREATE UNIQUE INDEX spans_identity ON spans (tenant_id, trace_id, span_id, start_time);
-- Spans arrive close to time order: a BRIN index serves time ranges for almost no write cost.
CREATE INDEX spans_start_time ON spans USING brin (start_time);

COMMENT ON TABLE spans IS 'Raw spans. Attributes, events and links are kept losslessly in span_pb (the OTLP Span message); the columns hold what queries need.';
COMMENT ON COLUMN spans.kind IS 'OTLP SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.';
COMMENT ON COLUMN spans.tier IS 'browser, network, web, app, platform, db, cache, queue or external.';
COMMENT ON COLUMN spans.component IS 'What the span used: SQL statement, called endpoint, queue destination.';
COMMENT ON COLUMN spans.status_code IS 'OTLP status: 0 unset, 1 ok, 2 error.';
COMMENT ON COLUMN spans.peer IS 'The other side of a call, a node of the service map: database, external host, broker.';

-- Processing reads spans by arrival; arrival is close to time order: BRIN.
-- The partitioned index keeps autosummarize = on (a partitioned index cannot
-- change its storage parameters), but every partition's index has it off
-- (migration 0013, store/partitions.py): processing summarizes new ranges
-- itself (store/span_ranges.py); an unsummarized range is read whole by every
-- window query.
CREATE INDEX spans_received_at ON spans USING brin (received_at) WITH (pages_per_range = 32, autosummarize = on);

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
) PARTITION BY RANGE (start_time);
CREATE UNIQUE INDEX trace_summaries_identity ON trace_summaries (tenant_id, trace_id, start_time);
CREATE INDEX trace_summaries_bt ON trace_summaries (tenant_id, service, bt, start_time);
COMMENT ON TABLE trace_summaries IS 'One row per processed trace: its business transaction, time per tier, outcome.';
COMMENT ON COLUMN trace_summaries.tier_us IS 'Self time per tier in microseconds, in the order browser, network, web, app, platform, db, cache, queue, external.';
COMMENT ON COLUMN trace_summaries.error_tier IS 'Where the error originated: the tier of the deepest failing span.';

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
    CONSTRAINT bt_rollups_resolution CHECK (resolution IN ('minute', 'hour', 'day', 'week'))
);
CREATE INDEX bt_rollups_time ON bt_rollups (tenant_id, resolution, bucket);
COMMENT ON TABLE bt_rollups IS 'Per business transaction and minute/hour/day/week: calls, errors, latency histogram, Apdex counts, time per tier.';
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
    shard integer PRIMARY KEY,
    watermark timestamptz NOT NULL,
    traces bigint NOT NULL DEFAULT 0,
    spans bigint NOT NULL DEFAULT 0,
    late_spans bigint NOT NULL DEFAULT 0,
    excluded_traces bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    shards integer NOT NULL DEFAULT 1,
    CONSTRAINT processing_progress_shard_check CHECK (shard >= 0 AND shard < shards)
);
COMMENT ON TABLE processing_progress IS 'How far each processing shard has gone: its spans received before watermark are processed. Committed with the results; the totals of the store are the sums over the rows.';
COMMENT ON COLUMN processing_progress.shards IS 'How many shards the store was processed in when this row was written; a change re-divides the work (store/processing.py lock_progress).';

CREATE TABLE business_services (
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name text NOT NULL,
    criticality text NOT NULL,
    document jsonb NOT NULL,
    source text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name),
    CONSTRAINT business_services_criticality CHECK (criticality IN ('critical', 'high', 'medium', 'low'))
);
COMMENT ON TABLE business_services IS 'Groups of business transactions with a business criticality (tierscope slo apply).';

CREATE TABLE slos (
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name text NOT NULL,
    document jsonb NOT NULL,
    source text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
COMMENT ON TABLE slos IS 'Service level objectives as applied: the checked YAML document, as JSON.';

CREATE TABLE business_calendars (
    tenant_id integer PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    document jsonb NOT NULL,
    source text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE business_calendars IS 'A tenant''s business week for baselines: time zone, holidays country, month-end, blackout days.';

CREATE TABLE rum_settings (
    tenant_id integer PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    origins text[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE rum_settings IS 'The page origins allowed to send beacons with the tenant''s RUM key (kept across rotation; * allows any).';

CREATE TABLE rum_sites (
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    network cidr NOT NULL,
    site text NOT NULL,
    PRIMARY KEY (tenant_id, network)
);
COMMENT ON TABLE rum_sites IS 'Client IP ranges mapped to sites (branch offices); the most specific range wins. A site set on the page wins over this.';

CREATE TABLE rum_experiences (
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id text NOT NULL,
    kind text NOT NULL,
    start_time timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    page text NOT NULL,
    url text,
    method text,
    status integer,
    site text,
    session_id text,
    user_hash text,
    browser text,
    trace_id bytea,
    timing jsonb NOT NULL,
    vitals jsonb NOT NULL DEFAULT '{}',
    state text NOT NULL DEFAULT 'pending',
    service text,
    bt text,
    duration_ms double precision NOT NULL,
    tier_ms jsonb,
    outcome text NOT NULL,
    finished_at timestamptz,
    vitals_final boolean NOT NULL DEFAULT false,
    error_tier text,
    rolled_up boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT rum_experiences_kind CHECK (kind IN ('page_load', 'request')),
    CONSTRAINT rum_experiences_state CHECK (state IN ('pending', 'joined', 'untraced'))
);
CREATE INDEX rum_experiences_time ON rum_experiences (tenant_id, start_time);
CREATE INDEX rum_experiences_pending ON rum_experiences (received_at) WHERE state = 'pending';
COMMENT ON TABLE rum_experiences IS 'One real user action seen from the browser (page load or in-page request), its timings, Web Vitals and, once joined with its trace, its time per tier.';
COMMENT ON COLUMN rum_experiences.id IS 'Made by the browser (32 hex characters): a resent beacon updates the same row.';
COMMENT ON COLUMN rum_experiences.state IS 'pending until its trace is joined (joined) or the join stops waiting (untraced).';
COMMENT ON COLUMN rum_experiences.tier_ms IS 'Milliseconds per tier; they add up to duration_ms. Untraced: browser, network and server.';

CREATE TABLE rum_errors (
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id text NOT NULL,
    page_view text NOT NULL,
    time timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    page text NOT NULL,
    message text NOT NULL,
    source text,
    stack text,
    session_id text,
    site text,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX rum_errors_page_view ON rum_errors (tenant_id, page_view);
CREATE INDEX rum_errors_time ON rum_errors (tenant_id, time);
COMMENT ON TABLE rum_errors IS 'Script errors and unhandled promise rejections seen by the RUM script, per page view.';
-- alerting (migration 0008)

CREATE TABLE alert_configs (
    tenant_id integer PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    document jsonb NOT NULL,
    source text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE alert_configs IS 'A tenant''s alert rules, receivers, routes and costs (PUT /api/v1/alerting/config).';

CREATE TABLE alerts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    group_key text NOT NULL,
    state text NOT NULL,
    severity text NOT NULL,
    kind text NOT NULL,
    rule text NOT NULL,
    title text NOT NULL,
    service text,
    bts jsonb NOT NULL,
    tier text,
    component text,
    confidence double precision,
    evidence jsonb NOT NULL,
    impact jsonb NOT NULL,
    priority double precision NOT NULL DEFAULT 0,
    pending_since timestamptz NOT NULL,
    started_at timestamptz,
    last_active_at timestamptz NOT NULL,
    resolved_at timestamptz,
    acknowledged_at timestamptz,
    acknowledged_by text,
    notified boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alerts_state CHECK (state IN ('pending', 'firing', 'acknowledged', 'resolved')),
    CONSTRAINT alerts_severity CHECK (severity IN ('info', 'warning', 'critical'))
);
CREATE UNIQUE INDEX alerts_open_group ON alerts (tenant_id, group_key) WHERE state <> 'resolved';
CREATE INDEX alerts_tenant_state ON alerts (tenant_id, state, started_at);
COMMENT ON TABLE alerts IS 'One row per incident: its lifecycle, localisation (tier, component, evidence) and impact.';
COMMENT ON COLUMN alerts.group_key IS 'Stable key of the cause (tier and component) or of the rule and subject; one open alert per key.';
COMMENT ON COLUMN alerts.notified IS 'A firing notification was queued (not while muted); a resolve is queued only after one.';

CREATE TABLE silences (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind text NOT NULL,
    matchers jsonb NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    comment text NOT NULL DEFAULT '',
    created_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT silences_kind CHECK (kind IN ('silence', 'maintenance')),
    CONSTRAINT silences_order CHECK (ends_at > starts_at)
);
CREATE INDEX silences_tenant ON silences (tenant_id, ends_at);
COMMENT ON TABLE silences IS 'Silences and maintenance windows: while one matches an alert, nothing about it is sent.';

CREATE TABLE notifications (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    alert_id bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    receiver text NOT NULL,
    event text NOT NULL,
    payload jsonb NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    delivered_at timestamptz,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_event CHECK (event IN ('firing', 'resolved')),
    CONSTRAINT notifications_once UNIQUE (alert_id, receiver, event)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE delivered_at IS NULL;
COMMENT ON TABLE notifications IS 'Outbox: one row per alert, receiver and event, retried with back-off until delivered.';
CREATE TABLE demo_faults (
    id bigserial PRIMARY KEY,
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    fault text NOT NULL,
    tier text NOT NULL,
    service text NOT NULL,
    component text NOT NULL,
    site text,
    affected_bts text[] NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL,
    CONSTRAINT demo_faults_window CHECK (ended_at >= started_at)
);
CREATE INDEX demo_faults_time ON demo_faults (tenant_id, started_at);
COMMENT ON TABLE demo_faults IS 'Faults switched on in the demo estate: which tier, component and business transactions, from when to when.';
COMMENT ON COLUMN demo_faults.ended_at IS 'When the fault ends (or ended: set to the stop time when the demo stops first).';
CREATE TABLE report_schedules (
    tenant_id integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name text NOT NULL,
    every text NOT NULL,
    recipients text[] NOT NULL,
    service text,
    smtp jsonb NOT NULL,
    last_period text,
    sending_since timestamptz,
    last_error text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name),
    CONSTRAINT report_schedules_every CHECK (every IN ('week', 'month'))
);
COMMENT ON TABLE report_schedules IS 'SLA reports e-mailed each week or month (tierscope report-schedule); last_period is the last one sent.';
COMMENT ON COLUMN report_schedules.sending_since IS 'Set while one collector sends this report (a claim); cleared when done or failed.';
COMMENT ON COLUMN report_schedules.smtp IS 'host, port, sender, starttls, username and password of the SMTP relay.';

CREATE TABLE schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS 'Migrations applied to this store (store/migrations.py).';
-- real-user rollups (migration 0010)

CREATE INDEX rum_experiences_unrolled ON rum_experiences (finished_at)
    WHERE state <> 'pending' AND NOT rolled_up;
COMMENT ON COLUMN rum_experiences.vitals_final IS 'A page-hide beacon brought the final Web Vitals (the experience can be rolled up at once).';
COMMENT ON COLUMN rum_experiences.error_tier IS 'The tier a failed experience is attributed to (its trace''s error origin; network for a request that got no answer or a 5xx its trace did not see; server when untraced).';
COMMENT ON COLUMN rum_experiences.rolled_up IS 'Counted in rum_rollups (set in the same transaction that added it): later changes leave the rollups alone.';

CREATE TABLE rum_rollups (
    tenant_id integer NOT NULL,
    resolution text NOT NULL,
    bucket timestamptz NOT NULL,
    service text NOT NULL,
    name text NOT NULL,
    site text NOT NULL,
    count bigint NOT NULL,
    errors bigint NOT NULL,
    duration_sum_ms double precision NOT NULL,
    apdex_satisfied bigint NOT NULL,
    apdex_tolerating bigint NOT NULL,
    latency bytea NOT NULL,
    tier_sum_us bigint[] NOT NULL,
    tier_errors bigint[] NOT NULL,
    vital_count bigint[] NOT NULL,
    vital_good bigint[] NOT NULL,
    vital_poor bigint[] NOT NULL,
    vitals bytea NOT NULL,
    PRIMARY KEY (tenant_id, resolution, service, name, site, bucket),
    CONSTRAINT rum_rollups_resolution CHECK (resolution IN ('minute', 'hour', 'day'))
);
CREATE INDEX rum_rollups_time ON rum_rollups (tenant_id, resolution, bucket);
COMMENT ON TABLE rum_rollups IS 'Real-user experiences per business transaction (or page when untraced), site and minute/hour/day: count, errors, Apdex, duration histogram, time and errors per tier, Web Vitals ratings and histograms.';
COMMENT ON COLUMN rum_rollups.service IS 'The joined trace''s service; empty for untraced experiences.';
COMMENT ON COLUMN rum_rollups.name IS 'The business transaction of the joined trace, or the page/action name when untraced.';
COMMENT ON COLUMN rum_rollups.site IS 'The user''s site (branch office); empty when unknown.';
COMMENT ON COLUMN rum_rollups.latency IS 'Histogram of the experiences'' end-to-end durations in microseconds (processing/histogram.py).';
COMMENT ON COLUMN rum_rollups.tier_sum_us IS 'Time per tier summed over the experiences, in the order of TIERS then server (untraced server time).';
COMMENT ON COLUMN rum_rollups.tier_errors IS 'Failed experiences per owning tier (TIERS, server, then unattributed).';
COMMENT ON COLUMN rum_rollups.vital_count IS 'Per Web Vital (lcp, inp, cls, fcp, ttfb): experiences that measured it; vital_good and vital_poor count those rated good and poor (exact, at the thresholds).';
COMMENT ON COLUMN rum_rollups.vitals IS 'Histogram of each Web Vital (dimension = vital index; ms as microseconds, CLS times a million).';
