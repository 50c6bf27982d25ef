-- Business-transaction rollups get week rows (Monday to Monday, UTC): a month
-- of the transaction list, SLA windows and reports then read a few rows per
-- transaction instead of 31 day rows. The processor writes them with the
-- minute, hour and day rows, and builds each one missing (the weeks stored
-- before this migration included) from the week's day rows
-- (processing/writer.py).
ALTER TABLE bt_rollups DROP CONSTRAINT bt_rollups_resolution;
ALTER TABLE bt_rollups ADD CONSTRAINT bt_rollups_resolution
    CHECK (resolution IN ('minute', 'hour', 'day', 'week'));
COMMENT ON TABLE bt_rollups IS 'Per business transaction and minute/hour/day/week: calls, errors, latency histogram, Apdex counts, time per tier.';
