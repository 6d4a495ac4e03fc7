//! The keyword index of `logs`: the table `log_token_seconds` (second, token, topic, service) →
//! events, which the keyword and top-keyword fallbacks and the window rebuild read. Those only ever
//! count events carrying a token in a window of whole seconds, so a count per second is exact and
//! smaller than a row per (token, event): a batch writes one row per distinct (second, token, topic,
//! service) it holds instead of one per token of each event. The second leads the key so that a
//! batch appends after the newest rows (a token-first key dirties one page per distinct token of
//! the batch), a keyword in a window is one key lookup per second, and retention deletes a prefix
//! (see docs/BENCHMARKS.md, "SQLite keyword index").
//!
//! The counts are written behind the writer, not in its transaction: the writer's transactions
//! store `logs` rows only, and the indexer ([`index_next`], run by `super::indexer`) adds the counts
//! of the rows after the mark of `log_index` and moves the mark in one transaction of its own, in
//! big chunks sorted by key (each page of the index written once per chunk). A kill at any moment
//! leaves the counts of exactly the rows up to the committed mark. Readers take the mark in the
//! same read transaction as the counts and count the rows above it (the *tail*) from their JSON
//! tokens, so every answer is exact however far behind the indexer is.

use std::collections::HashMap;

use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::Sqlite;
use diesel::{Connection, QueryResult, QueryableByName, RunQueryDsl, SqliteConnection};

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

    /// Adds the counts to `log_token_seconds`, inside the caller's transaction.
    pub fn write(self, conn: &mut SqliteConnection) -> QueryResult<()> {
        write_rows(conn, &self.into_rows())
    }

    /// The counts as index rows in key order, so that consecutive upserts land on the same pages.
    /// Sorted here, outside any transaction: the indexer holds SQLite's one write lock only for the
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

/// Where the indexer stands: every `logs` row with rowid up to `rowid` is counted in
/// `log_token_seconds`, none above it. `epoch` moves when rows are deleted.
#[derive(QueryableByName, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    #[diesel(sql_type = BigInt, column_name = indexed_rowid)]
    pub rowid: i64,
    #[diesel(sql_type = BigInt)]
    pub epoch: i64,
}

/// The committed mark (call inside the transaction whose reads it must agree with).
pub fn mark(conn: &mut SqliteConnection) -> QueryResult<Mark> {
    diesel::sql_query("SELECT indexed_rowid, epoch FROM log_index WHERE id = 1").get_result(conn)
}

/// A row's tokens as every reader counts them: the text elements of `tokens` when it is a JSON
/// array, none when it is anything else (not JSON, an object, a scalar). The writer stores an array
/// of text; anything else there (a hand edit, a restore from a damaged file) is *unreadable*: the
/// row is still a row (its service, level and time count), it just carries no tokens, and a non-text
/// element of an array is left out while the array's text elements count. SQL over the stored rows
/// reads them the same way through [`readable_tokens!`] and `type = 'text'`, so that the counts of
/// the indexed rows and those counted from the rows above the mark agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowTokens {
    pub tokens: Vec<String>,
    /// False when `tokens` was not a JSON array of text.
    pub readable: bool,
}

/// Reads a row's `tokens` text (see [`RowTokens`]). The writer's form (an array of text) takes one
/// parse; anything else is read again element by element.
pub fn read_tokens(text: &str) -> RowTokens {
    if let Ok(tokens) = serde_json::from_str::<Vec<String>>(text) {
        return RowTokens { tokens, readable: true };
    }
    // Each element as raw JSON, so that a number SQLite reads (1e400) or a deep nesting does not
    // make the array's text elements unreadable too.
    let tokens = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text)
        .map(|items| {
            items
                .into_iter()
                .filter(|raw| raw.get().trim_start().starts_with('"'))
                .filter_map(|raw| serde_json::from_str::<String>(raw.get()).ok())
                .collect()
        })
        .unwrap_or_default();
    RowTokens { tokens, readable: false }
}

/// The SQL text of a `logs` row's tokens column `$col` as readers take it: the column when it is a
/// JSON array, else `'[]'` (`json_each` of text that is not JSON raises "malformed JSON" and fails
/// the whole statement; of an object it would give the object's values). The CASE decides in order,
/// so `json_type` never sees text that is not JSON. Use with `json_each(..)` and `type = 'text'`:
/// the elements [`read_tokens`] counts.
macro_rules! readable_tokens {
    ($col:literal) => {
        concat!(
            "(CASE WHEN NOT json_valid(",
            $col,
            ") THEN '[]' WHEN json_type(",
            $col,
            ") = 'array' THEN ",
            $col,
            " ELSE '[]' END)"
        )
    };
}
pub(crate) use readable_tokens;

/// `token` as the store's JSON text holds it (`serde_json`'s quoting, as the store writes its tokens):
/// a row whose tokens hold `token` has this in its `tokens` text.
pub fn quoted(token: &str) -> String {
    serde_json::to_string(token).unwrap_or_default()
}

/// Whether `logs` holds rows with `ts` in `[from_us, to_us)` the indexer has not counted yet: their
/// deletion must move the epoch ([`rows_deleted`]). Call in the deleting transaction, before it deletes.
pub fn unindexed_between(conn: &mut SqliteConnection, from_us: i64, to_us: i64) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = BigInt)]
        found: i64,
    }
    let row: Found = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM logs WHERE ts >= ?1 AND ts < ?2 \
         AND rowid > (SELECT indexed_rowid FROM log_index WHERE id = 1)) AS found",
    )
    .bind::<BigInt, _>(from_us)
    .bind::<BigInt, _>(to_us)
    .get_result(conn)?;
    Ok(row.found != 0)
}

/// Rows deleted: the mark comes down to the newest row left when that is below it, so that SQLite,
/// which gives a new row the rowid after the largest one in the table, never gives one a rowid at or
/// below the mark (it would never be counted). When rows above the mark went too (`unindexed`, from
/// [`unindexed_between`]), the epoch moves, so that an indexer step that counted them before the
/// deletion is thrown away; a deletion of counted rows only (retention's usual case) leaves a step
/// in flight valid, and moving the epoch then would throw away every step for as long as retention
/// runs. Call in the deleting transaction.
pub fn rows_deleted(conn: &mut SqliteConnection, unindexed: bool) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE log_index SET epoch = epoch + ?1, \
         indexed_rowid = min(indexed_rowid, coalesce((SELECT max(rowid) FROM logs), 0)) WHERE id = 1",
    )
    .bind::<BigInt, _>(i64::from(unindexed))
    .execute(conn)?;
    Ok(())
}

/// Tokens one indexer step counts at most (the row that crosses it is the step's last): ~250,000
/// upserts at most per write turn, some 0.4 s of the writer waiting at the bench's ~1.5 µs each.
pub const STEP_TOKENS: usize = 250_000;
/// Rows one read of an indexer step takes.
const READ_PAGE_ROWS: usize = 1_000;

/// A row of a step, its tokens parsed (distinct).
struct Parsed {
    rowid: i64,
    ts: i64,
    topic: String,
    service: String,
    tokens: Vec<String>,
}

/// One `logs` row as the indexer counts it.
#[derive(QueryableByName)]
struct Unindexed {
    #[diesel(sql_type = BigInt)]
    rowid: i64,
    #[diesel(sql_type = BigInt)]
    ts: i64,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = Text)]
    tokens: String,
}

#[derive(QueryableByName)]
struct MaybeRowid {
    #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
    rowid: Option<i64>,
}

/// The newest rowid of `logs` (0 when empty).
pub fn newest_rowid(conn: &mut SqliteConnection) -> QueryResult<i64> {
    let row: MaybeRowid = diesel::sql_query("SELECT max(rowid) AS rowid FROM logs").get_result(conn)?;
    Ok(row.rowid.unwrap_or(0))
}

/// What one [`index_next`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Rows counted and committed (0: nothing to do, or the step was thrown away).
    pub rows: usize,
    /// The committed mark after the step.
    pub mark: i64,
    /// Rows above the mark after the step, as the step's snapshot saw them.
    pub behind: i64,
    /// The step's rows were deleted meanwhile (retention): nothing was committed, the next step reads again.
    pub stale: bool,
    /// The rowids of the committed rows whose `tokens` was not a JSON array of text, counted as
    /// their text elements ([`read_tokens`]; none when not an array). Empty when nothing was committed.
    pub unreadable: Vec<i64>,
}

/// One indexer step: counts the rows after the mark (at most `max_rows` of them) and adds the counts
/// to `log_token_seconds` with the new mark, in one immediate transaction. The rows are read and
/// counted in a read transaction first, outside SQLite's one write lock (the writer goes on
/// meanwhile); the write transaction commits them only if the mark and epoch are still those read.
/// Counts each row once per distinct token, as [`index_rows`] does; a row whose tokens are
/// unreadable counts as its readable part ([`read_tokens`]) and is named in [`Step::unreadable`],
/// so that one such row never stops the indexer.
pub fn index_next(conn: &mut SqliteConnection, max_rows: usize) -> QueryResult<Step> {
    index_next_in_turn(conn, max_rows, || ())
}

/// [`index_next`], holding what `turn` gives (the writer's and the indexer's turn at SQLite's write
/// lock, [`super::SqliteDb::write_turn`]) from before its write transaction to the commit.
pub fn index_next_in_turn<T>(
    conn: &mut SqliteConnection,
    max_rows: usize,
    turn: impl FnOnce() -> T,
) -> QueryResult<Step> {
    let max_rows = max_rows.clamp(1, i64::MAX as usize);
    // Read in pages, parsed as they come, until `max_rows` rows or `STEP_TOKENS` tokens: the step's
    // memory and the time it holds the write turn (one upsert per distinct key) follow the work,
    // not the row count alone (an event of a 16 KiB message may carry thousands of tokens).
    let (read, newest, parsed, unreadable) = conn.transaction(|conn| {
        let read = mark(conn)?;
        let newest = newest_rowid(conn)?;
        let mut parsed: Vec<Parsed> = Vec::new();
        let mut unreadable: Vec<i64> = Vec::new();
        let mut tokens_read = 0usize;
        let mut after = read.rowid;
        while newest > after && parsed.len() < max_rows && tokens_read < STEP_TOKENS {
            let page: Vec<Unindexed> = diesel::sql_query(
                "SELECT rowid, ts, topic, service, tokens FROM logs WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )
            .bind::<BigInt, _>(after)
            .bind::<BigInt, _>((max_rows - parsed.len()).min(READ_PAGE_ROWS) as i64)
            .load(conn)?;
            if page.is_empty() {
                break;
            }
            for row in page {
                let RowTokens { mut tokens, readable } = read_tokens(&row.tokens);
                if !readable {
                    unreadable.push(row.rowid);
                }
                tokens.sort_unstable();
                tokens.dedup();
                tokens_read += tokens.len();
                after = row.rowid;
                parsed.push(Parsed { rowid: row.rowid, ts: row.ts, topic: row.topic, service: row.service, tokens });
                if tokens_read >= STEP_TOKENS {
                    break;
                }
            }
        }
        QueryResult::Ok((read, newest, parsed, unreadable))
    })?;
    let Some(last) = parsed.last().map(|r| r.rowid) else {
        return Ok(Step { rows: 0, mark: read.rowid, behind: newest - read.rowid, stale: false, unreadable });
    };
    let mut counts = TokenSeconds::new();
    for row in &parsed {
        counts.add(row.ts, &row.topic, &row.service, row.tokens.iter().map(String::as_str));
    }
    let counted = counts.into_rows();
    let _turn = turn();
    let committed = conn.immediate_transaction(|conn| {
        if mark(conn)? != read {
            return QueryResult::Ok(false);
        }
        write_rows(conn, &counted)?;
        diesel::sql_query("UPDATE log_index SET indexed_rowid = ?1 WHERE id = 1")
            .bind::<BigInt, _>(last)
            .execute(conn)?;
        Ok(true)
    })?;
    Ok(if committed {
        Step { rows: parsed.len(), mark: last, behind: newest - last, stale: false, unreadable }
    } else {
        Step { rows: 0, mark: read.rowid, behind: newest - read.rowid, stale: true, unreadable: Vec::new() }
    })
}

/// Indexes every row after the mark with [`index_rows`] (SQL over the stored tokens) and moves the
/// mark, inside the caller's write transaction: what the indexer does, in one statement (for rows
/// written by SQL, and to check the indexer against). Returns the new mark.
pub fn index_all_in(conn: &mut SqliteConnection) -> QueryResult<i64> {
    let read = mark(conn)?;
    let newest = newest_rowid(conn)?;
    if newest > read.rowid {
        index_rows(conn, read.rowid + 1, newest)?;
        diesel::sql_query("UPDATE log_index SET indexed_rowid = ?1 WHERE id = 1")
            .bind::<BigInt, _>(newest)
            .execute(conn)?;
    }
    Ok(newest.max(read.rowid))
}

/// Counts the `logs` rows with rowid in `first..=last` into `log_token_seconds` from their stored
/// JSON tokens, inside the caller's transaction, without moving the mark (see [`index_all_in`] for
/// what does). Counts each event once per distinct token, whatever its `tokens` array holds; a row
/// whose tokens are unreadable counts as [`read_tokens`] reads it (the text elements of an array).
pub fn index_rows(conn: &mut SqliteConnection, first_rowid: i64, last_rowid: i64) -> QueryResult<()> {
    if first_rowid > last_rowid {
        return Ok(());
    }
    // The SELECT's WHERE keeps SQLite from reading ON CONFLICT as the ON of a join.
    diesel::sql_query(concat!(
        "INSERT INTO log_token_seconds (second, token, topic, service, events) \
         SELECT (l.ts - ((l.ts % 1000000) + 1000000) % 1000000) / 1000000, t.value, l.topic, l.service, \
         count(DISTINCT l.rowid) \
         FROM logs AS l, json_each(",
        readable_tokens!("l.tokens"),
        ") AS t WHERE l.rowid BETWEEN ?1 AND ?2 AND t.type = 'text' \
         GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 \
         ON CONFLICT DO UPDATE SET events = events + excluded.events"
    ))
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

/// An in-memory database with the embedded store's tables, for unit tests.
#[cfg(test)]
pub(crate) fn test_store() -> SqliteConnection {
    use diesel_migrations::MigrationHarness;
    let mut conn = SqliteConnection::establish(":memory:").expect("in-memory SQLite");
    conn.run_pending_migrations(super::migrate::MIGRATIONS).expect("migrations");
    conn
}

/// Stores a `logs` row of topic `logs` with `tokens` as given (any text), at offset `offset`.
#[cfg(test)]
pub(crate) fn insert_test_row(conn: &mut SqliteConnection, offset: i64, ts_us: i64, service: &str, tokens: &str) {
    diesel::sql_query(
        "INSERT INTO logs (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \"offset\", \
         ingested_at) VALUES (?1, 2, ?2, NULL, 'm', ?3, '{}', 'logs', 0, ?4, ?1)",
    )
    .bind::<BigInt, _>(ts_us)
    .bind::<Text, _>(service)
    .bind::<Text, _>(tokens)
    .bind::<BigInt, _>(offset)
    .execute(conn)
    .expect("inserting a row");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tokens` texts a hand edit or a damaged file may leave, with the tokens readers count.
    const ODD_TOKENS: [(&str, &[&str], bool); 14] = [
        (r#"["timeout","db"]"#, &["timeout", "db"], true),
        ("[]", &[], true),
        (r#" [ "timeout" , "db" ] "#, &["timeout", "db"], true),
        (r#"["time\u006fut"]"#, &["timeout"], true),
        ("not json", &[], false),
        ("", &[], false),
        ("[1,2]", &[], false),
        (r#"{"a":1}"#, &[], false),
        (r#"{"timeout":"db"}"#, &[], false),
        (r#""timeout""#, &[], false),
        (r#"[1,"timeout",{"db":"x"},["db"],null,true]"#, &["timeout"], false),
        (r#"["timeout",1e400,"db"]"#, &["timeout", "db"], false),
        (r#"["timeout","db""#, &[], false),
        ("[\"time\tout\"]", &[], false),
    ];

    #[derive(QueryableByName)]
    struct Value {
        #[diesel(sql_type = Text)]
        value: String,
    }

    #[test]
    fn unreadable_tokens_read_as_their_text_elements_in_rust_and_in_sql() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        for (text, want, readable) in ODD_TOKENS {
            assert_eq!(read_tokens(text), RowTokens { tokens: want.iter().map(|t| t.to_string()).collect(), readable });
            let sql: Vec<String> = diesel::sql_query(concat!(
                "SELECT value FROM json_each(",
                readable_tokens!("?1"),
                ") WHERE type = 'text' ORDER BY key"
            ))
            .bind::<Text, _>(text)
            .load::<Value>(&mut conn)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .into_iter()
            .map(|v| v.value)
            .collect();
            assert_eq!(sql, want, "SQL reads {text:?} as Rust does");
        }
    }

    #[derive(QueryableByName, Debug, PartialEq)]
    struct IndexRow {
        #[diesel(sql_type = BigInt)]
        second: i64,
        #[diesel(sql_type = Text)]
        token: String,
        #[diesel(sql_type = BigInt)]
        events: i64,
    }

    fn index_table(conn: &mut SqliteConnection) -> Vec<IndexRow> {
        diesel::sql_query("SELECT second, token, events FROM log_token_seconds ORDER BY second, token")
            .load(conn)
            .unwrap()
    }

    /// A row whose tokens are not a JSON array of text made every step fail at it, forever: now
    /// the step passes it, names it, and counts its text elements as the SQL indexer does.
    #[test]
    fn a_step_passes_rows_with_unreadable_tokens_and_names_them() {
        let mut conn = test_store();
        for (i, (text, _, _)) in ODD_TOKENS.iter().enumerate() {
            insert_test_row(&mut conn, i as i64, 5_000_000 + i as i64, "api", text);
        }
        let n = ODD_TOKENS.len() as i64;
        // rowids 1.. in order: the first step's 6 rows hold two unreadable ones (rowids 5, 6).
        let first = index_next(&mut conn, 6).unwrap();
        assert_eq!(first, Step { rows: 6, mark: 6, behind: n - 6, stale: false, unreadable: vec![5, 6] });
        let second = index_next(&mut conn, 100).unwrap();
        let unreadable: Vec<i64> = (7..=n).collect();
        assert_eq!(second, Step { rows: n as usize - 6, mark: n, behind: 0, stale: false, unreadable });
        assert_eq!(index_next(&mut conn, 100).unwrap().rows, 0, "nothing left: the mark is past them");
        let want: Vec<IndexRow> = ["db", "timeout"]
            .iter()
            .map(|t| IndexRow {
                second: 5,
                token: (*t).to_owned(),
                events: ODD_TOKENS.iter().filter(|(_, tokens, _)| tokens.contains(t)).count() as i64,
            })
            .collect();
        let counted = index_table(&mut conn);
        assert_eq!(counted, want);
        // The SQL indexer (`index_rows`) counts the same.
        diesel::sql_query("DELETE FROM log_token_seconds").execute(&mut conn).unwrap();
        index_rows(&mut conn, 1, n).unwrap();
        assert_eq!(index_table(&mut conn), counted);
    }

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
