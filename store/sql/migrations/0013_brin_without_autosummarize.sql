-- BRIN indexes of span partitions no longer ask autovacuum to summarize their
-- ranges (autosummarize): trace processing summarizes new ranges itself
-- (store/span_ranges.py). Autosummarize could not keep up with ingest (its
-- queue holds 256 requests per database and drops the rest), and each of its
-- requests runs in an autovacuum worker that takes the partition's SHARE UPDATE
-- EXCLUSIVE lock and so cancels a VACUUM of that partition in progress: under
-- load, VACUUM of the day's partition never finished. A partitioned index
-- cannot change its storage parameters, so each partition's index is changed
-- here and each new partition's when it is created (store/partitions.py).
DO $$
DECLARE
    index regclass;
BEGIN
    FOR index IN
        SELECT c.oid::regclass
        FROM pg_inherits h
        JOIN pg_index i ON i.indrelid = h.inhrelid
        JOIN pg_class c ON c.oid = i.indexrelid AND c.relkind = 'i'
        JOIN pg_am am ON am.oid = c.relam AND am.amname = 'brin'
        WHERE h.inhparent = 'spans'::regclass AND 'autosummarize=on' = ANY (c.reloptions)
    LOOP
        EXECUTE format('ALTER INDEX %s SET (autosummarize = off)', index);
    END LOOP;
END
$$;
