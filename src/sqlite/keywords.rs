//! The keyword index of `logs`: the table `log_token_seconds` (second, token, topic, service) →
//! events, which the keyword and top-keyword fallbacks and the window rebuild read. Those only ever
//! count events carrying a token in a window of whole seconds, so a count per second is exact and
//! smaller than a row per (token, event): a batch writes one row per distinct (second, token, topic,
//! service) it holds instead of one per token of each event. The second leads the key so that a
//! batch appends after the newest rows (a token-first key dirties one page per distinct token of
//! the batch), a keyword in a window is one key lookup per second, and retention deletes a prefix
//! (see docs/BENCHMARKS.md, "SQLite keyword index").

use std::collections::HashMap;

use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl, SqliteConnection};

/// One hour in µs (retention walks `logs` an hour at a time).
pub const HOUR_US: i64 = 3_600_000_000;
const MICROS: i64 = 1_000_000;

/// Rows per upsert statement: 5 columns each, far under SQLite's 32766 bound variables; more rows
/// per statement stop paying once the statement's own overhead is spread.
const ROWS_PER_UPSERT: usize = 64;

/// The hour of a time in µs.
pub fn hour_of(ts_us: i64) -> i64 {
    ts_us.div_euclid(HOUR_US)
}

/// The second of a time in µs (floored for any sign).
pub fn second_of(ts_us: i64) -> i64 {
    ts_us.div_euclid(MICROS)
}

/// (second, token, topic, service)
type Key<'a> = (i64, &'a str, &'a str, &'a str);

/// The index rows of a batch of events, counted in memory before they are written: each event
/// counts once per token it carries (its tokens are `tokenize`'s, distinct).
#[derive(Default)]
pub struct TokenSeconds<'a> {
    events: HashMap<Key<'a>, i64>,
}

impl<'a> TokenSeconds<'a> {
    pub fn new() -> TokenSeconds<'a> {
        TokenSeconds::default()
    }

    /// Counts one event at `ts_us` with its distinct `tokens`.
    pub fn add(&mut self, ts_us: i64, topic: &'a str, service: &'a str, tokens: impl IntoIterator<Item = &'a str>) {
        let second = second_of(ts_us);
        for token in tokens {
            *self.events.entry((second, token, topic, service)).or_insert(0) += 1;
        }
    }

    /// Distinct (second, token, topic, service) keys counted so far: the rows `write` upserts.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Adds the counts to `log_token_seconds`, inside the writer's transaction.
    pub fn write(self, conn: &mut SqliteConnection) -> QueryResult<()> {
        write_rows(conn, &self.into_rows())
    }

    /// The counts as index rows in key order, so that consecutive upserts land on the same pages.
    /// Sorted here, outside any transaction: the writer holds SQLite's one write lock only for the
    /// upserts themselves.
    pub fn into_rows(self) -> Vec<SecondRow<'a>> {
        let mut rows: Vec<SecondRow<'a>> = self
            .events
            .into_iter()
            .map(|((second, token, topic, service), events)| SecondRow { second, token, topic, service, events })
            .collect();
        rows.sort_unstable_by(|a, b| {
            (a.second, a.token, a.topic, a.service).cmp(&(b.second, b.token, b.topic, b.service))
        });
        rows
    }
}

/// Adds `rows` (of [`TokenSeconds::into_rows`]) to `log_token_seconds`, inside the caller's transaction.
pub fn write_rows(conn: &mut SqliteConnection, rows: &[SecondRow<'_>]) -> QueryResult<()> {
    for chunk in rows.chunks(ROWS_PER_UPSERT) {
        Upsert { rows: chunk }.execute(conn)?;
    }
    Ok(())
}

/// One row of `log_token_seconds` to add.
pub struct SecondRow<'a> {
    second: i64,
    token: &'a str,
    topic: &'a str,
    service: &'a str,
    events: i64,
}

/// `INSERT … VALUES (…), (…) ON CONFLICT DO UPDATE` over borrowed rows, cached by its SQL text (one
/// prepared statement per row count), as the event store's `logs` insert is.
struct Upsert<'a> {
    rows: &'a [SecondRow<'a>],
}

impl QueryId for Upsert<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Sqlite> for Upsert<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("INSERT INTO log_token_seconds (second, token, topic, service, events) VALUES ");
        for (i, row) in self.rows.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            out.push_bind_param::<BigInt, _>(&row.second)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.token)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.topic)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.service)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(&row.events)?;
            out.push_sql(")");
        }
        out.push_sql(" ON CONFLICT DO UPDATE SET events = events + excluded.events");
        Ok(())
    }
}

impl RunQueryDsl<SqliteConnection> for Upsert<'_> {}

/// Indexes the `logs` rows with rowid in `first..=last` from their stored JSON tokens, inside the
/// writer's transaction: for rows that were not at hand as events (a replay, rows written by SQL).
/// Counts each event once per distinct token, whatever its `tokens` array holds.
pub fn index_rows(conn: &mut SqliteConnection, first_rowid: i64, last_rowid: i64) -> QueryResult<()> {
    if first_rowid > last_rowid {
        return Ok(());
    }
    // The SELECT's WHERE keeps SQLite from reading ON CONFLICT as the ON of a join.
    diesel::sql_query(
        "INSERT INTO log_token_seconds (second, token, topic, service, events) \
         SELECT (l.ts - ((l.ts % 1000000) + 1000000) % 1000000) / 1000000, t.value, l.topic, l.service, \
         count(DISTINCT l.rowid) \
         FROM logs AS l, json_each(l.tokens) AS t WHERE l.rowid BETWEEN ?1 AND ?2 \
         GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 \
         ON CONFLICT DO UPDATE SET events = events + excluded.events",
    )
    .bind::<BigInt, _>(first_rowid)
    .bind::<BigInt, _>(last_rowid)
    .execute(conn)?;
    Ok(())
}

/// Deletes the index rows of `hour` before `before_us` (the events of one hour, or of its part
/// before a cut): one range of the key. A count cannot be split, so the cut is on a whole second
/// (retention cuts at a day or an hour).
pub fn forget_hour(conn: &mut SqliteConnection, hour: i64, before_us: i64) -> QueryResult<usize> {
    debug_assert_eq!(before_us.rem_euclid(MICROS), 0, "a cut inside a second");
    diesel::sql_query("DELETE FROM log_token_seconds WHERE second >= ?1 AND second < ?2")
        .bind::<BigInt, _>(second_of(hour.saturating_mul(HOUR_US)))
        .bind::<BigInt, _>(second_of(before_us))
        .execute(conn)
}

/// Deletes the index rows of the `logs` rows older than `before_us` (a whole second), before those
/// rows go: a prefix of the key.
pub fn forget_before(conn: &mut SqliteConnection, before_us: i64) -> QueryResult<usize> {
    debug_assert_eq!(before_us.rem_euclid(MICROS), 0, "a cut inside a second");
    diesel::sql_query("DELETE FROM log_token_seconds WHERE second < ?1")
        .bind::<BigInt, _>(second_of(before_us))
        .execute(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_and_seconds_floor_for_any_sign() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(HOUR_US - 1), 0);
        assert_eq!(hour_of(-1), -1);
        assert_eq!(second_of(-1), -1);
        assert_eq!(second_of(1_999_999), 1);
    }

    #[test]
    fn a_batch_counts_each_event_once_per_token_and_second() {
        let a: Vec<String> = vec!["timeout".into(), "db".into()];
        let b: Vec<String> = vec!["timeout".into()];
        let mut counts = TokenSeconds::new();
        counts.add(5_000_000, "logs", "api", a.iter().map(String::as_str));
        counts.add(5_999_999, "logs", "api", b.iter().map(String::as_str));
        counts.add(6_000_000, "logs", "api", b.iter().map(String::as_str));
        counts.add(5_000_001, "logs", "web", b.iter().map(String::as_str));
        assert_eq!(counts.len(), 4);
        assert_eq!(counts.events[&(5, "timeout", "logs", "api")], 2);
        assert_eq!(counts.events[&(5, "db", "logs", "api")], 1);
        assert_eq!(counts.events[&(6, "timeout", "logs", "api")], 1);
        assert_eq!(counts.events[&(5, "timeout", "logs", "web")], 1);
    }
}
