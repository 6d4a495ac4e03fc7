-- Every valid event, range-partitioned by UTC day on ts. Partitions are made ahead by
-- ensure_logs_partition() (migrate, the scheduler, and writers on demand) and dropped after RETENTION_DAYS.
-- Indexes stay minimal on this hot table: a BRIN index on ts costs almost nothing at ingest and
-- serves the time-range scans of the PostgreSQL fallback.
CREATE TABLE logs (
    ts          timestamptz NOT NULL,
    level       smallint    NOT NULL CHECK (level BETWEEN 0 AND 5),
    service     text        NOT NULL,
    user_id     text,
    message     text        NOT NULL,
    tokens      text[]      NOT NULL,
    attrs       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    topic       text        NOT NULL,
    "partition" integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (ts);

CREATE INDEX logs_ts_brin ON logs USING brin (ts);

-- Creates the partition holding `day` (UTC) if it does not exist. Safe to call concurrently.
CREATE FUNCTION ensure_logs_partition(day date) RETURNS boolean
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

-- Where each partition's ingestion stands: the first offset not yet stored. Updated in the same
-- transaction as the rows, with `WHERE next_offset = <batch start>` as the fence (DESIGN §5).
CREATE TABLE kafka_offsets (
    topic       text        NOT NULL,
    "partition" integer     NOT NULL,
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, "partition")
);

-- Dead letters: every payload that is not a valid event, with why, and the first 4 KiB of it.
-- Kafka rejects carry topic/partition/offset (unique); rejects from POST /ingest have no offset.
CREATE TABLE log_rejects (
    id          bigserial   PRIMARY KEY,
    source      text        NOT NULL DEFAULT 'kafka',
    topic       text,
    "partition" integer,
    "offset"    bigint,
    reason      text        NOT NULL,
    detail      text        NOT NULL,
    raw         bytea       NOT NULL,
    raw_len     integer     NOT NULL,
    kafka_ts    timestamptz,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);

CREATE UNIQUE INDEX log_rejects_position ON log_rejects (topic, "partition", "offset") WHERE "offset" IS NOT NULL;
CREATE INDEX log_rejects_rejected_at ON log_rejects (rejected_at);
