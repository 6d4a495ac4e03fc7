-- ensure_logs_partition() as it was, and no partition keeps the trigger.
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
    RETURN true;
END
$$;
DO $$
DECLARE
    child regclass;
BEGIN
    FOR child IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'logs'::regclass LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS logs_epoch_on_write ON %s', child);
    END LOOP;
END
$$;
DROP TRIGGER logs_epoch_on_offset_delete ON kafka_offsets;
DROP TRIGGER logs_epoch_on_offset_back ON kafka_offsets;
DROP TRIGGER logs_epoch_on_gap ON offset_gaps;
DROP TRIGGER logs_epoch_on_write ON logs;
DROP FUNCTION logs_epoch_bump();
DROP TABLE logs_epoch;
