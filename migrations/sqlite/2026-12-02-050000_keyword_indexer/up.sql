-- The keyword indexer's mark. `log_token_seconds` counts exactly the `logs` rows with rowid up to
-- `indexed_rowid`: the indexer (src/sqlite/indexer.rs) adds the counts of the rows after it and moves
-- it in one transaction, behind the writer, whose transactions store the rows only. Readers of the
-- counts add the rows above the mark from their JSON tokens, so answers stay exact while it is
-- behind. `epoch` moves whenever rows are deleted (retention), so that an indexer step counted from
-- a snapshot before the deletion is not committed after it.
CREATE TABLE log_index (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_rowid INTEGER NOT NULL,
    epoch         INTEGER NOT NULL
);

-- Until now the writer counted every row in its own transaction: all of them are indexed.
INSERT INTO log_index (id, indexed_rowid, epoch) VALUES (1, (SELECT coalesce(max(rowid), 0) FROM logs), 0);
