-- Alerting (alerting/): a tenant's alerting configuration, alerts with their
-- lifecycle, silences and maintenance windows, and the outbox of notifications
-- (delivered at least once: a row stays until its receiver accepted it).

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
