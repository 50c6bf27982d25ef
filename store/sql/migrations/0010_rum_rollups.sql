-- Per-minute (hour, day) rollups of real-user experiences per (business transaction
-- or page, site), written by the experience joiner (processing/experiences.py) in the
-- same transaction that marks the experiences rolled up: each counts exactly once.

ALTER TABLE rum_experiences
    ADD COLUMN vitals_final boolean NOT NULL DEFAULT false,
    ADD COLUMN error_tier text,
    ADD COLUMN rolled_up boolean NOT NULL DEFAULT false;
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
