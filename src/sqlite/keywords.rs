//! The keyword index of `logs`: the table `log_tokens` (token, ts, log_id), which the keyword and
//! top-keyword fallbacks and the window rebuild read. A token table and not FTS5: a keyword's rows in
//! a time window are one range of its primary key, where FTS5 walks the keyword's whole posting list
//! and checks each row's time (see docs/BENCHMARKS.md, "SQLite keyword index").

use diesel::sql_types::BigInt;
use diesel::{QueryResult, RunQueryDsl, SqliteConnection};

/// Indexes the `logs` rows with rowid in `first..=last`, inside the writer's transaction (the
/// event store calls it after inserting a batch).
pub fn index_rows(conn: &mut SqliteConnection, first_rowid: i64, last_rowid: i64) -> QueryResult<()> {
    if first_rowid > last_rowid {
        return Ok(());
    }
    diesel::sql_query(
        "INSERT OR IGNORE INTO log_tokens (token, ts, log_id) SELECT t.value, l.ts, l.rowid \
         FROM logs AS l, json_each(l.tokens) AS t WHERE l.rowid BETWEEN ?1 AND ?2",
    )
    .bind::<BigInt, _>(first_rowid)
    .bind::<BigInt, _>(last_rowid)
    .execute(conn)?;
    Ok(())
}

/// Deletes the index rows of the `logs` rows older than `before_us`, before those rows go: only the
/// tokens those rows carry are visited, each one a range of the primary key.
pub fn forget_before(conn: &mut SqliteConnection, before_us: i64) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM log_tokens WHERE ts < ?1 AND token IN \
         (SELECT DISTINCT t.value FROM logs AS l, json_each(l.tokens) AS t WHERE l.ts < ?1)",
    )
    .bind::<BigInt, _>(before_us)
    .execute(conn)
}
