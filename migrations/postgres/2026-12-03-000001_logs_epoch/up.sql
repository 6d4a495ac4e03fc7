-- A counter of the writes to `logs` that are not fenced by `kafka_offsets`, so that a reader who
-- keeps a window's per-service counts with the offsets of their snapshot (src/db/stats.rs, the
-- incremental ranking) knows when "the rows stored since" can no longer be found by offset alone.
--
-- The ingest writers COPY each batch in the transaction that moves its partition's next_offset past
-- the batch, and say so with `SET log_analyzer.fenced = 'on'` on their connection: every row they add
-- has an offset in [old next_offset, new next_offset). Any other statement that changes `logs`
-- (`rejects replay`, an operator's INSERT, DELETE, UPDATE or TRUNCATE) bumps `n` in its own
-- transaction, and so does every offset jump recorded in `offset_gaps` (a recreated topic reuses
-- offsets). A reader that sees `n` unchanged between two snapshots knows the only rows added between
-- them are the fenced ones.
CREATE TABLE logs_epoch (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    n        bigint  NOT NULL
);
INSERT INTO logs_epoch VALUES (true, 0);

CREATE FUNCTION logs_epoch_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME <> 'logs' OR coalesce(current_setting('log_analyzer.fenced', true), '') <> 'on' THEN
        UPDATE logs_epoch SET n = n + 1;
    END IF;
    RETURN NULL;
END
$$;

-- Statement-level: once per COPY or INSERT, not per row (and on a partitioned table they fire for the
-- statement on `logs` itself).
CREATE TRIGGER logs_epoch_on_write AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON logs
    FOR EACH STATEMENT EXECUTE FUNCTION logs_epoch_bump();
CREATE TRIGGER logs_epoch_on_gap AFTER INSERT ON offset_gaps
    FOR EACH STATEMENT EXECUTE FUNCTION logs_epoch_bump();
