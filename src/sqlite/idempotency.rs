//! The intake's SQLite side, as `crate::db::idempotency` is PostgreSQL's: answers stored by
//! `Idempotency-Key`, and a body's dead letters. Every function runs its own short immediate
//! transaction or joins the caller's: SQLite has one writer, so nothing here stays open across
//! the queue's wait for the event writer.

use actors::domain::event::REJECT_RAW_PREFIX_BYTES;
use actors::intake::{Claim, DeadLetter};
use diesel::prelude::*;
use diesel::SqliteConnection;

use super::tables::{ingest_requests, log_rejects};
use super::{from_micros, micros};

/// How long an answer is kept for its key.
const KEY_LIFETIME_US: i64 = 24 * 3600 * 1_000_000;

/// A dead letter as it is kept until written: the raw prefix the store keeps, and the full length.
#[derive(Debug, Clone)]
pub struct HeldLetter {
    pub source: String,
    pub reason: &'static str,
    pub detail: String,
    pub raw: Vec<u8>,
    pub raw_len: usize,
}

impl HeldLetter {
    pub fn of(letter: &DeadLetter<'_>) -> HeldLetter {
        HeldLetter {
            source: letter.source.to_owned(),
            reason: letter.reason,
            detail: letter.detail.clone(),
            raw: letter.raw[..letter.raw.len().min(REJECT_RAW_PREFIX_BYTES)].to_vec(),
            raw_len: letter.raw.len(),
        }
    }

    /// Bytes it holds in memory.
    pub fn size(&self) -> usize {
        self.source.len() + self.detail.len() + self.raw.len() + std::mem::size_of::<HeldLetter>()
    }
}

/// A key's record: the body's hash, the answer's status and body once finished, when it was claimed.
type KeyRecord = (Vec<u8>, Option<i32>, Option<Vec<u8>>, i64);

/// Claims `key` for a body hashing to `hash`, committed at once. A record older than a day is
/// expired and claimed again; expired records of other keys are deleted on the way.
pub fn claim(conn: &mut SqliteConnection, key: &str, hash: &[u8], now_us: i64) -> QueryResult<Claim> {
    let cutoff = now_us - KEY_LIFETIME_US;
    conn.immediate_transaction(|conn| {
        diesel::delete(ingest_requests::table.filter(ingest_requests::created_at.lt(cutoff)))
            .filter(ingest_requests::key.ne(key))
            .execute(conn)?;
        let row: Option<KeyRecord> = ingest_requests::table
            .find(key)
            .select((
                ingest_requests::request_hash,
                ingest_requests::status,
                ingest_requests::response,
                ingest_requests::created_at,
            ))
            .first(conn)
            .optional()?;
        match row {
            Some((_, _, _, created)) if created < cutoff => {
                diesel::update(ingest_requests::table.find(key))
                    .set((
                        ingest_requests::request_hash.eq(hash),
                        ingest_requests::status.eq(None::<i32>),
                        ingest_requests::response.eq(None::<Vec<u8>>),
                        ingest_requests::created_at.eq(now_us),
                    ))
                    .execute(conn)?;
                Ok(Claim::Claimed)
            }
            None => {
                diesel::insert_into(ingest_requests::table)
                    .values((
                        ingest_requests::key.eq(key),
                        ingest_requests::request_hash.eq(hash),
                        ingest_requests::created_at.eq(now_us),
                    ))
                    .execute(conn)?;
                Ok(Claim::Claimed)
            }
            Some((stored, _, _, _)) if stored != hash => Ok(Claim::OtherBody),
            Some((_, Some(status), Some(body), _)) => Ok(Claim::Answered { status: status as u16, body }),
            Some((_, _, _, created)) => Ok(Claim::Running { since: from_micros(created) }),
        }
    })
}

/// Inserts `letters` (in the caller's write transaction); the rowids they got, first and last.
pub fn insert_letters(
    conn: &mut SqliteConnection,
    letters: &[HeldLetter],
    now_us: i64,
) -> QueryResult<Option<(i64, i64)>> {
    for letter in letters {
        diesel::insert_into(log_rejects::table)
            .values((
                log_rejects::source.eq(&letter.source),
                log_rejects::reason.eq(letter.reason),
                log_rejects::detail.eq(&letter.detail),
                log_rejects::raw.eq(&letter.raw),
                log_rejects::raw_len.eq(letter.raw_len as i64),
                log_rejects::rejected_at.eq(now_us),
            ))
            .execute(conn)?;
    }
    if letters.is_empty() {
        return Ok(None);
    }
    // The write lock is ours for the whole transaction: AUTOINCREMENT gave consecutive ids.
    let last: i64 =
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("last_insert_rowid()")).get_result(conn)?;
    Ok(Some((last - letters.len() as i64 + 1, last)))
}

/// Records the answer of the request holding `key` (in the transaction of its last dead letters).
pub fn finish(conn: &mut SqliteConnection, key: &str, status: u16, body: &[u8]) -> QueryResult<()> {
    diesel::update(ingest_requests::table.find(key))
        .set((ingest_requests::status.eq(Some(i32::from(status))), ingest_requests::response.eq(Some(body))))
        .execute(conn)
        .map(drop)
}

/// Gives `key` up (its request queued nothing), so that a retry runs afresh.
pub fn release(conn: &mut SqliteConnection, key: &str) -> QueryResult<()> {
    diesel::delete(ingest_requests::table.find(key).filter(ingest_requests::status.is_null())).execute(conn).map(drop)
}

/// Deletes dead letters written earlier for a body that is now discarded.
pub fn delete_letters(conn: &mut SqliteConnection, ranges: &[(i64, i64)]) -> QueryResult<()> {
    for &(first, last) in ranges {
        diesel::delete(log_rejects::table.filter(log_rejects::id.between(first, last))).execute(conn)?;
    }
    Ok(())
}

/// Now as the store keeps times.
pub fn now_us() -> i64 {
    micros(chrono::Utc::now())
}
