-- The keyword index of `logs`: one row per (token, event). Keyed by the event's hour first, so a
-- batch's rows land in the newest hours' pages (ingest appends, as `logs` does), a keyword in a
-- window is one primary-key range per hour, and retention deletes a prefix. Measured against FTS5,
-- against a token-first key and against no index on 1M rows (docs/BENCHMARKS.md, "SQLite keyword
-- index: FTS5 or a token table"). `log_id` is the `logs` rowid: topic and service are read there.
CREATE TABLE log_tokens (
    -- floor(ts / 1 h)
    hour   INTEGER NOT NULL,
    token  TEXT    NOT NULL,
    ts     INTEGER NOT NULL,
    log_id INTEGER NOT NULL,
    PRIMARY KEY (hour, token, ts, log_id)
) WITHOUT ROWID;

INSERT INTO log_tokens (hour, token, ts, log_id)
SELECT (l.ts - ((l.ts % 3600000000) + 3600000000) % 3600000000) / 3600000000, t.value, l.ts, l.rowid
FROM logs AS l, json_each(l.tokens) AS t;
