//! `IntakeSink` of the embedded mode: lines into the in-process queue, acknowledged once stored;
//! dead letters and Idempotency-Key answers in SQLite. STUB (helper W fills it).

use std::time::Duration;

use actors::intake::{Claim, DeadLetter, Delivery, IntakeSink, Line, SinkError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// What one body holds between the sink's calls.
#[derive(Default)]
pub struct EmbeddedSession {}

pub struct EmbeddedIntake {}

#[async_trait]
impl IntakeSink for EmbeddedIntake {
    type Held = EmbeddedSession;

    async fn claim(&self, _held: &mut EmbeddedSession, _key: &str, _hash: &[u8]) -> Result<Claim, SinkError> {
        Err(SinkError("not written yet".into()))
    }

    async fn store_dead_letters(&self, _held: &mut EmbeddedSession, _l: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        Err(SinkError("not written yet".into()))
    }

    async fn seal_dead_letters(&self, _held: &mut EmbeddedSession) -> Result<(), SinkError> {
        Err(SinkError("not written yet".into()))
    }

    async fn queue(
        &self,
        _service: Option<&str>,
        lines: &[Line<'_>],
        _received: DateTime<Utc>,
        _timeout: Duration,
        report: &mut (dyn FnMut(u32, Delivery) -> bool + Send),
    ) {
        for line in lines {
            report(line.number, Delivery::Refused("not written yet".into()));
        }
    }

    async fn commit(&self, _held: EmbeddedSession, _answer: Option<(&str, u16, &[u8])>) -> Result<(), SinkError> {
        Err(SinkError("not written yet".into()))
    }

    async fn discard(&self, _held: EmbeddedSession, _key: Option<&str>) -> Result<(), SinkError> {
        Err(SinkError("not written yet".into()))
    }
}
