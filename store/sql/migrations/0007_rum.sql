-- Real-user monitoring: what the RUM script's beacons become (collector/rum.py),
-- and how the processor joins them with their traces (processing/experiences.py).

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
