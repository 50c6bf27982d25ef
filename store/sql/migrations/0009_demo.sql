-- The demo estate's fault activations (tierscope demo): the ground truth that
-- alerts are scored against. (Reserved number 0009; 0007 until 0007/0008 land.)

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
