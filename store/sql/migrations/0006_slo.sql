-- SLOs and business services (slo/): what tierscope slo apply stores. SLIs,
-- budgets, baselines and forecasts are computed from the rollups when asked for.

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
