-- Scheduled SLA reports (dashboards/schedule.py): which report goes to whom,
-- how often, over which SMTP relay, and the last period sent.

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
