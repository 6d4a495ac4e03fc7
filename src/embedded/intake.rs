//! `IntakeSink` of the embedded mode: lines into the in-process queue, acknowledged once stored;
//! dead letters and Idempotency-Key answers in SQLite.
//!
//! SQLite has one writer, and the event writer must get it while a body waits for its lines: so a
//! session never holds a write transaction across `queue`. Its dead letters wait in memory (up to
//! `HELD_LETTER_BYTES`; beyond that they are written in transactions of their own, remembered so
//! `discard` deletes them), and the rest go in with the answer in one transaction at `commit`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::intake::{Claim, DeadLetter, Delivery, IntakeSink, Line, SinkError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Queue, Refusal, CHUNK_LINES};
use crate::sqlite::idempotency::{self, HeldLetter};
use crate::sqlite::SqliteDb;

/// Dead letters one body keeps in memory before writing them out.
pub const HELD_LETTER_BYTES: usize = 4 * 1024 * 1024;
/// Lines one body keeps queued and not yet acknowledged: many bodies' lines share a batch.
const MAX_IN_FLIGHT: usize = 32_768;

/// What one body holds between the sink's calls.
#[derive(Default)]
pub struct EmbeddedSession {
    letters: Vec<HeldLetter>,
    held_bytes: usize,
    /// Rowids of the dead letters already written, first and last of each write.
    written: Vec<(i64, i64)>,
}

pub struct EmbeddedIntake {
    queue: Arc<Queue>,
    db: SqliteDb,
}

impl EmbeddedIntake {
    pub fn new(queue: Arc<Queue>, db: SqliteDb) -> EmbeddedIntake {
        EmbeddedIntake { queue, db }
    }

    async fn write_letters(&self, held: &mut EmbeddedSession) -> Result<(), SinkError> {
        let letters = std::mem::take(&mut held.letters);
        held.held_bytes = 0;
        let now = idempotency::now_us();
        let ids = self
            .db
            .read(move |conn| conn.immediate_transaction(|conn| idempotency::insert_letters(conn, &letters, now)))
            .await
            .map_err(|e| SinkError(format!("storing dead letters: {e}")))?;
        held.written.extend(ids);
        Ok(())
    }
}

/// One chunk of lines queued and waiting for its partition's stored offset to pass `last`.
struct Waiting {
    partition: usize,
    last: i64,
    numbers: Vec<u32>,
}

#[async_trait]
impl IntakeSink for EmbeddedIntake {
    type Held = EmbeddedSession;

    async fn claim(&self, _held: &mut EmbeddedSession, key: &str, hash: &[u8]) -> Result<Claim, SinkError> {
        let (key, hash, now) = (key.to_owned(), hash.to_vec(), idempotency::now_us());
        self.db
            .read(move |conn| idempotency::claim(conn, &key, &hash, now))
            .await
            .map_err(|e| SinkError(format!("claiming the idempotency key: {e}")))
    }

    async fn store_dead_letters(
        &self,
        held: &mut EmbeddedSession,
        letters: &[DeadLetter<'_>],
    ) -> Result<(), SinkError> {
        for letter in letters {
            let letter = HeldLetter::of(letter);
            held.held_bytes += letter.size();
            held.letters.push(letter);
        }
        if held.held_bytes > HELD_LETTER_BYTES {
            self.write_letters(held).await?;
        }
        Ok(())
    }

    async fn seal_dead_letters(&self, _held: &mut EmbeddedSession) -> Result<(), SinkError> {
        Ok(())
    }

    async fn queue(
        &self,
        service: Option<&str>,
        lines: &[Line<'_>],
        received: DateTime<Utc>,
        timeout: Duration,
        report: &mut (dyn FnMut(u32, Delivery) -> bool + Send),
    ) {
        let deadline = Instant::now() + timeout;
        let mut waiting: VecDeque<Waiting> = VecDeque::new();
        let mut in_flight = 0;
        let mut sending = true;
        for chunk in lines.chunks(CHUNK_LINES) {
            if !sending {
                for line in chunk {
                    report(line.number, Delivery::Skipped);
                }
                continue;
            }
            match self.queue.push(service, chunk, received, deadline).await {
                Ok((partition, last)) => {
                    in_flight += chunk.len();
                    waiting.push_back(Waiting { partition, last, numbers: chunk.iter().map(|l| l.number).collect() });
                }
                Err(Refusal(why)) => {
                    for line in chunk {
                        if sending {
                            sending &= report(line.number, Delivery::Refused(why.clone()));
                        } else {
                            report(line.number, Delivery::Skipped);
                        }
                    }
                }
            }
            // What is stored already is answered now; beyond the bound, wait for the oldest.
            while let Some(front) = waiting.front() {
                let stored = *self.queue.stored(front.partition).borrow();
                if stored <= front.last && in_flight <= MAX_IN_FLIGHT {
                    break;
                }
                let chunk = waiting.pop_front().expect("checked");
                in_flight -= chunk.numbers.len();
                sending &= self.settle(chunk, report).await;
            }
        }
        while let Some(chunk) = waiting.pop_front() {
            self.settle(chunk, report).await;
        }
    }

    async fn commit(&self, held: EmbeddedSession, answer: Option<(&str, u16, &[u8])>) -> Result<(), SinkError> {
        if held.letters.is_empty() && answer.is_none() {
            return Ok(());
        }
        let answer = answer.map(|(key, status, body)| (key.to_owned(), status, body.to_vec()));
        let letters = held.letters;
        let now = idempotency::now_us();
        self.db
            .read(move |conn| {
                conn.immediate_transaction(|conn| {
                    idempotency::insert_letters(conn, &letters, now)?;
                    if let Some((key, status, body)) = &answer {
                        idempotency::finish(conn, key, *status, body)?;
                    }
                    Ok(())
                })
            })
            .await
            .map_err(|e| SinkError(format!("committing the dead letters and the answer: {e}")))
    }

    async fn discard(&self, held: EmbeddedSession, key: Option<&str>) -> Result<(), SinkError> {
        if held.written.is_empty() && key.is_none() {
            return Ok(());
        }
        let (written, key) = (held.written, key.map(str::to_owned));
        self.db
            .read(move |conn| {
                conn.immediate_transaction(|conn| {
                    idempotency::delete_letters(conn, &written)?;
                    if let Some(key) = &key {
                        idempotency::release(conn, key)?;
                    }
                    Ok(())
                })
            })
            .await
            .map_err(|e| SinkError(format!("rolling back the dead letters: {e}")))
    }
}

impl EmbeddedIntake {
    /// Waits (until `deadline`) for the chunk's lines to be stored and reports them; whether to go on.
    /// Waits until the chunk's lines are stored. No deadline once they are in the queue: the queue keeps
    /// them and the writer retries until they commit, so an answer given before that ("not stored")
    /// would be false, and the client's resend would store them twice. Only the queue going away (the
    /// process stopping) ends the wait without them.
    async fn settle(&self, chunk: Waiting, report: &mut (dyn FnMut(u32, Delivery) -> bool + Send)) -> bool {
        let mut stored = self.queue.stored(chunk.partition);
        let delivery = match stored.wait_for(|&s| s > chunk.last).await {
            Ok(_) => Delivery::Queued,
            Err(_) => Delivery::Failed {
                error: "the embedded queue stopped before these lines were stored".into(),
                only_this_line: false,
            },
        };
        let mut going = true;
        for number in chunk.numbers {
            going &= report(number, delivery.clone());
        }
        going
    }
}
