-- Trace processing in shards: each processor process owns the traces whose id
-- hashes to its shard, with a progress row of its own. The single row of 0003
-- becomes shard 0 of 1.
ALTER TABLE processing_progress DROP CONSTRAINT processing_progress_id_check;
ALTER TABLE processing_progress ALTER COLUMN id DROP DEFAULT;
ALTER TABLE processing_progress RENAME COLUMN id TO shard;
DO $$ BEGIN  -- PostgreSQL 18 names NOT NULL constraints after their column
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'processing_progress_id_not_null') THEN
        ALTER TABLE processing_progress
            RENAME CONSTRAINT processing_progress_id_not_null TO processing_progress_shard_not_null;
    END IF;
END $$;
ALTER TABLE processing_progress ADD COLUMN shards integer NOT NULL DEFAULT 1;
UPDATE processing_progress SET shard = 0;
ALTER TABLE processing_progress ADD CONSTRAINT processing_progress_shard_check CHECK (shard >= 0 AND shard < shards);
COMMENT ON TABLE processing_progress IS 'How far each processing shard has gone: its spans received before watermark are processed. Committed with the results; the totals of the store are the sums over the rows.';
COMMENT ON COLUMN processing_progress.shards IS 'How many shards the store was processed in when this row was written; a change re-divides the work (store/processing.py lock_progress).';
