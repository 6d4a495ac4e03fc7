//! `IntakeSink`: the one port of the intake — the queue the valid lines go to, and the store of dead
//! letters and Idempotency-Key answers.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// One line of a body: its number as the client counts it, and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub number: u32,
    pub bytes: &'a [u8],
}

/// A line that did not resolve, as it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    pub source: &'a str,
    pub reason: &'static str,
    /// `line N: why`.
    pub detail: String,
    /// The whole line: the store keeps what it keeps of it, and its length.
    pub raw: &'a [u8],
}

/// What the queue did with one line. Every line handed to `queue` gets exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Acknowledged: durably queued.
    Queued,
    /// Handed to the queue but not acknowledged. `only_this_line` when the failure is about the line
    /// itself (too large, invalid), not about the queue: the other lines are still worth sending.
    Failed { error: String, only_this_line: bool },
    /// Never handed to the queue, for the reason given (its queue stayed full, it refused the line).
    Refused(String),
    /// Not sent because `report` asked to stop.
    Skipped,
}

/// What a key's record says when a request claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's now.
    Claimed,
    /// An earlier request with the same body finished: its status and body.
    Answered { status: u16, body: Vec<u8> },
    /// An earlier request with the same body has not finished (still running, or interrupted).
    Running { since: DateTime<Utc> },
    /// The key was used with another body.
    OtherBody,
}

/// A store or queue failure, described for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError(pub String);

/// Where the intake's lines go. One body is one session: `Held` is what the store holds open for it
/// between calls (a connection, a transaction), opaque to the use case, and ends with exactly one
/// `commit` or `discard`.
#[async_trait]
pub trait IntakeSink: Send + Sync + 'static {
    type Held: Default + Send;

    /// Claims `key` for a body hashing to `hash`, committed at once so a twin sees it.
    async fn claim(&self, held: &mut Self::Held, key: &str, hash: &[u8]) -> Result<Claim, SinkError>;

    /// Stores dead letters inside the session's transaction (opened by the first call), not yet
    /// committed.
    async fn store_dead_letters(&self, held: &mut Self::Held, letters: &[DeadLetter<'_>]) -> Result<(), SinkError>;

    /// Ends the dead letters of the body: after it succeeds they only wait for the commit.
    async fn seal_dead_letters(&self, held: &mut Self::Held) -> Result<(), SinkError>;

    /// Queues `lines` with the `service` default travelling with each, stamped `received`, waiting at
    /// most `timeout` for room and acknowledgements; calls `report` once per line as its delivery is
    /// known. Once `report` returns false the lines not yet sent are reported `Skipped`.
    async fn queue(
        &self,
        service: Option<&str>,
        lines: &[Line<'_>],
        received: DateTime<Utc>,
        timeout: Duration,
        report: &mut (dyn FnMut(u32, Delivery) -> bool + Send),
    );

    /// Commits the session (its dead letters and, given one, the answer recorded under the key) and
    /// ends it.
    async fn commit(&self, held: Self::Held, answer: Option<(&str, u16, &[u8])>) -> Result<(), SinkError>;

    /// Rolls the session back, releases `key` (its request queued nothing, so a retry runs afresh),
    /// and ends it.
    async fn discard(&self, held: Self::Held, key: Option<&str>) -> Result<(), SinkError>;
}
