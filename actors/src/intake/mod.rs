//! Intake: lines a client sends (POST /ingest today, other push protocols later) checked one by one
//! with the same resolution the consumer uses, the valid ones queued, the others kept as dead letters,
//! and one answer per body — exactly once under an `Idempotency-Key`.
//!
//! The order is what makes a retry safe. The key is claimed (committed) before anything is queued, so a
//! concurrent or later duplicate queues nothing. Then every line is checked and the dead letters are
//! stored inside a transaction the sink leaves open; then the valid lines are queued and awaited; then
//! the answer is recorded under the key in that same transaction and it commits. So:
//! - storing the dead letters fails → nothing was queued: an error, the key is released, a retry
//!   starts afresh (and stores them then);
//! - the queue takes nothing → the dead letters are rolled back (the retry stores them), the key is
//!   released, `QueueDown`;
//! - the queue takes some or all → the dead letters and the answer commit together; a retry with the
//!   key gets that answer.
//!
//! What is left is the commit itself failing after the queue acknowledged: `NotRecorded` says the
//! accepted lines are queued, and the key stays claimed without an answer, so a retry is told the key
//! is in use instead of queueing the lines twice.

mod tally;
#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use slog::{warn, Logger};

use crate::domain::{Fallback, LogEvent, ParseRules};
pub use crate::ports::intake::{Claim, DeadLetter, Delivery, IntakeSink, Line, SinkError};
use tally::Tally;
pub use tally::MAX_LISTED;

/// The status recorded with (and answered for) a body the queue took, in whole or in part.
pub const ACCEPTED_STATUS: u16 = 202;
/// Dead letters handed to the sink at a time: the store streams them, so memory stays bounded
/// whatever the share of bad lines.
const DEAD_LETTER_CHUNK: usize = 1_024;

/// How one body is taken in.
#[derive(Debug, Clone, Copy)]
pub struct IntakeOptions<'a> {
    /// The service of lines that name none (`?service=`), travelling with every queued line.
    pub service: Option<&'a str>,
    /// The `Idempotency-Key` and the hash of the body it is claimed for.
    pub idempotency: Option<(&'a str, &'a [u8])>,
    /// Resolve and answer, store nothing.
    pub dry_run: bool,
    /// The receive time: the time of lines without one, and of every queued message.
    pub received: DateTime<Utc>,
    /// `log_rejects.source` of the dead letters (`http`).
    pub source: &'a str,
}

/// What a body came to. The caller turns it into its protocol's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum IntakeOutcome {
    /// The queue took some or all valid lines (or there were none to take): the answer recorded
    /// under the key, with `ACCEPTED_STATUS`.
    Accepted { body: Vec<u8> },
    /// The answer recorded by an earlier request with the same key and body.
    Replayed { status: u16, body: Vec<u8> },
    /// An earlier request with the same key and body has no answer yet (running, or interrupted).
    KeyInUse { since: DateTime<Utc> },
    /// The key was claimed for another body.
    KeyReused,
    /// The queue took none of the valid lines: nothing was kept, the key is released. The tally
    /// with `error: kafka_unavailable` and a message.
    QueueDown { body: Value },
    /// The lines are queued but the dead letters and the answer could not be stored. The tally with
    /// `error: dead_letters_not_stored` and a message.
    NotRecorded { body: Value },
    /// `dry_run`: each line's resolution.
    DryRun { lines: Vec<Value> },
}

/// A body that came to nothing and may be sent again as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// The key could not be claimed.
    #[error("{0}; send it again")]
    StoreUnavailable(String),
    /// The dead letters could not be stored; nothing was queued and the key is released.
    #[error("the rejected lines could not be stored ({0}); nothing was queued: send the body again")]
    DeadLettersNotStored(String),
}

/// The intake use case over its one port.
pub struct Intake<S> {
    sink: S,
    rules: ParseRules,
    /// How long the queue may take to acknowledge a body's lines.
    queue_timeout: Duration,
}

/// The intake as its callers (the routes) hold it, whichever sink it runs over, so they name no
/// adapter.
#[async_trait::async_trait]
pub trait TakeLines: Send + Sync + 'static {
    /// See `Intake::take`.
    async fn take(
        &self,
        lines: Lines<'_>,
        options: IntakeOptions<'_>,
        log: &Logger,
    ) -> Result<IntakeOutcome, IntakeError>;
}

#[async_trait::async_trait]
impl<S: IntakeSink> TakeLines for Intake<S> {
    async fn take(
        &self,
        lines: Lines<'_>,
        options: IntakeOptions<'_>,
        log: &Logger,
    ) -> Result<IntakeOutcome, IntakeError> {
        Intake::take(self, lines, options, log).await
    }
}

impl<S: IntakeSink> Intake<S> {
    pub fn new(sink: S, rules: ParseRules, queue_timeout: Duration) -> Intake<S> {
        Intake { sink, rules, queue_timeout }
    }

    pub fn rules(&self) -> &ParseRules {
        &self.rules
    }

    /// Takes in the lines of one body (see `Lines`), `log` for what goes wrong
    /// after the answer is decided.
    pub async fn take(
        &self,
        lines: Lines<'_>,
        options: IntakeOptions<'_>,
        log: &Logger,
    ) -> Result<IntakeOutcome, IntakeError> {
        let now = options.received;
        let fallback = Fallback::http(now, options.service);
        if options.dry_run {
            let lines = lines
                .iter()
                .map(|line| match LogEvent::parse(line.bytes, fallback, now, &self.rules) {
                    Ok(event) => json!({ "line": line.number, "event": event.to_json() }),
                    Err(reject) => json!({ "line": line.number, "reject": reject.to_json() }),
                })
                .collect();
            return Ok(IntakeOutcome::DryRun { lines });
        }

        let key = options.idempotency.map(|(key, _)| key);
        let mut held = S::Held::default();
        if let Some((key, hash)) = options.idempotency {
            let claim = self.sink.claim(&mut held, key, hash).await;
            let early = match claim.map_err(|e| IntakeError::StoreUnavailable(e.0))? {
                Claim::Claimed => None,
                Claim::Answered { status, body } => Some(IntakeOutcome::Replayed { status, body }),
                Claim::Running { since } => Some(IntakeOutcome::KeyInUse { since }),
                Claim::OtherBody => Some(IntakeOutcome::KeyReused),
            };
            if let Some(outcome) = early {
                // Nothing is open after a claim that did not claim: the session is only handed back.
                let _ = self.sink.commit(held, None).await;
                return Ok(outcome);
            }
        }

        // Pass 1: check every line; the dead letters go to the store in chunks.
        let mut tally = Tally::default();
        let mut valid = Vec::new();
        let mut letters: Vec<DeadLetter<'_>> = Vec::new();
        let mut stored = Ok(());
        for line in lines.iter() {
            match LogEvent::parse(line.bytes, fallback, now, &self.rules) {
                Ok(_) => valid.push(line),
                Err(reject) => {
                    let reason = reject.reason.code();
                    if stored.is_ok() {
                        letters.push(DeadLetter {
                            source: options.source,
                            reason,
                            detail: format!("line {}: {}", line.number, reject.detail),
                            raw: line.bytes,
                        });
                        if letters.len() == DEAD_LETTER_CHUNK {
                            stored = self.sink.store_dead_letters(&mut held, &letters).await;
                            letters.clear();
                        }
                    }
                    tally.reject(line.number, reason, reject.detail);
                }
            }
            if stored.is_err() {
                break;
            }
        }
        if stored.is_ok() && tally.rejected > 0 {
            if !letters.is_empty() {
                stored = self.sink.store_dead_letters(&mut held, &letters).await;
            }
            if stored.is_ok() {
                stored = self.sink.seal_dead_letters(&mut held).await;
            }
        }
        drop(letters);
        if let Err(e) = stored {
            // Nothing was queued yet: the client sends the body again and the dead letters are stored then.
            if let Err(e) = self.sink.discard(held, key).await {
                warn!(log, "releasing an Idempotency-Key failed: a retry gets 409"; "error" => e.0);
            }
            return Err(IntakeError::DeadLettersNotStored(e.0));
        }

        // Pass 2: the valid lines queued; after the first failure that is not about one line, the rest
        // are not sent.
        let mut report = |line: u32, delivery: Delivery| {
            tally.delivered(line, delivery);
            tally.stopped.is_none()
        };
        self.sink.queue(options.service, &valid, now, self.queue_timeout, &mut report).await;

        if tally.accepted == 0 && !tally.not_queued.is_empty() {
            if let Err(e) = self.sink.discard(held, key).await {
                warn!(log, "rolling back the dead letters of a body the queue did not take failed";
                      "key_released" => false, "error" => e.0);
            }
            let mut body = tally.answer();
            body["error"] = json!("kafka_unavailable");
            body["message"] = json!(format!(
                "the queue did not take any event within {} ms ({}); nothing was accepted: send the body again",
                self.queue_timeout.as_millis(),
                tally.first_queue_error.as_deref().unwrap_or("no acknowledgement")
            ));
            return Ok(IntakeOutcome::QueueDown { body });
        }
        let body = serde_json::to_vec(&tally.answer()).expect("JSON values serialize");
        match self.sink.commit(held, key.map(|key| (key, ACCEPTED_STATUS, &body[..]))).await {
            Ok(()) => Ok(IntakeOutcome::Accepted { body }),
            Err(e) => {
                warn!(log, "dead letters of POST /ingest not stored after the queue took the events";
                      "accepted" => tally.accepted, "rejected" => tally.rejected, "error" => &e.0);
                let mut body = tally.answer();
                body["error"] = json!("dead_letters_not_stored");
                body["message"] = json!(format!(
                    "the {} accepted lines are in the queue (do not send them again), but the {} rejected lines could \
                     not be stored ({}): send only the rejected lines again",
                    tally.accepted, tally.rejected, e.0
                ));
                Ok(IntakeOutcome::NotRecorded { body })
            }
        }
    }
}

/// The lines of one body, numbered as the client counts them, walked without being collected first
/// (a body of millions of tiny lines must not cost a vector of millions of entries).
#[derive(Debug, Clone, Copy)]
pub enum Lines<'a> {
    /// A newline-delimited body: numbered from 1, blank lines left out (but counted).
    Body(&'a [u8]),
    /// Lines already split (one per pushed record), numbered from 1 in order.
    Split(&'a [Vec<u8>]),
}

impl<'a> Lines<'a> {
    pub fn iter(self) -> Box<dyn Iterator<Item = Line<'a>> + Send + 'a> {
        match self {
            Lines::Body(body) => Box::new(
                body.split(|b| *b == b'\n')
                    .enumerate()
                    .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
                    .map(|(i, bytes)| Line { number: i as u32 + 1, bytes }),
            ),
            Lines::Split(lines) => {
                Box::new(lines.iter().enumerate().map(|(i, bytes)| Line { number: i as u32 + 1, bytes }))
            }
        }
    }
}

/// The numbered lines of a newline-delimited body (numbered from 1), blank ones left out.
pub fn lines_of(body: &[u8]) -> Vec<Line<'_>> {
    Lines::Body(body).iter().collect()
}
