-- The keyword index of `logs`: how many events of a second, topic and service carry a token. The
-- keyword fallbacks only count events in windows of whole seconds, so this is exact, and a batch
-- adds one row per distinct (second, token, topic, service) instead of one per token of each event.
-- Keyed by the second first, so a batch's rows append after the newest seconds (a few dirty pages
-- per commit, where a token-first key dirties a page per distinct token), a keyword in a window is
-- one key lookup per second, and retention deletes a prefix. Measured against FTS5, against a row
-- per (token, event), against an hour-then-token key and against no index on 1M rows
-- (docs/BENCHMARKS.md, "SQLite keyword index: FTS5 or a token table").
CREATE TABLE log_token_seconds (
    -- floor(ts / 1 s)
    second  INTEGER NOT NULL,
    token   TEXT    NOT NULL,
    topic   TEXT    NOT NULL,
    service TEXT    NOT NULL,
    events  INTEGER NOT NULL,
    PRIMARY KEY (second, token, topic, service)
) WITHOUT ROWID;

INSERT INTO log_token_seconds (second, token, topic, service, events)
SELECT (l.ts - ((l.ts % 1000000) + 1000000) % 1000000) / 1000000, t.value, l.topic, l.service, count(DISTINCT l.rowid)
FROM logs AS l, json_each(l.tokens) AS t
GROUP BY 1, 2, 3, 4;
