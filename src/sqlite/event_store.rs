//! `EventStore` and its positions over SQLite: a batch's events and dead letters and the moved
//! position, in one `BEGIN IMMEDIATE` transaction fenced like PostgreSQL's (the keyword index is
//! the indexer's, behind it: `super::indexer`).
//!
//! Rows go in `ROWS_PER_INSERT` at a time through diesel's statement cache: each statement is
//! prepared once per connection and only bound and stepped after, as a bare bulk insert does
//! (examples/sqlite_bulk_baseline.rs measures the two).

use actors::domain::batch::Batch;
use actors::domain::event::REJECT_RAW_PREFIX_BYTES;
use actors::ports::{EventStore, StoreError};
use async_trait::async_trait;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::SqliteConnection;

use super::tables::{kafka_offsets, log_rejects};
use super::{micros, SqliteDb};

/// The one writer of the embedded store's `logs`.
pub struct SqliteEventStore {
    db: SqliteDb,
    conn: Option<SqliteConnection>,
    rows_per_insert: usize,
}

/// Rows per INSERT statement: 11 columns each, far under SQLite's 32766 bound variables.
pub const ROWS_PER_INSERT: usize = 32;

impl SqliteEventStore {
    pub fn new(db: SqliteDb) -> SqliteEventStore {
        SqliteEventStore { db, conn: None, rows_per_insert: ROWS_PER_INSERT }
    }

    /// Rows per INSERT statement (to measure them against each other).
    pub fn with_rows_per_insert(mut self, rows: usize) -> SqliteEventStore {
        self.rows_per_insert = rows;
        self
    }

    fn conn(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        if self.conn.is_none() {
            let conn = self.db.connect().map_err(|e| StoreError::Unavailable(format!("{e:#}")))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }
}

/// Why a batch's transaction rolled back.
enum WriteError {
    Db(DieselError),
    Fenced(Option<i64>),
}

impl From<DieselError> for WriteError {
    fn from(e: DieselError) -> Self {
        WriteError::Db(e)
    }
}

/// Sorts a SQLite failure by what retrying can do: a lock held too long (`SQLITE_BUSY`), a full or
/// failing disk may pass; a constraint, a type mismatch or an oversized value fails every time.
pub fn classify(e: DieselError) -> StoreError {
    let text = format!("SQLite: {e}");
    match &e {
        DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation
            | DatabaseErrorKind::CheckViolation
            | DatabaseErrorKind::NotNullViolation
            | DatabaseErrorKind::ForeignKeyViolation,
            _,
        )
        | DieselError::SerializationError(_) => StoreError::Rejected(text),
        DieselError::DatabaseError(_, info) => {
            let message = info.message().to_ascii_lowercase();
            let data_fault = ["constraint", "mismatch", "too big", "malformed json", "not valid utf"];
            if data_fault.iter().any(|m| message.contains(m)) {
                StoreError::Rejected(text)
            } else {
                StoreError::Unavailable(text)
            }
        }
        _ => StoreError::Unavailable(text),
    }
}

/// Writes `batch` in one immediate transaction on `conn`: fence, events, dead letters. The keyword
/// index is not written here: the indexer (`super::indexer`) counts the rows after this commits,
/// in transactions of its own, and readers count the rows it has not reached yet from their tokens.
/// Its ~6.5 upserts per event, scattered over the hour's pages when times come out of order, were
/// most of this transaction's cost (docs/BENCHMARKS.md, "Where the embedded writer's time goes").
pub fn write_batch(
    conn: &mut SqliteConnection,
    batch: &Batch,
    now_us: i64,
    rows_per_insert: usize,
) -> Result<(), StoreError> {
    let topic: &str = &batch.topic;
    let result = conn.immediate_transaction::<_, WriteError, _>(|conn| {
        // The fence first: nothing of a zombie's batch is written.
        let moved = diesel::update(
            kafka_offsets::table
                .filter(kafka_offsets::topic.eq(topic))
                .filter(kafka_offsets::partition.eq(batch.partition))
                .filter(kafka_offsets::next_offset.eq(batch.from)),
        )
        .set((kafka_offsets::next_offset.eq(batch.to), kafka_offsets::updated_at.eq(now_us)))
        .execute(conn)?;
        if moved != 1 {
            let stored = kafka_offsets::table
                .filter(kafka_offsets::topic.eq(topic))
                .filter(kafka_offsets::partition.eq(batch.partition))
                .select(kafka_offsets::next_offset)
                .first::<i64>(conn)
                .optional()?;
            return Err(WriteError::Fenced(stored));
        }

        insert_events(conn, batch, now_us, rows_per_insert.max(1))?;

        for r in &batch.rejects {
            let raw = &r.raw[..r.raw.len().min(REJECT_RAW_PREFIX_BYTES)];
            diesel::insert_into(log_rejects::table)
                .values((
                    log_rejects::source.eq("kafka"),
                    log_rejects::topic.eq(Some(topic)),
                    log_rejects::partition.eq(Some(batch.partition)),
                    log_rejects::offset.eq(Some(r.offset)),
                    log_rejects::reason.eq(r.reason.code()),
                    log_rejects::detail.eq(r.detail.as_str()),
                    log_rejects::raw.eq(raw),
                    log_rejects::raw_len.eq(r.raw_len as i64),
                    log_rejects::kafka_ts.eq(r.timestamp.map(micros)),
                    log_rejects::rejected_at.eq(now_us),
                ))
                .execute(conn)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok(()),
        Err(WriteError::Fenced(stored)) => Err(StoreError::Fenced { batch_from: batch.from, stored }),
        Err(WriteError::Db(e)) => Err(classify(e)),
    }
}

/// One `logs` row's values, borrowed from its event (and its JSON columns from reused buffers).
struct LogRow<'a> {
    ts: i64,
    level: i32,
    service: &'a str,
    user_id: Option<&'a str>,
    message: &'a str,
    tokens: &'a str,
    attrs: &'a str,
    offset: i64,
}

/// A multi-row `INSERT INTO logs … VALUES (…), (…)` over borrowed values. diesel caches a prepared
/// statement by its SQL text when the query has no static id, so each row count is prepared once per
/// connection and then only bound and stepped; its own DSL would cache only owned (`'static`) rows.
struct LogRows<'a> {
    rows: &'a [LogRow<'a>],
    topic: &'a str,
    partition: i32,
    ingested_at: i64,
}

impl QueryId for LogRows<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Sqlite> for LogRows<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO logs (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \"offset\", \
             ingested_at) VALUES ",
        );
        for (i, row) in self.rows.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            out.push_bind_param::<BigInt, _>(&row.ts)?;
            out.push_sql(", ");
            out.push_bind_param::<Integer, _>(&row.level)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.service)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, _>(&row.user_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.message)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.tokens)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.attrs)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&self.topic)?;
            out.push_sql(", ");
            out.push_bind_param::<Integer, _>(&self.partition)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(&row.offset)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(&self.ingested_at)?;
            out.push_sql(")");
        }
        Ok(())
    }
}

impl RunQueryDsl<SqliteConnection> for LogRows<'_> {}

/// The events of `batch` into `logs`, `per_insert` rows per statement.
fn insert_events(conn: &mut SqliteConnection, batch: &Batch, now_us: i64, per_insert: usize) -> QueryResult<()> {
    let failed = |err: serde_json::Error| DieselError::SerializationError(Box::new(err));
    // The JSON columns of one statement's rows, in buffers reused from statement to statement.
    let mut json: Vec<(Vec<u8>, Vec<u8>)> = vec![Default::default(); per_insert.min(batch.events.len())];
    for chunk in batch.events.chunks(per_insert) {
        for (stored, (tokens, attrs)) in chunk.iter().zip(json.iter_mut()) {
            tokens.clear();
            attrs.clear();
            serde_json::to_writer(&mut *tokens, &stored.event.tokens).map_err(failed)?;
            attrs.extend_from_slice(stored.event.attrs.as_str().as_bytes());
        }
        let mut rows: Vec<LogRow<'_>> = Vec::with_capacity(chunk.len());
        for (stored, (tokens, attrs)) in chunk.iter().zip(json.iter()) {
            let e = &stored.event;
            rows.push(LogRow {
                ts: micros(e.ts),
                level: i32::from(e.level.as_i16()),
                service: e.service.as_str(),
                user_id: e.user_id.as_ref().map(|u| u.as_str()),
                message: &e.message,
                // serde_json writes UTF-8; one check of the whole column, not one per fragment.
                tokens: json_text(tokens)?,
                attrs: json_text(attrs)?,
                offset: stored.offset,
            });
        }
        LogRows { rows: &rows, topic: &batch.topic, partition: batch.partition, ingested_at: now_us }.execute(conn)?;
    }
    Ok(())
}

fn json_text(bytes: &[u8]) -> QueryResult<&str> {
    std::str::from_utf8(bytes).map_err(|e| DieselError::SerializationError(Box::new(e)))
}

#[async_trait]
impl EventStore for SqliteEventStore {
    /// Runs on the writer's own arbiter thread: SQLite takes one writer at a time anyway.
    async fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let now_us = micros(chrono::Utc::now());
        let rows_per_insert = self.rows_per_insert;
        let db = self.db.clone();
        let conn = self.conn()?;
        // Taken in turn with the keyword indexer (`SqliteDb::write_turn`).
        let result = {
            let _turn = db.write_turn();
            write_batch(conn, batch, now_us, rows_per_insert)
        };
        if result.is_ok() {
            db.note_committed((batch.events.len() + batch.rejects.len()) as u64);
        }
        if matches!(result, Err(StoreError::Unavailable(_))) {
            // The connection's state is unknown after an I/O error: the retry opens a fresh one.
            self.reset();
        }
        result
    }

    fn reset(&mut self) {
        self.conn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn busy_and_io_errors_pass_data_errors_do_not() {
        let unavailable = |e| matches!(classify(e), StoreError::Unavailable(_));
        let rejected = |e| matches!(classify(e), StoreError::Rejected(_));
        assert!(unavailable(db_error(DatabaseErrorKind::Unknown, "database is locked")));
        assert!(unavailable(db_error(DatabaseErrorKind::Unknown, "disk I/O error")));
        assert!(unavailable(db_error(DatabaseErrorKind::Unknown, "database or disk is full")));
        assert!(unavailable(DieselError::BrokenTransactionManager));
        assert!(rejected(db_error(DatabaseErrorKind::CheckViolation, "CHECK constraint failed: level")));
        assert!(rejected(db_error(DatabaseErrorKind::Unknown, "string or blob too big")));
        assert!(rejected(db_error(DatabaseErrorKind::Unknown, "datatype mismatch")));
        assert!(rejected(DieselError::SerializationError("bad".into())));
    }
}
