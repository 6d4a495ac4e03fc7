//! The keyword index of `logs`: the table `log_tokens` (hour, token, ts, log_id), which the keyword
//! and top-keyword fallbacks and the window rebuild read. A token table and not FTS5: a keyword's
//! rows in a window are one primary-key range per hour, where FTS5 walks the keyword's whole posting
//! list and checks each row's time; the hour leads the key so that ingest appends to the newest
//! pages instead of touching one page per distinct token (see docs/BENCHMARKS.md, "SQLite keyword
//! index").

use diesel::sql_types::BigInt;
use diesel::{QueryResult, RunQueryDsl, SqliteConnection};

/// One hour in µs: the leading key of `log_tokens`.
pub const HOUR_US: i64 = 3_600_000_000;

/// The `hour` key of a time in µs.
pub fn hour_of(ts_us: i64) -> i64 {
    ts_us.div_euclid(HOUR_US)
}

/// The hours a window `[from_us, to_us)` touches, first and last (first > last for an empty window).
pub fn hours_of(from_us: i64, to_us: i64) -> (i64, i64) {
    (hour_of(from_us), hour_of(to_us.saturating_sub(1)))
}

/// Indexes the `logs` rows with rowid in `first..=last`, inside the writer's transaction (the
/// event store calls it after inserting a batch). The batch's entries go in in key order, so
/// consecutive inserts land on the same pages.
pub fn index_rows(conn: &mut SqliteConnection, first_rowid: i64, last_rowid: i64) -> QueryResult<()> {
    if first_rowid > last_rowid {
        return Ok(());
    }
    diesel::sql_query(
        "INSERT OR IGNORE INTO log_tokens (hour, token, ts, log_id) \
         SELECT (l.ts - ((l.ts % 3600000000) + 3600000000) % 3600000000) / 3600000000, t.value, l.ts, l.rowid \
         FROM logs AS l, json_each(l.tokens) AS t WHERE l.rowid BETWEEN ?1 AND ?2 ORDER BY 1, 2, 3, 4",
    )
    .bind::<BigInt, _>(first_rowid)
    .bind::<BigInt, _>(last_rowid)
    .execute(conn)?;
    Ok(())
}

/// Deletes the index rows of `hour` older than `before_us` (the events of one hour, or of its part
/// before a cut), one key range per token of the hour.
pub fn forget_hour(conn: &mut SqliteConnection, hour: i64, before_us: i64) -> QueryResult<usize> {
    diesel::sql_query("DELETE FROM log_tokens WHERE hour = ?1 AND ts < ?2")
        .bind::<BigInt, _>(hour)
        .bind::<BigInt, _>(before_us)
        .execute(conn)
}

/// Deletes the index rows of the `logs` rows older than `before_us`, before those rows go: the
/// hours before are a prefix of the key, the cut hour one range per token.
pub fn forget_before(conn: &mut SqliteConnection, before_us: i64) -> QueryResult<usize> {
    let cut = hour_of(before_us);
    let before = diesel::sql_query("DELETE FROM log_tokens WHERE hour < ?1").bind::<BigInt, _>(cut).execute(conn)?;
    Ok(before + forget_hour(conn, cut, before_us)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_floor_for_any_sign() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(HOUR_US - 1), 0);
        assert_eq!(hour_of(-1), -1);
        assert_eq!(hours_of(0, HOUR_US), (0, 0));
        assert_eq!(hours_of(HOUR_US - 1, HOUR_US + 1), (0, 1));
    }
}
