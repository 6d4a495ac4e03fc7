//! The keyword index of `logs` (the keyword and top-keyword fallbacks read it). STUB (helper R
//! measures FTS5 against a token table and fills it).

use diesel::{QueryResult, SqliteConnection};

/// Indexes the `logs` rows with rowid in `first..=last`, inside the writer's transaction (the
/// event store calls it after inserting a batch).
pub fn index_rows(_conn: &mut SqliteConnection, _first_rowid: i64, _last_rowid: i64) -> QueryResult<()> {
    Ok(())
}
