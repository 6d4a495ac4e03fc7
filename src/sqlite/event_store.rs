//! `EventStore` and its positions over SQLite: a batch's events and dead letters and the moved
//! position, in one `BEGIN IMMEDIATE` transaction fenced like PostgreSQL's.
//!
//! Rows go in one INSERT at a time through diesel's statement cache: the statement is prepared once
//! per connection and only bound and stepped per row, which is what a bare bulk insert does
//! (examples/sqlite_bulk_baseline.rs measures the two).

use actors::domain::batch::Batch;
use actors::domain::event::REJECT_RAW_PREFIX_BYTES;
use actors::ports::{EventStore, StoreError};
use async_trait::async_trait;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::BigInt;
use diesel::SqliteConnection;

use super::tables::{kafka_offsets, log_rejects, logs};
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

    /// Rows per INSERT: 1, 16, 64, or `ROWS_PER_INSERT` for any other value (to measure them).
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

/// Writes `batch` in one immediate transaction on `conn`: fence, events, keyword index, dead letters.
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

        match rows_per_insert {
            1 => insert_events::<1>(conn, batch, now_us)?,
            16 => insert_events::<16>(conn, batch, now_us)?,
            64 => insert_events::<64>(conn, batch, now_us)?,
            _ => insert_events::<{ ROWS_PER_INSERT }>(conn, batch, now_us)?,
        }
        if !batch.events.is_empty() {
            let last: i64 = diesel::select(diesel::dsl::sql::<BigInt>("last_insert_rowid()")).get_result(conn)?;
            // One writer holds the lock and `logs` has no AUTOINCREMENT: the batch's rowids are
            // consecutive, ending at the last one.
            let first = last - (batch.events.len() as i64 - 1);
            crate::sqlite::keywords::index_rows(conn, first, last)?;
        }

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

/// The events of `batch` into `logs`, `N` rows per INSERT (each size is its own cached statement,
/// which needs owned values), the rest one borrowed row at a time.
fn insert_events<const N: usize>(conn: &mut SqliteConnection, batch: &Batch, now_us: i64) -> QueryResult<()> {
    let topic: &str = &batch.topic;
    let failed = |err: serde_json::Error| DieselError::SerializationError(Box::new(err));
    let mut chunks = batch.events.chunks_exact(N);
    if N > 1 {
        for chunk in &mut chunks {
            let mut rows = Vec::with_capacity(N);
            for stored in chunk {
                let e = &stored.event;
                rows.push((
                    logs::ts.eq(micros(e.ts)),
                    logs::level.eq(i32::from(e.level.as_i16())),
                    logs::service.eq(e.service.as_str().to_owned()),
                    logs::user_id.eq(e.user_id.as_ref().map(|u| u.as_str().to_owned())),
                    logs::message.eq(e.message.clone()),
                    logs::tokens.eq(serde_json::to_string(&e.tokens).map_err(failed)?),
                    logs::attrs.eq(serde_json::to_string(&e.attrs).map_err(failed)?),
                    logs::topic.eq(topic.to_owned()),
                    logs::partition.eq(batch.partition),
                    logs::offset.eq(stored.offset),
                    logs::ingested_at.eq(now_us),
                ));
            }
            let rows: [_; N] = rows.try_into().unwrap_or_else(|_| unreachable!("chunks_exact gives N rows"));
            diesel::insert_into(logs::table).values(rows).execute(conn)?;
        }
    }
    let rest = if N > 1 { chunks.remainder() } else { &batch.events[..] };
    let (mut tokens, mut attrs) = (String::new(), String::new());
    for stored in rest {
        let e = &stored.event;
        tokens.clear();
        attrs.clear();
        // Reused buffers: no allocation per row.
        serde_json::to_writer(string_writer(&mut tokens), &e.tokens).map_err(failed)?;
        serde_json::to_writer(string_writer(&mut attrs), &e.attrs).map_err(failed)?;
        diesel::insert_into(logs::table)
            .values((
                logs::ts.eq(micros(e.ts)),
                logs::level.eq(i32::from(e.level.as_i16())),
                logs::service.eq(e.service.as_str()),
                logs::user_id.eq(e.user_id.as_ref().map(|u| u.as_str())),
                logs::message.eq(e.message.as_str()),
                logs::tokens.eq(tokens.as_str()),
                logs::attrs.eq(attrs.as_str()),
                logs::topic.eq(topic),
                logs::partition.eq(batch.partition),
                logs::offset.eq(stored.offset),
                logs::ingested_at.eq(now_us),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// A `String` as an `io::Write` for serde_json, which only ever writes valid UTF-8.
fn string_writer(s: &mut String) -> StringWriter<'_> {
    StringWriter(s)
}

struct StringWriter<'a>(&'a mut String);

impl std::io::Write for StringWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.0.push_str(text);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    /// Runs on the writer's own arbiter thread: SQLite takes one writer at a time anyway.
    async fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let now_us = micros(chrono::Utc::now());
        let rows_per_insert = self.rows_per_insert;
        let conn = self.conn()?;
        let result = write_batch(conn, batch, now_us, rows_per_insert);
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
