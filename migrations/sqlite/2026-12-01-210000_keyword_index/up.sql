-- The keyword index of `logs`: one row per (token, event), ordered by token then time, so a keyword
-- in a window is one range of the primary key. Measured against FTS5 and against no index on 1M rows
-- (docs/BENCHMARKS.md, "SQLite keyword index: FTS5 or a token table"). `log_id` is the `logs` rowid:
-- topic and service are read from there.
CREATE TABLE log_tokens (
    token  TEXT    NOT NULL,
    ts     INTEGER NOT NULL,
    log_id INTEGER NOT NULL,
    PRIMARY KEY (token, ts, log_id)
) WITHOUT ROWID;

INSERT INTO log_tokens (token, ts, log_id)
SELECT t.value, l.ts, l.rowid FROM logs AS l, json_each(l.tokens) AS t;
