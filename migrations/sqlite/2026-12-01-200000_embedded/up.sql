-- The embedded mode's store (SQLite, WAL). The same tables as migrations/postgres, with SQLite's
-- types: times are INTEGER microseconds since the Unix epoch (UTC), days are TEXT 'YYYY-MM-DD',
-- JSON is TEXT, arrays are JSON arrays in TEXT. No partitions: retention deletes by ts.

CREATE TABLE logs (
    ts          INTEGER NOT NULL,
    level       INTEGER NOT NULL CHECK (level BETWEEN 0 AND 5),
    service     TEXT    NOT NULL,
    user_id     TEXT,
    message     TEXT    NOT NULL,
    -- JSON array of the message's tokens.
    tokens      TEXT    NOT NULL,
    -- JSON object.
    attrs       TEXT    NOT NULL DEFAULT '{}',
    -- The queue position (the embedded queue's topic and partition, or Kafka's).
    topic       TEXT    NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset"    INTEGER NOT NULL,
    ingested_at INTEGER NOT NULL
);

CREATE INDEX logs_ts ON logs (ts);

CREATE TABLE kafka_offsets (
    topic       TEXT    NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset INTEGER NOT NULL CHECK (next_offset >= 0),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (topic, "partition")
) WITHOUT ROWID;

CREATE TABLE log_rejects (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT    NOT NULL DEFAULT 'kafka',
    topic       TEXT,
    "partition" INTEGER,
    "offset"    INTEGER,
    reason      TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    raw         BLOB    NOT NULL,
    raw_len     INTEGER NOT NULL,
    kafka_ts    INTEGER,
    rejected_at INTEGER NOT NULL,
    replayed_at INTEGER
);

CREATE UNIQUE INDEX log_rejects_position ON log_rejects (topic, "partition", "offset") WHERE "offset" IS NOT NULL;
CREATE INDEX log_rejects_rejected_at ON log_rejects (rejected_at);

CREATE TABLE offset_gaps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT    NOT NULL,
    "partition" INTEGER NOT NULL,
    from_offset INTEGER NOT NULL,
    to_offset   INTEGER NOT NULL,
    detected_at INTEGER NOT NULL
);

CREATE TABLE user_log_summary (
    day          TEXT    NOT NULL,
    user_id      TEXT    NOT NULL,
    total        INTEGER NOT NULL,
    errors       INTEGER NOT NULL,
    warnings     INTEGER NOT NULL,
    error_rate   REAL    NOT NULL,
    -- JSON array of the distinct services, sorted.
    services     TEXT    NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    -- [{"keyword": k, "count": n}]
    top_keywords TEXT    NOT NULL,
    PRIMARY KEY (day, user_id)
) WITHOUT ROWID;

CREATE TABLE keyword_daily (
    day     TEXT    NOT NULL,
    keyword TEXT    NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (day, keyword)
) WITHOUT ROWID;

CREATE TABLE job_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job          TEXT    NOT NULL,
    day          TEXT    NOT NULL,
    started      INTEGER NOT NULL,
    finished     INTEGER,
    status       TEXT    NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
    rows         INTEGER,
    invalid_rows TEXT    NOT NULL DEFAULT '{}',
    duration_ms  INTEGER,
    error        TEXT
);

CREATE INDEX job_runs_job_day ON job_runs (job, day) WHERE status = 'ok';

CREATE TABLE ingest_requests (
    key          TEXT    PRIMARY KEY,
    request_hash BLOB    NOT NULL,
    status       INTEGER,
    response     BLOB,
    created_at   INTEGER NOT NULL
);

CREATE INDEX ingest_requests_created_at ON ingest_requests (created_at);
