-- A counter of the writes to `logs` that are not fenced by `kafka_offsets`, so that a reader who
-- keeps a window's per-service counts with the offsets of their snapshot (src/db/stats.rs, the
-- incremental ranking) knows when "the rows stored since" can no longer be found by offset alone.
--
-- The ingest writers COPY each batch in the transaction that moves its partition's next_offset past
-- the batch, and say so with `SET log_analyzer.fenced = 'on'` on their connection: every row they add
-- has an offset in [old next_offset, new next_offset). Any other statement that changes `logs`
-- (`rejects replay`, an operator's INSERT, DELETE, UPDATE or TRUNCATE, on `logs` or straight on a
-- day's partition) bumps `n` in its own transaction, and so does every offset jump recorded in
-- `offset_gaps` (a recreated topic reuses offsets), every `kafka_offsets` row moved back or deleted,
-- and retention's DROP of a day (src/db/daily_jobs.rs). A reader that sees `n` unchanged between two snapshots knows the only rows added between
-- them are the fenced ones.
CREATE TABLE logs_epoch (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    n        bigint  NOT NULL
);
INSERT INTO logs_epoch VALUES (true, 0);

CREATE FUNCTION logs_epoch_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Only a fenced writer's statements on `logs` itself leave it: they are the ones whose rows are
    -- found by offset. The same function serves the other triggers below.
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

-- Offsets moved back or forgotten outside an ingest gap (an operator's reset): rows above the new
-- offset may exist already. The WHEN clause keeps the writers' forward fence moves trigger-free.
CREATE TRIGGER logs_epoch_on_offset_back AFTER UPDATE ON kafka_offsets
    FOR EACH ROW WHEN (NEW.next_offset < OLD.next_offset) EXECUTE FUNCTION logs_epoch_bump();
CREATE TRIGGER logs_epoch_on_offset_delete AFTER DELETE OR TRUNCATE ON kafka_offsets
    FOR EACH STATEMENT EXECUTE FUNCTION logs_epoch_bump();

-- A statement on a day's partition fires that partition's statement triggers, not the parent's: each
-- partition gets the same trigger, the existing ones here and new ones as ensure_logs_partition()
-- makes them. (A statement on `logs` fires only the parent's.)
DO $$
DECLARE
    child regclass;
BEGIN
    FOR child IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'logs'::regclass LOOP
        EXECUTE format('CREATE TRIGGER logs_epoch_on_write AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION logs_epoch_bump()', child);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION ensure_logs_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'logs_' || to_char(day, 'YYYYMMDD');
    parent_schema text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE c.oid = 'logs'::regclass);
BEGIN
    IF to_regclass(format('%I.%I', parent_schema, part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Two writers meeting the same new day must not race on CREATE TABLE.
    PERFORM pg_advisory_xact_lock(hashtext(parent_schema || '.logs_partitions'));
    IF to_regclass(format('%I.%I', parent_schema, part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I.%I PARTITION OF %I.logs FOR VALUES FROM (%L) TO (%L)',
        parent_schema, part, parent_schema,
        (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    EXECUTE format(
        'CREATE TRIGGER logs_epoch_on_write AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I.%I '
        'FOR EACH STATEMENT EXECUTE FUNCTION logs_epoch_bump()', parent_schema, part);
    RETURN true;
END
$$;
